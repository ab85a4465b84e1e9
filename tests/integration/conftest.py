"""Fixtures shared by the integration tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from aviary.audio import AudioLimits, IsolatedDecoder

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def decoder() -> Iterator[IsolatedDecoder]:
    """The product's decoder (child processes), with a generous timeout for slow CI machines."""
    isolated = IsolatedDecoder(AudioLimits(timeout_seconds=60.0), idle=1)
    yield isolated
    isolated.close()
