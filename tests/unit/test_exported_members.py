"""The public surface of `aviary` is exactly what `__all__` says."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import aviary


def test_all_names_exist_and_nothing_else_is_public() -> None:
    # Submodules appear as attributes once imported anywhere in the session; they are not the surface.
    public = {n for n in dir(aviary) if not n.startswith("_") and not isinstance(getattr(aviary, n), ModuleType)}
    assert set(aviary.__all__) == {"__version__"}
    assert public == set()
    for name in aviary.__all__:
        assert hasattr(aviary, name)


def test_version_comes_from_the_distribution_metadata() -> None:
    assert aviary.__version__ == version("aviary-asr")


def test_package_ships_py_typed() -> None:
    assert (Path(aviary.__file__).parent / "py.typed").is_file()
