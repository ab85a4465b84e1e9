"""Settings whose defaults depend on other settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from aviary.config import Settings

if TYPE_CHECKING:
    from pathlib import Path


def test_job_polling_is_slow_on_sqlite_and_fast_where_dbos_backs_off_between_workers(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).job_poll() == 0.25
    postgres = "postgresql://aviary@db.internal:5432/aviary"
    assert Settings(database_url=postgres).job_poll() == 0.02
    assert Settings(database_url=postgres, job_poll_seconds=1.5).job_poll() == 1.5


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_infinite_or_nan_caps_and_intervals_are_refused_at_start(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AVIARY_BATCH_MAX_SECONDS", "AVIARY_DECODE_TIMEOUT", "AVIARY_MAX_AUDIO_SECONDS"):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError, match="finite number"):
            Settings()
        monkeypatch.delenv(name)


def test_api_keys_that_are_set_but_hold_no_key_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIARY_API_KEYS", " , ")
    with pytest.raises(ValidationError, match="holds separators but no key"):
        Settings()
    for unset in ("", "  "):
        monkeypatch.setenv("AVIARY_API_KEYS", unset)
        assert Settings().api_keys == []
    monkeypatch.setenv("AVIARY_API_KEYS", "a, ,b")
    assert [k.get_secret_value() for k in Settings().api_keys] == ["a", "b"]


def test_a_postgres_url_is_a_postgresql_url() -> None:
    url = Settings(database_url="postgres://u:p@db:5432/aviary").jobs_database_url()
    assert url == "postgresql://u:p@db:5432/aviary"
