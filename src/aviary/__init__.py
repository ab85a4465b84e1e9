"""Aviary: a self-hosted speech-to-text server for NVIDIA Parakeet and Canary models."""

from importlib.metadata import version as _version

__version__: str = _version("aviary-asr")

__all__ = ["__version__"]
