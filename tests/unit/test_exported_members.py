"""The public surface of `aviary` is exactly what `__all__` says."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import aviary


def test_all_names_exist_and_nothing_else_is_public() -> None:
    public = {name for name in dir(aviary) if not name.startswith("_")}
    assert set(aviary.__all__) == {"__version__"}
    assert public <= {"cli"}  # submodules appear once imported elsewhere in the session
    for name in aviary.__all__:
        assert hasattr(aviary, name)


def test_version_comes_from_the_distribution_metadata() -> None:
    assert aviary.__version__ == version("aviary-asr")


def test_package_ships_py_typed() -> None:
    assert (Path(aviary.__file__).parent / "py.typed").is_file()
