"""A token bucket per agency in front of intake: one agency's runaway system cannot take the gateway from the rest.

A one-stop system with a retry loop gone wrong, or a migration script posting years of dossiers at once, would
otherwise hold every gateway core on validation and every group commit on its messages while other agencies'
submissions wait. With ``DOCBUS_INTAKE_RATE_PER_AGENCY`` set, each credential may submit (``POST /v1/messages``
and ``POST /v1/validate``) that many messages a second on average, in bursts of up to
``DOCBUS_INTAKE_BURST_PER_AGENCY``; past that the gateway answers 429 ``rate-limited`` with ``Retry-After`` before
it reads the body, so a refused request costs a dictionary lookup.

Buckets live in each gateway process: behind a load balancer spreading over N processes an agency may reach up to N
times the rate. That is the price of keeping the database out of every request's path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from docbus.errors import RateLimited


class AgencyRateLimiter:
    """Token buckets by organ id: ``rate`` tokens a second, at most ``burst`` saved up; one per submission."""

    def __init__(self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate)))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # organ id -> (tokens, when counted)

    def take(self, organ_id: str) -> None:
        """Spend one token of ``organ_id``'s bucket, or raise :class:`RateLimited` saying when one will be there."""
        now = self._clock()
        tokens, counted = self._buckets.get(organ_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - counted) * self.rate)
        if tokens < 1:
            self._buckets[organ_id] = (tokens, now)
            wait = (1 - tokens) / self.rate
            raise RateLimited(
                f"{organ_id} may submit {self.rate:g} messages a second (bursts of {self.burst:g}); "
                f"try again in {wait:.2f} s",
                retry_after=wait,
            )
        self._buckets[organ_id] = (tokens - 1, now)
