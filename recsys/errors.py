"""The one exception type for user errors.

Steps catch it and turn it into a one-line message and a non-zero exit; anything else is a bug and
keeps its traceback.
"""


class RecsysError(Exception):
    """A problem with what the user asked for, with the fix in the message."""
