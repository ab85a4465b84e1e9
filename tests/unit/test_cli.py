"""The `aviary` command line, in-process and as the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import aviary
from aviary.cli import build_parser, main, settings_from


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"aviary {aviary.__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: aviary" in capsys.readouterr().out


def test_serve_flags_and_the_seeds_variables_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "canary")
    monkeypatch.setenv("PORT", "9123")
    settings = settings_from(build_parser().parse_args(["serve"]))
    assert (settings.model, settings.host, settings.port) == ("canary", "127.0.0.1", 9123)
    monkeypatch.setenv("AVIARY_MODEL", "parakeet-tdt-0.6b-v3")  # Aviary's own variables win over the seed's
    monkeypatch.setenv("AVIARY_PORT", "9124")
    settings = settings_from(build_parser().parse_args(["serve"]))
    assert (settings.model, settings.port) == ("parakeet-tdt-0.6b-v3", 9124)
    flags = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "8001", "--model", "./m"])  # noqa: S104
    settings = settings_from(flags)
    assert (settings.model, settings.host, settings.port) == ("./m", "0.0.0.0", 8001)  # noqa: S104


def test_variables_without_the_prefix_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """`MODEL`, `CHUNK_SECONDS`: other tools' variables, which must not configure Aviary (only the seed's two do)."""
    for name in ("AVIARY_MODEL", "MODEL_NAME", "AVIARY_CHUNK_SECONDS", "AVIARY_JOB_CHUNK_SECONDS", "AVIARY_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL", "gpt-4o")
    monkeypatch.setenv("CHUNK_SECONDS", "7")
    monkeypatch.setenv("PORT", "9125")
    settings = settings_from(build_parser().parse_args(["serve"]))
    assert (settings.model, settings.chunk_seconds, settings.port) == ("parakeet-tdt-0.6b-v2", 30.0, 9125)


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bogus"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_and_module_entry_point_are_installed() -> None:
    script = Path(sys.executable).with_name("aviary")
    for cmd in ([str(script), "--version"], [sys.executable, "-m", "aviary", "--version"]):
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
        assert done.stdout.strip() == f"aviary {aviary.__version__}"


@pytest.mark.parametrize("action", ["list", "pull"])
def test_models_commands_take_only_the_flags_that_choose_files(action: str) -> None:
    names = ["canary"] if action == "pull" else []
    chosen = build_parser().parse_args(["models", action, *names, "--engine", "nemo", "--quantization", "int8"])
    assert (chosen.engine, chosen.quantization) == ("nemo", "int8")
    for flag in (["--device", "cpu"], ["--threads", "2"], ["--model", "canary"]):  # they would do nothing here
        with pytest.raises(SystemExit) as refused:
            build_parser().parse_args(["models", action, *names, *flag])
        assert refused.value.code == 2
