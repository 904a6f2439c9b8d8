"""The per-agency token bucket, on a clock the test moves."""

from __future__ import annotations

import pytest

from docbus.errors import RateLimited
from docbus.rate_limit import AgencyRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_and_agencies_apart() -> None:
    clock = Clock()
    limiter = AgencyRateLimiter(2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("A")
    with pytest.raises(RateLimited) as refused:
        limiter.take("A")
    assert refused.value.retry_after == pytest.approx(0.5)
    assert refused.value.status == 429 and refused.value.slug == "rate-limited"
    limiter.take("B")  # another agency has its own bucket
    clock.now += 0.5
    limiter.take("A")  # one token came back
    with pytest.raises(RateLimited):
        limiter.take("A")
    clock.now += 60
    for _ in range(3):  # saved up to the burst, no more
        limiter.take("A")
    with pytest.raises(RateLimited):
        limiter.take("A")


def test_refused_attempts_do_not_push_the_next_token_back() -> None:
    clock = Clock()
    limiter = AgencyRateLimiter(1.0, burst=1, clock=clock)
    limiter.take("A")
    for step in (0.2, 0.2, 0.2):
        clock.now += step
        with pytest.raises(RateLimited) as refused:
            limiter.take("A")
    assert refused.value.retry_after == pytest.approx(0.4)
    clock.now += 0.4
    limiter.take("A")


def test_the_default_burst_is_one_seconds_worth_and_bad_settings_are_refused() -> None:
    assert AgencyRateLimiter(20).burst == 20
    assert AgencyRateLimiter(0.5).burst == 1
    with pytest.raises(ValueError, match="rate"):
        AgencyRateLimiter(0)
    with pytest.raises(ValueError, match="burst"):
        AgencyRateLimiter(1, burst=0)
