"""Processes as Linux /proc shows them: whether one is alive, what a process started, and stopping a
child step with everything it started (main's children; recsys/interrupts.py's launcher watch and the
guard read `alive`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


def _is_guard(pid: int) -> bool:
    """The guard an interrupted step started (recsys/interrupts.py): it must outlive the step's tree."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"recsys.tracking.guard" in f.read()
    except OSError:
        return False


def descendants(pids: list[int]) -> list[int]:
    """The living child processes of `pids` and theirs (one pass over Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[-1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(pids)
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def stop_trees(procs: list[subprocess.Popen], grace_s: float = 30) -> None:
    """SIGTERM to the child processes still running and to everything they started; wait until all of
    them are gone (SIGKILL after `grace_s`): a step inside gets the time to mark its own run KILLED."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        running = [proc.pid for proc in procs if proc.poll() is None]
        tree = [p for p in running + descendants(running) if not _is_guard(p)]  # a guard outlives its step
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for proc in procs:
                proc.poll()  # reap it, or it lingers as a zombie
            if not [p for p in tree if alive(p)]:
                return
            time.sleep(0.05)


def alive(pid: int) -> bool:
    """A zombie (exited, not yet reaped by its parent) is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False
