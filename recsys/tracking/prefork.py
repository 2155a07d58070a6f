"""Steps started as forks of one interpreter that has already imported what they import.

`main` runs its steps as child processes, each an MLflow run of its own; with `--env-manager local`
each would pay its own start-up (Python, MLflow, pandas, torch, Lightning: 3-5 s a step on two CPU
cores), three or more times for one quickstart. Instead, as the first step starts, Python's forkserver
(multiprocessing) is asked for a server process that imports PRELOAD once, while that step runs; every
step that imports torch (FORKED) is then forked from it: its own process, its own run, its environment and working directory as MLflow's
local backend would give them, its exit status and signals as a command's. The server never touches the
tracking store (it only imports), so no connection is shared across a fork. Any other command is
left to MLflow (returns None)."""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import runpy
import shlex
import signal
import sys
import time

from recsys import interrupts, processes

FORKED = ("steps.train", "steps.evaluate", "steps.blend")  # the steps that import torch (prepare imports
# MLflow and pandas only: it starts as a command, while the server imports the rest)
PRELOAD = ["mlflow", "pandas", "pyarrow", "torch", "pytorch_lightning", "matplotlib.pyplot", "recsys.tracking",
           "recsys.training", "recsys.evaluation", "recsys.plots", "recsys.data.prepare", "steps",
           "recsys.tracking.preloaded"]  # last: caches every forked step would otherwise fill for itself
_context = None


def warm() -> None:
    """Start the server now (its imports run while the caller goes on)."""
    global _context
    if _context is None:
        os.environ.setdefault("MPLBACKEND", "Agg")  # the server imports pyplot: never a display
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        from multiprocessing import forkserver

        forkserver.ensure_running()
        atexit.register(shutdown)


def shutdown() -> None:
    """The server goes with the process that started it (main, when it ends or is stopped): it holds no
    state, and a step forked from it that is still running stops when it is gone (its launcher watch)."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if _context is not None and pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)  # its default action: it installs no handler of its own for it


def _step(module: str, argv: list[str], env: dict[str, str], cwd: str) -> None:
    """In the forked process: become the command `python -m <module> <argv>` started in `cwd` with `env`."""
    interrupts.defer()  # what `steps/__init__` does first in a step started as a command (imported here already)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # its parent is the server, which stands where `main` stands for a step it started itself (and goes when
    # main goes): the launcher the step watches, read at import in the server, is read again here; main
    # (that launched it) is watched too, so the step stops if main is killed outright (SIGKILL)
    interrupts.LAUNCHER = os.getppid()
    interrupts.LAUNCHERS = interrupts._launchers()
    interrupts.WATCH = [int(env[interrupts.LAUNCHER_ENV])] if env.get(interrupts.LAUNCHER_ENV, "").isdigit() else []
    os.environ[interrupts.LAUNCHER_ENV] = str(os.getppid())
    if env.get("OMP_NUM_THREADS"):  # torch read its thread count when the server imported it
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = [module, *argv]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    finally:
        atexit._run_exitfuncs()  # what the interpreter does at exit (a forked process leaves by os._exit)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    os._exit(code)


class Forked:
    """A forked step as subprocess.Popen shows a command: pid, poll, wait, returncode, send_signal."""

    def __init__(self, process):
        self.process, self.pid, self.returncode = process, process.pid, None

    def poll(self) -> int | None:
        # the server reports the exit status; a server that is gone reports 255 for a step still running,
        # which counts as running until its process has ended
        if self.returncode is None and not self.process.is_alive() and not processes.alive(self.pid):
            self.returncode = self.process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.process.join(timeout)
        while self.poll() is None and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(command: str, cwd: str, env: dict[str, str]) -> Forked | None:
    """The command forked from the server, or None where it is not one of this project's steps."""
    args = shlex.split(command)
    if len(args) < 3 or args[0] != "python" or args[1] != "-m" or args[2] not in FORKED:
        return None
    warm()
    process = _context.Process(target=_step, args=(args[2], args[3:], env, cwd), name=args[2])
    process.start()
    return Forked(process)
