"""The decoder processes: a child that dies or hangs costs that request only; the next one works."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from aviary.audio import AudioLimits, IsolatedDecoder
from aviary.config import Settings
from aviary.errors import (
    DecoderFailedError,
    DecoderMemoryError,
    DecoderUnavailableError,
    DecodeTimeoutError,
    EmptyFileError,
    UnsupportedMediaError,
)
from aviary.types import SAMPLE_RATE
from tests.support.media import ENCODINGS, encode
from tools.fixtures import speech

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

FLAC = next(e for e in ENCODINGS if e.name == "flac-48k-5.1")


@pytest.fixture(scope="module")
def long_flac() -> bytes:
    parts = [speech.synthesize(speech.random_spec(np.random.default_rng(i), "en", heldout=True)) for i in range(12)]
    return encode(np.concatenate(parts), SAMPLE_RATE, FLAC)


@pytest.fixture
def decoder() -> Iterator[IsolatedDecoder]:
    isolated = IsolatedDecoder(AudioLimits(chunk_seconds=1.0, timeout_seconds=3.0), idle=1)
    yield isolated
    isolated.close()


def _children() -> set[int]:
    """Process ids of this process's live decoder children (other children, such as servers, are not counted)."""
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z" and b"aviary.audio.worker" in command:
                found.add(int(entry.name))
    return found


def _started(decoder: IsolatedDecoder, data: bytes) -> tuple[Generator[np.ndarray, None, None], int]:
    """A stream that has handed over its first chunk, and the pid of the child decoding it."""
    before = _children()
    chunks = decoder.stream(data)
    next(chunks)
    (child,) = _children() - before
    return chunks, child


def test_a_child_killed_mid_decode_fails_that_request_only(decoder: IsolatedDecoder, long_flac: bytes) -> None:
    chunks, child = _started(decoder, long_flac)
    os.kill(child, signal.SIGKILL)
    with pytest.raises(DecoderFailedError) as error:
        list(chunks)
    assert error.value.code == "invalid_audio"
    assert len(decoder.decode(long_flac)) > 0


def test_a_hung_child_times_out_and_is_replaced(decoder: IsolatedDecoder, long_flac: bytes) -> None:
    chunks, child = _started(decoder, long_flac)
    os.kill(child, signal.SIGSTOP)
    start = time.monotonic()
    with pytest.raises(DecodeTimeoutError) as error:
        list(chunks)
    assert error.value.code == "decode_timeout"
    assert time.monotonic() - start < 3.0 + 2.0
    assert child not in _children()  # killed, not left stopped
    assert len(decoder.decode(long_flac)) > 0


def test_time_spent_by_the_consumer_does_not_count(long_flac: bytes) -> None:
    # A slow consumer (a long transcription between chunks) is not the decoder hanging.
    patient = IsolatedDecoder(AudioLimits(chunk_seconds=1.0, timeout_seconds=1.0), idle=0)
    try:
        total = 0
        for chunk in patient.stream(long_flac):
            total += len(chunk)
            time.sleep(0.1)
    finally:
        patient.close()
    assert total > 20 * SAMPLE_RATE  # more than 2 s of consumer time against a 1 s decode budget


def test_an_abandoned_stream_stops_its_child(decoder: IsolatedDecoder, long_flac: bytes) -> None:
    chunks, child = _started(decoder, long_flac)
    chunks.close()
    assert child not in _children()


def test_a_probe_reads_the_container_only_and_leaves_its_child_serving(long_flac: bytes) -> None:
    decoder = IsolatedDecoder(AudioLimits(), idle=1)
    try:
        decoder.warm()
        pool = _children()
        info = decoder.probe(long_flac)
        assert list(decoder.stream_with_info(long_flac, probe=True)) == [info]  # no samples decoded, none sent
        assert info.declared_seconds == pytest.approx(len(decoder.decode(long_flac)) / SAMPLE_RATE, abs=0.05)
        with pytest.raises(EmptyFileError):
            decoder.probe(b"")
        with pytest.raises(UnsupportedMediaError):
            decoder.probe(b"not audio at all\n" * 50)
        assert _children() == pool  # the same child answered every probe and the decode between them
    finally:
        decoder.close()


def test_children_are_reused_and_serve_threads_at_once(long_flac: bytes) -> None:
    decoder = IsolatedDecoder(AudioLimits(), idle=2)
    try:
        decoder.warm()
        pool = _children()
        assert len(pool) == 2
        expected = decoder.decode(long_flac)
        results: list[np.ndarray] = []
        threads = [threading.Thread(target=lambda: results.append(decoder.decode(long_flac))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 4
        for result in results:
            np.testing.assert_array_equal(result, expected)
        assert pool <= _children()  # the warm children are still the ones serving
    finally:
        decoder.close()
    assert not (pool & _children())


def test_the_pool_keeps_as_many_children_as_were_busy_then_shrinks_back(long_flac: bytes) -> None:
    decoder = Settings(decoder_processes=1, decoder_idle_seconds=3.0).audio_decoder()  # as the server makes it
    try:
        streams = [decoder.stream(long_flac) for _ in range(4)]
        for stream in streams:  # four busy at once
            next(stream)
        busy = _children()
        assert len(busy) == 4
        for stream in streams:
            for _ in stream:
                pass
        assert _children() == busy  # all four kept: the next crowd starts no process
        for _ in range(3):
            decoder.decode(long_flac)
        assert _children() == busy
        time.sleep(3.5)  # quiet for longer than the pool remembers
        decoder.decode(long_flac)
        deadline = time.monotonic() + 10
        while len(_children()) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_children()) == 1
    finally:
        decoder.close()


def test_the_pool_remembers_its_busiest_moment_within_its_memory_not_only_the_last_peak(long_flac: bytes) -> None:
    # 4 busy, then 2 busy a little later: once the 4 are older than the pool's memory, the 2 still count.
    decoder = IsolatedDecoder(AudioLimits(chunk_seconds=1.0), idle=1, pool_memory_seconds=3.0)

    def crowd(size: int) -> None:
        streams = [decoder.stream(long_flac) for _ in range(size)]
        for stream in streams:
            next(stream)
        for stream in streams:
            for _ in stream:
                pass

    try:
        crowd(4)
        assert len(_children()) == 4
        time.sleep(1.8)
        crowd(2)
        time.sleep(1.8)  # the crowd of 4 is now 3.6 s old, the crowd of 2 is 1.8 s old
        decoder.decode(long_flac)
        deadline = time.monotonic() + 10
        while len(_children()) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_children()) == 2
    finally:
        decoder.close()


def test_a_child_cannot_take_more_memory_than_allowed() -> None:
    # A 460 MB input (10 minutes of 192 kHz float WAV) sent to a child limited to 300 MB of address space:
    # the allocation is refused in the child, which answers with a domain error instead of dying.
    samples = np.zeros(192_000 * 60 * 10, dtype=np.float32)
    from tests.support.media import Encoding

    wav = Encoding("f32", "wav", "pcm_f32le", rate=192_000)
    big = encode(samples, 192_000, wav)
    tight = IsolatedDecoder(AudioLimits(), idle=1, memory_mb=300)
    try:
        with pytest.raises(DecoderMemoryError) as error:
            tight.decode(big)
        assert error.value.code == "invalid_audio"
        assert str(error.value) == "Decoding the audio needed more memory than allowed."
        assert tight.peak_mb < 300
        small = encode(samples[:192_000], 192_000, wav)
        assert len(tight.decode(small)) == SAMPLE_RATE  # the same child answers the next request
    finally:
        tight.close()


def test_a_decoder_that_cannot_start_is_the_servers_fault_not_the_files(caplog: pytest.LogCaptureFixture) -> None:
    starved = IsolatedDecoder(AudioLimits(), idle=1, memory_mb=50)  # too little for the interpreter itself
    wav = encode(np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE, ENCODINGS[0])
    try:
        starved.warm()
        with pytest.raises(DecoderUnavailableError) as error:
            starved.decode(wav)
    finally:
        starved.close()
    assert error.value.code == "decoder_unavailable"
    assert "AVIARY_DECODER_MEMORY_MB" in str(error.value)
    assert "The audio decoder could not start" in caplog.text  # said at start-up (warm), before any request
