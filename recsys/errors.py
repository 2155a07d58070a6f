"""The one exception type for user errors.

Steps catch it and turn it into a one-line message and a non-zero exit; anything else is a bug and
keeps its traceback.
"""


class RecsysError(Exception):
    """A problem with what the user asked for, with the fix in the message."""


_PENDING: list[int] = []  # signals that came before a step's run existed (while it was importing)


def defer_interrupts() -> None:
    """Until a step's run exists, SIGINT and SIGTERM are remembered, not raised: the run then ends
    KILLED with its `error` tag instead of a KeyboardInterrupt traceback and a nameless FAILED run."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: _PENDING.append(signum))


def pending_interrupt() -> int | None:
    return _PENDING[0] if _PENDING else None


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached a step: it stops, keeps what it logged, marks its run KILLED and exits
    128 + the signal's number. A BaseException, so no `except Exception` (Lightning's included) eats it."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(signal.Signals(signum).name)
