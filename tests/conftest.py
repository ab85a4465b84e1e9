"""Suite-wide pytest hooks: the runtime facts that explain machine-specific failures."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import onnxruntime


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def pytest_report_header() -> list[str]:
    """Print versions and onnxruntime providers in the report header."""
    dists = ("aviary-asr", "onnxruntime", "onnx-asr", "torch", "nemo-toolkit")
    return [
        "versions: " + ", ".join(f"{d} {_version(d)}" for d in dists),
        "onnxruntime providers: " + ", ".join(onnxruntime.get_available_providers()),
    ]
