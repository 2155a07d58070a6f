"""SIGINT and SIGTERM, in one module: every signal handler of the project is installed here.

- `defer()`: from a step's first import until its run exists, a signal is remembered (`pending()`), so the
  run still ends KILLED with its `error` tag instead of a KeyboardInterrupt traceback;
- `step(...)`: while a step's run is open, a signal raises `Interrupted` (Lightning would turn SIGTERM
  into a clean exit), a watcher stops the step when the process that launched it is gone, and
  `wind_down` starts the guard (recsys/tracking/guard.py, a program of its own) that leaves the run
  KILLED whatever happens next, plus a timer that ends a step whose store hangs;
- `Sweep`: inside a tune trial a signal interrupts it at its next safe point (a batch's end); between
  trials it only stops the sweep;
- `worker()`: a process a multi-process strategy started has no run and stops at once.

Which processes are alive, and stopping a tree of them: recsys/processes.py.

No MLflow here (it is imported after `defer()` must already hold): the guard is given the tracking URI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from recsys.errors import Interrupted
from recsys.processes import alive

SIGNALS = (signal.SIGINT, signal.SIGTERM)
ROOT = Path(__file__).resolve().parents[1]  # the project root: where the guard runs from
_PENDING: list[int] = []  # signals that came before a step's run existed (while it was importing)
_STEP: dict = {}  # the running step: name, run id, launcher, tracking URI, checkpoint, wind-down seconds


_REQUESTED: list[int] = []  # an interrupt a tune trial raises at its next safe point
_SHIELD: dict = {"depth": 0, "held": None}  # the main thread's open store operations; a signal held until they end


def safe_point() -> None:
    """Where a trial may stop (between training and validation batches: no store operation is open):
    raise the interrupt that came since, if one did."""
    if _REQUESTED:
        raise Interrupted(_REQUESTED[0])


def defer() -> None:
    """Until a step's run exists, SIGINT and SIGTERM are remembered, not raised."""
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, frame: _PENDING.append(signum))


def pending() -> int | None:
    return _PENDING[0] if _PENDING else None


def handlers() -> dict:
    return {sig: signal.getsignal(sig) for sig in SIGNALS}


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def ignore() -> None:
    """While a step winds down after an interrupt, a second Ctrl-C must not cut its bookkeeping short."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def worker() -> None:
    """A worker process of a multi-process strategy: no run to end KILLED, so a signal stops it at once,
    as rank 0's teardown expects."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def message(signum: int) -> str:
    """The one line (and `error` tag) of an interrupted step; train's offers the resume once it can."""
    msg = f"interrupted by {signal.Signals(signum).name}; what was logged is kept"
    if _STEP.get("name") != "train":
        return msg
    checkpoint = _STEP.get("checkpoint")
    if checkpoint is not None and Path(checkpoint).exists():
        return msg + f" (continue with -P resume_from={_STEP['run_id']})"
    return msg + " (before its first epoch ended: there is no checkpoint to resume from; train again)"


def resume_point(checkpoint: Path) -> None:
    """Where the running train step writes the checkpoint an interrupted run is resumed from: the
    interrupt's message offers `resume_from` only once that file exists."""
    _STEP["checkpoint"] = checkpoint


LAUNCHER_ENV = "RECSYS_LAUNCHER"  # the pid of the recsys step (main) that started this one directly (no `mlflow run`)
LAUNCHER = os.getppid()  # the process that started this one (read at import, before it can be gone)


def _launchers() -> list[int]:
    """The process that started this one and, when that is the shell `mlflow run` starts a command in
    (`bash -c`), the `mlflow run` above it: what writes the run's status once this step has exited."""
    out = [LAUNCHER]
    try:
        with open(f"/proc/{LAUNCHER}/stat") as f:
            name, rest = f.read().rsplit(")", 1)
        if name.rsplit("(", 1)[-1] in ("bash", "sh", "dash"):
            out.append(int(rest.split()[1]))
    except (OSError, ValueError, IndexError):
        pass
    return out


LAUNCHERS = _launchers()
WATCH: list[int] = []  # other processes whose end stops the step as its launcher's does (a forked step: main)


@contextlib.contextmanager
def step(name: str, run_id: str, launched: bool, tracking_uri: str, wind_down_s: float = 60.0):
    """While a step's run is open: signals raise `Interrupted`; the step stops when its launcher goes.
    `launched`: the launcher (`mlflow run`, or main) created the run, so the guard waits for it too."""
    _STEP.clear()
    _STEP.update(name=name, run_id=run_id, launcher=LAUNCHER if launched else None, tracking_uri=tracking_uri,
                 wind_down_s=wind_down_s)
    _SHIELD["held"] = None

    fired: list[int] = []

    def handler(signum, frame):
        # once per step: the second signal of one interrupt (`mlflow run` sends SIGTERM after a Ctrl-C) must
        # not raise inside the first one's wind-down (before its guard has started) or its bookkeeping
        if fired:
            return
        fired.append(signum)
        wind_down(signum)
        if _SHIELD["depth"]:  # inside a store operation: raised the moment it ends (`shielded`)
            _SHIELD["held"] = signum
            return
        raise Interrupted(signum)

    for sig in SIGNALS:
        signal.signal(sig, handler)
    stop = threading.Event()
    threading.Thread(target=_watch_launcher, args=(stop,), daemon=True).start()
    try:
        if pending() is not None:  # it came while the step was importing
            raise Interrupted(pending())
        yield
    except Interrupted as e:
        ignore()  # from here on the step only records how it ended
        wind_down(e.signum)  # when it came another way than through the handler (while importing, from tune)
        e.message = _STEP["message"]
        raise
    finally:  # the caller (tracking.step_run) puts its own handlers back once the run's end is recorded
        stop.set()
        _STEP.clear()


@contextlib.contextmanager
def shielded():
    """A store operation (one SQL session of the tracking store, tracking/mlflow_internals.py): a signal that
    reaches the main thread inside it is raised when it ends, never in its middle. A session cut there
    keeps its connection, and with it the database's lock, until the process exits: every write after it
    (this step's own end, its guard's, `mlflow run`'s) then waits on "database is locked"."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    _SHIELD["depth"] += 1
    try:
        yield
    finally:
        _SHIELD["depth"] -= 1
        if not _SHIELD["depth"] and _SHIELD["held"] is not None:
            signum, _SHIELD["held"] = _SHIELD["held"], None
            raise Interrupted(signum)


def wind_down(signum: int) -> None:
    """Once per step, when an interrupt arrives: start the guard that leaves its run KILLED whatever
    happens next, and a timer that ends the process if recording the interrupt hangs (a stuck store, a
    library's teardown)."""
    if not _STEP or _STEP.get("winding_down"):
        return
    _STEP["winding_down"] = signum
    # said as things stand now: by the time the run's end is recorded, the step's temporary folder
    # (train's checkpoints) is gone
    _STEP["message"] = message(signum)
    _start_guard(_STEP["run_id"], _STEP["message"], _STEP["launcher"], _STEP["tracking_uri"])
    timer = threading.Timer(_STEP["wind_down_s"], exit_now, (128 + signum,))
    timer.daemon = True
    timer.start()


def exit_now(code: int) -> None:
    """Leave at once once an interrupt is recorded: no library's exit hook or lingering thread can keep
    an interrupted step alive (everything it promised is written; temporary folders are already gone)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _watch_launcher(stop: threading.Event, every_s: float = 0.5) -> None:
    """A step never outlives the command that started it: when its parent process is gone (SIGTERM to
    `mlflow run` ends it at once, without passing the signal on), the step stops as if interrupted."""
    while not stop.wait(every_s):
        if os.getppid() != LAUNCHER or not all(alive(p) for p in WATCH):
            wind_down(signal.SIGTERM)  # from here too: the main thread may be stuck outside Python
            os.kill(os.getpid(), signal.SIGTERM)
            return


# The guard must never be stopped by the signal that stops the step's process tree (or main's
# processes.stop_trees sweeping its child's descendants, which spares it): it is started with SIGINT
# and SIGTERM blocked (a signal mask survives fork and exec), its first statement ignores both
# (discarding any that came meanwhile), then unblocks them. Not a preexec_fn: forking a threaded process
# (the step's launcher watcher, Lightning, torch) into Python code can deadlock the child before it ever
# execs.
GUARD = ("import signal; s = (signal.SIGINT, signal.SIGTERM); [signal.signal(x, signal.SIG_IGN) for x in s]; "
         "signal.pthread_sigmask(signal.SIG_UNBLOCK, s); "
         "import runpy; runpy.run_module('recsys.tracking.guard', run_name='__main__', alter_sys=True)")


def _start_guard(run_id: str, msg: str, launcher: int | None, tracking_uri: str) -> None:
    """The detached guard (recsys/tracking/guard.py) gets only the tracking settings of the environment."""
    keep = ("PATH", "HOME", "PYTHONPATH", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
    env = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "AWS_", "AZURE_", "GOOGLE_")) or k in keep}
    env.pop("MLFLOW_RUN_ID", None)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    pids = [os.getpid()] + ([p for p in LAUNCHERS if alive(p)] if launcher else [])  # launchers still there
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # the child starts with them blocked
    try:
        subprocess.Popen([sys.executable, "-c", GUARD, run_id, msg[:5000], *map(str, pids)],
                         env=env, cwd=ROOT, start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class Sweep:
    """Signals during a tune sweep: inside a trial they interrupt it (the sweep records it FAIL); during the
    study's bookkeeping between trials they only stop the sweep before the next one, so its storage is
    never left half-written. `signum` says which signal came, if any; the step winds down either way."""

    def __init__(self):
        self.in_trial, self.signum = False, None

    def _handle(self, signum, frame):
        self.signum = signum
        wind_down(signum)  # the step's run ends KILLED whatever happens next
        if self.in_trial:  # raised at the trial's next safe point (`safe_point`), never inside a store write:
            _REQUESTED.append(signum)  # an SQLite session cut mid-query keeps its lock, and every write after
            # it in this process and the guard's would wait on "database is locked"

    @contextlib.contextmanager
    def trial(self):
        self.in_trial = True
        try:
            yield
            safe_point()  # one that came after the trial's last safe point
        finally:
            self.in_trial = False

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        return False
