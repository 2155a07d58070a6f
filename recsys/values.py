"""Values a person types (a `-P` parameter, a request field), parsed by one rule each: every step,
`recommend` and the served model ask here, so `3.0` means the same everywhere."""

from __future__ import annotations

import numbers

from recsys.errors import RecsysError


def _wanted(name: str, value, minimum: int, maximum: int | None) -> RecsysError:
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    upper = f" and <= {maximum:,}" if maximum is not None else ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)  # 0.0 as the person sent it: MLflow hands a JSON 0 over as a double
    return RecsysError(f"{name}={value!r} must be {what}{upper}")


def integer(name: str, value, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer (`3`, "3", `3.0`, "3.0") within [minimum, maximum]; a bool, a fraction, text or NaN is
    refused in one line."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise _wanted(name, value, minimum, maximum)
    if isinstance(value, numbers.Integral) or (isinstance(value, str) and value.strip().lstrip("+-").isdigit()):
        number = int(value)  # exactly: a float holds integers only up to 2^53 (a seed of 2^53 + 1 stays itself)
    else:
        try:
            number = float(str(value).strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError, OverflowError):
            raise _wanted(name, value, minimum, maximum) from None
        if not number.is_integer():
            raise _wanted(name, value, minimum, maximum)
    if number < minimum or (maximum is not None and number > maximum):
        raise _wanted(name, value, minimum, maximum)
    return int(number)


def integers(name: str, text, minimum: int = 1) -> list[int]:
    """Integers separated by commas ("5,10,20"), each by `integer`'s rule: sorted, without repeats."""
    parts = [x for x in str(text).split(",") if x.strip()]
    try:
        values = [integer(name, x, minimum) for x in parts]
    except RecsysError:
        values = []
    if not values:
        what = "positive integers" if minimum == 1 else f"integers >= {minimum}"
        raise RecsysError(f"{name}={text!r} must be {what} separated by commas, e.g. 5,10,20")
    return sorted(set(values))
