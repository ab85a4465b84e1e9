"""The reaper's heartbeats on SQLite: two live processes under one executor id are told apart from a restart."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aviary.jobs.reaper import Reaper
from aviary.jobs.store import JobStore

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def _reaper(store: JobStore, executor: str) -> Reaper:
    return Reaper(store.engine, executor, lambda _: None, heartbeat_seconds=1, timeout_seconds=5)


def test_two_live_processes_with_one_executor_id_are_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    first, second, elsewhere = _reaper(store, "host"), _reaper(store, "host"), _reaper(store, "other-host")
    with caplog.at_level(logging.ERROR, logger="aviary.jobs.reaper"):
        for _ in range(3):
            for reaper in (first, second, elsewhere):
                reaper.beat()
                time.sleep(0.01)  # SQLite's clock counts milliseconds
    assert first.twins == {second.instance}
    assert second.twins == {first.instance}
    assert elsewhere.twins == set()
    assert caplog.text.count("another live process runs as executor host") == 2  # once for each of them
    store.close()


def test_a_restart_under_the_same_executor_id_is_not_a_twin(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    crashed = _reaper(store, "host")
    crashed.beat()  # then the process dies without stopping: its row stays
    restarted = _reaper(store, "host")
    stopped = _reaper(store, "host")
    stopped.beat()
    stopped.stop()  # a graceful stop removes its row
    with caplog.at_level(logging.ERROR, logger="aviary.jobs.reaper"):
        for _ in range(3):
            restarted.beat()
            time.sleep(0.01)
    assert restarted.twins == set()
    assert "another live process" not in caplog.text
    store.close()
