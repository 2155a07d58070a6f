"""What a person reads on a run of hours: durations at a glance, and a line every so often with the time
left (epoch lines, long rankings), on stdout as the epoch lines are, so a terminal and a log file alike
show a slow run apart from a stuck one."""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """12s, 4m 05s, 3h 07m: what a person reads at a glance."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class Ticker:
    """`tick(done)` prints `<what>: done/total <unit>, <elapsed>, about <left> left` at most every
    `every` seconds (nothing for work that ends sooner)."""

    def __init__(self, what: str, total: int, unit: str, every: float = 30.0):
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.start = self.last = time.monotonic()

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every or not done:
            return
        self.last = now
        spent = now - self.start
        print(f"{self.what}: {done:,}/{self.total:,} {self.unit}, {duration(spent)}, about "
              f"{duration(spent * (self.total - done) / done)} left", flush=True)
