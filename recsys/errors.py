"""The one exception type for user errors.

Steps catch it and turn it into a one-line message and a non-zero exit; anything else is a bug and
keeps its traceback.
"""


class RecsysError(Exception):
    """A problem with what the user asked for, with the fix in the message."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached a step: it stops, keeps what it logged, marks its run KILLED and exits
    128 + the signal's number. A BaseException, so no `except Exception` (Lightning's included) eats it."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.message = f"interrupted by {signal.Signals(signum).name}"  # the step's line (recsys.interrupts)
        super().__init__(signal.Signals(signum).name)
