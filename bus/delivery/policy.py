"""When to try again, and when to stop trying for a while.

``RetryPolicy``: exponential backoff with full jitter (spreads retries of many messages so a recovering axis is
not hit by all of them at once), bounded by a number of attempts and by the age of the message.

``CircuitBreaker``: after ``failure_threshold`` consecutive failures a destination is considered down for
``reset_seconds``; the destination's consumer waits instead of spending every message's attempts on it, then
lets one delivery through (half-open) to probe. Each destination has its own, so one that is down never slows
another.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_delay_seconds: float = Field(default=0.5, gt=0)
    max_delay_seconds: float = Field(default=60.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_attempts: int = Field(default=8, ge=1)
    max_age_seconds: float = Field(default=24 * 3600, gt=0)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): full jitter over the cap."""
        cap = min(self.max_delay_seconds, self.base_delay_seconds * self.multiplier ** (attempt - 1))
        return (rng or random).uniform(cap / 2, cap)

    def gives_up(self, attempt: int, age_seconds: float) -> bool:
        return attempt >= self.max_attempts or age_seconds >= self.max_age_seconds


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    reset_seconds: float = 5.0
    clock: object = field(default=time.monotonic, repr=False)
    failures: int = 0
    opened_at: float | None = None

    def _now(self) -> float:
        now = self.clock()  # type: ignore[operator]
        assert isinstance(now, float)
        return now

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._now() - self.opened_at >= self.reset_seconds else "open"

    def wait_seconds(self) -> float:
        """How long to hold deliveries back now (0 when closed or half-open)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_seconds - (self._now() - self.opened_at))

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.opened_at = self._now()
