"""The `aviary` command line, in-process and as the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import aviary
from aviary.cli import main


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"aviary {aviary.__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: aviary" in capsys.readouterr().out


def test_serve_placeholder_names_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve"]) == 0
    assert aviary.__version__ in capsys.readouterr().out


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
