"""DBOS's log records as Aviary passes them on: a database outage is a few lines, not thousands."""

from __future__ import annotations

import logging

from aviary.jobs import Repeats


def _warning(message: str) -> logging.LogRecord:
    return logging.LogRecord("dbos", logging.WARNING, __file__, 1, message, (), None)


def test_an_outage_s_repeated_warnings_pass_once_per_interval_and_count_the_rest() -> None:
    now = [0.0]
    repeats = Repeats(every=30.0, clock=lambda: now[0])
    reload = "Exception reloading queue aviary-jobs from database: connection refused"
    passed = []
    for _ in range(1500):  # 30 s of a queue thread polling every 20 ms
        record = _warning(reload)
        if repeats.filter(record):
            passed.append(record.getMessage())
        now[0] += 0.02
    assert passed == [reload]
    other = _warning("Exception listing queues: connection refused")
    assert repeats.filter(other)  # another kind has its own interval
    now[0] = 30.0
    later = _warning(reload)
    assert repeats.filter(later)
    assert later.getMessage() == f"{reload} (1499 more like it in the last 30 s)"
    assert repeats.filter(_warning("Queue aviary-jobs no longer exists"))  # not an outage's kind: untouched
    error = logging.LogRecord("dbos", logging.ERROR, __file__, 1, reload, (), None)
    assert repeats.filter(error)  # errors always pass
