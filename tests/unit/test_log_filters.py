"""``docbus.log_filters.Repeats``: aiokafka's repeated complaints pass once per interval, with a count of those
left out; every other record passes untouched."""

from __future__ import annotations

import logging

from docbus.log_filters import Repeats


def record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_pass_once_per_interval_with_the_count_left_out() -> None:
    now = [0.0]
    repeats = Repeats(interval=60, clock=lambda: now[0])
    unable = "Unable connect to %r: %s"
    assert repeats.filter(record("aiokafka", logging.ERROR, unable, "b1", "refused"))
    passed = []
    for second in range(1, 120):
        now[0] = float(second)
        line = record("aiokafka", logging.ERROR, unable, f"b{second % 3}", "SaslAuthenticationFailed")
        if repeats.filter(line):
            passed.append((second, line.getMessage()))
    assert [second for second, _ in passed] == [60]
    assert passed[0][1].endswith("[and 59 more like it in the last 60 s, not shown]")
    assert passed[0][1].startswith("Unable connect to 'b0': SaslAuthenticationFailed")


def test_other_kinds_loggers_and_levels_pass() -> None:
    repeats = Repeats(interval=60, clock=lambda: 0.0)
    assert repeats.filter(record("aiokafka.conn", logging.ERROR, "first kind"))
    assert repeats.filter(record("aiokafka.conn", logging.ERROR, "second kind"))
    assert not repeats.filter(record("aiokafka.conn", logging.ERROR, "first kind"))
    assert repeats.filter(record("aiokafka.cluster", logging.ERROR, "first kind"))  # another logger
    assert repeats.filter(record("aiokafka.conn", logging.WARNING, "first kind"))  # another level
    for _ in range(3):
        assert repeats.filter(record("aiokafka.conn", logging.INFO, "chatter"))  # below WARNING: untouched
        assert repeats.filter(record("docbus.relay", logging.ERROR, "ours"))  # docbus' own: untouched
        assert repeats.filter(record("aiokafkax", logging.ERROR, "not aiokafka"))
