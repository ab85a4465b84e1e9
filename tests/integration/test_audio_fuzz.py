"""Property: mutated valid files never escape as anything but a domain error, and never hang the caller."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviary.audio import AudioLimits, IsolatedDecoder
from aviary.errors import AudioError
from aviary.types import SAMPLE_RATE
from tests.support.media import ENCODINGS, encode
from tools.fixtures import speech

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 5.0
CODES = {"empty_file", "unsupported_media", "invalid_audio", "audio_too_long", "decode_timeout"}
SEEDED = (
    *("wav-s16", "mp3-44k-stereo", "flac-48k-5.1", "ogg-vorbis", "ogg-opus", "m4a-aac", "webm-opus", "aiff"),
    *("wma", "mpeg-ps", "mpeg-ts-video", "amr-nb", "wav-ima-adpcm"),
)


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    audio = speech.synthesize(speech.random_spec(np.random.default_rng(77), "en", heldout=True))
    return {e.name: encode(audio, SAMPLE_RATE, e) for e in ENCODINGS if e.name in SEEDED}


@pytest.fixture(scope="module")
def decoder() -> Iterator[IsolatedDecoder]:
    isolated = IsolatedDecoder(AudioLimits(timeout_seconds=TIMEOUT), idle=1)
    yield isolated
    isolated.close()


def _mutate(data: bytes, draw: st.DataObject) -> bytes:
    out = bytearray(data)
    head = min(len(out), 512)  # most parsing happens in the first bytes: mutate there more often
    for _ in range(draw.draw(st.integers(1, 12), label="flips")):
        limit = head if draw.draw(st.booleans()) else len(out)
        out[draw.draw(st.integers(0, limit - 1))] = draw.draw(st.integers(0, 255))
    action = draw.draw(st.sampled_from(("none", "truncate", "insert", "repeat")), label="action")
    at = draw.draw(st.integers(0, len(out)), label="at")
    if action == "truncate":
        del out[at:]
    elif action == "insert":
        out[at:at] = draw.draw(st.binary(min_size=1, max_size=64))
    elif action == "repeat":
        out[at:at] = out[at : at + 4096]
    return bytes(out)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_files_give_a_code_or_audio(
    decoder: IsolatedDecoder, seeds: dict[str, bytes], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(seeds)), label="format")
    mutated = _mutate(seeds[name], data)
    start = time.monotonic()
    code: str | None = None
    try:
        audio = decoder.decode(mutated)
    except AudioError as error:  # any other exception type fails the test
        code = error.code
    else:
        assert audio.dtype == np.float32
        assert np.isfinite(audio).all()
    assert code is None or code in CODES
    assert time.monotonic() - start < TIMEOUT + 3.0
