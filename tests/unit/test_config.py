"""Settings whose defaults depend on other settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aviary.config import Settings

if TYPE_CHECKING:
    from pathlib import Path


def test_job_polling_is_slow_on_sqlite_and_fast_where_dbos_backs_off_between_workers(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).job_poll() == 0.25
    postgres = "postgresql://aviary@db.internal:5432/aviary"
    assert Settings(database_url=postgres).job_poll() == 0.02
    assert Settings(database_url=postgres, job_poll_seconds=1.5).job_poll() == 1.5
