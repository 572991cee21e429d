"""Backpressure: workers pause taking tasks while the trainer lags (``AlignedStream.lag``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol


class Lagging(Protocol):
    """What backpressure reads: the trainer lag (``AlignedStream``)."""

    def lag(self) -> int: ...


def hysteresis(lag: int, high_water: int, low_water: int, paused: bool) -> bool:
    """Whether to pause: start when ``lag > high_water``, stay until ``lag <= low_water``."""
    if not 0 <= low_water <= high_water:
        raise ValueError(f"need 0 <= low_water <= high_water, got {low_water}, {high_water}")
    return lag > low_water if paused else lag > high_water


@dataclass
class Backpressure:
    """Pause taking tasks while the trainer lags: hysteresis state for one worker.

    ``check()`` reads the lag of ``stream`` at most every ``interval_s`` seconds.
    """

    stream: Lagging
    high_water: int
    low_water: int
    interval_s: float = 1.0
    paused: bool = False
    lag: int = 0
    _checked: float = field(default=float("-inf"), repr=False)

    def __post_init__(self) -> None:
        hysteresis(0, self.high_water, self.low_water, False)  # validates the marks

    def check(self) -> bool:
        """True while the worker should not claim tasks."""
        now = time.monotonic()
        if now - self._checked >= self.interval_s:
            self._checked = now
            self.lag = self.stream.lag()
            self.paused = hysteresis(self.lag, self.high_water, self.low_water, self.paused)
        return self.paused
