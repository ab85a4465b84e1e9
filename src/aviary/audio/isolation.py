"""Decoding in child processes: a crash, hang or memory blow-up of FFmpeg costs one child, not the server.

Each child (`python -m aviary.audio.worker`) decodes one input at a time with `aviary.audio.pyav`
under an address-space limit, and streams its chunks back over a pipe. The parent waits on the pipe
with a deadline: the time spent waiting on the child (not the consumer's time between chunks) is
bounded by `AudioLimits.timeout_seconds`; past it the child is killed and `DecodeTimeoutError`
raised. A child that dies mid-decode gives `InvalidAudioError`. Either way a fresh child takes its
place on the next request. Idle children are kept for reuse (starting one costs an interpreter and
PyAV's import, ~0.2 s of CPU; an idle one holds ~28 MB): at least `idle`, and as many as were busy
at once in the last `pool_memory_seconds` (10 minutes by default), so a server under a steady crowd
of clients stops starting children (16 clients sending 10 s clips on 2 cores: 8% more throughput
than re-spawning), a crowd that comes back after a pause finds them ready (with a one-minute memory,
16 clients returning every few minutes left the model idle 3.5 s per return, against 0.7 s, while
15 children started for their first uploads), and a quiet server shrinks back. A stream abandoned
half-way kills its child, since it may still be writing.

Wire format, both ways: a 1-byte kind, a 4-byte little-endian length, the payload. Parent -> child:
`R` (JSON request: path or none, limits) and, for in-memory input, `D` (the bytes). Child -> parent:
`S` once at start-up (PyAV loaded), then per request `I` (JSON media info), `C` (float32 samples),
and `F` (done) or `E` (JSON error: class name and message); both carry the child's peak memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

import numpy as np

from aviary.audio.pyav import AudioLimits, MediaInfo, check_size, gather
from aviary.errors import AudioError, DecoderFailedError, DecoderUnavailableError, DecodeTimeoutError

if TYPE_CHECKING:
    from collections.abc import Generator

    from aviary.audio.pyav import Source
    from aviary.types import Audio

logger = logging.getLogger(__name__)
HEADER = struct.Struct("<cI")
MAX_MESSAGE = 1 << 30
POOL_MEMORY_SECONDS = 600.0
"""How long the pool remembers its busiest moment (idle children kept for it)."""
MAX_IDLE = 64


def write_message(out: IO[bytes], kind: bytes, payload: bytes | memoryview = b"") -> None:
    """Write one framed message."""
    out.write(HEADER.pack(kind, len(payload)))
    out.write(payload)


class _Child:
    """One decoder process and the read side of its pipe."""

    def __init__(self, memory_mb: int) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aviary.audio.worker", "--memory-mb", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a signal to the server's process group does not hit the children
        )
        assert self.process.stdin is not None  # noqa: S101 - Popen with PIPE always sets it
        assert self.process.stdout is not None  # noqa: S101
        self.stdin = self.process.stdin
        self.fd = self.process.stdout.fileno()
        self.started = False

    def wait_started(self, budget: _Budget) -> None:
        """Read the child's `S` (started) message, once; a child that says anything else has failed.

        Raises:
            DecoderUnavailableError: the child exited before it was ready (before any input).
        """
        if not self.started:
            try:
                kind, _ = self.receive(budget)
            except EOFError as exc:
                raise DecoderUnavailableError from exc
            if kind != b"S":
                raise DecoderFailedError
            self.started = True

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Let an idle child finish: end of input is its signal to exit; kill it if it does not."""
        try:
            self.stdin.close()
            self.process.wait(timeout=2.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        with contextlib.suppress(OSError):  # a child killed mid-write leaves a broken pipe to flush
            self.stdin.close()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def send(self, kind: bytes, payload: bytes | memoryview = b"") -> None:
        write_message(self.stdin, kind, payload)

    def receive(self, budget: _Budget) -> tuple[bytes, bytearray]:
        kind, size = HEADER.unpack(bytes(self._read(HEADER.size, budget)))
        if size > MAX_MESSAGE:
            raise DecoderFailedError
        return kind, self._read(size, budget)

    def _read(self, size: int, budget: _Budget) -> bytearray:
        data = bytearray(size)
        view = memoryview(data)
        got = 0
        while got < size:
            ready, _, _ = select.select([self.fd], [], [], budget.remaining())
            budget.check()
            if not ready:
                continue
            count = os.readv(self.fd, [view[got:]])
            if not count:
                raise EOFError
            got += count
        return data


class _Budget:
    """Seconds of waiting on a child left for one decode; only time spent waiting counts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.left = seconds
        self.since: float | None = None

    def start(self) -> None:
        self.since = time.monotonic()

    def stop(self) -> None:
        if self.since is not None:
            self.left -= time.monotonic() - self.since
            self.since = None

    def remaining(self) -> float:
        spent = time.monotonic() - self.since if self.since is not None else 0.0
        return max(0.0, self.left - spent)

    def check(self) -> None:
        if self.remaining() <= 0:
            raise DecodeTimeoutError(self.seconds)


class IsolatedDecoder:
    """Decodes in child processes; thread-safe; keeps up to `idle` children ready between requests."""

    def __init__(
        self,
        limits: AudioLimits,
        *,
        idle: int = 2,
        memory_mb: int | None = None,
        pool_memory_seconds: float = POOL_MEMORY_SECONDS,
    ) -> None:
        """Hold the limits; children start on first use (or `warm()`).

        `memory_mb`: each child's address-space limit; by default 1 GiB plus twice the largest input.
        """
        self.limits = limits
        self._idle_max = idle
        self._memory_mb = memory_mb or 1024 + 2 * -(-limits.max_bytes // (1 << 20))
        self._idle: list[_Child] = []
        self._busy = 0
        self._levels: deque[tuple[float, int]] = deque()
        """(when last seen, children busy): the sliding window's maximum first, later and lower levels after it."""
        self._pool_memory = pool_memory_seconds
        self._lock = threading.Lock()
        self._closed = False
        self.peak_mb = 0.0
        """The highest peak resident memory a child has reported after a decode (MB)."""

    def warm(self) -> None:
        """Start the idle children and wait until they are ready, so the first requests do not wait."""
        with self._lock:
            fresh = [_Child(self._memory_mb) for _ in range(self._idle_max - len(self._idle))]
            self._busy += len(fresh)
        for child in fresh:  # out of the pool while starting: no request reads their pipes meanwhile
            budget = _Budget(self.limits.timeout_seconds)
            budget.start()
            try:
                child.wait_started(budget)
            except (AudioError, DecoderUnavailableError, EOFError, OSError) as exc:
                if isinstance(exc, DecoderUnavailableError):
                    logger.error("%s", exc)  # noqa: TRY400 - the cause is the setting, not a traceback
                self._release(child, healthy=False)
                continue
            self._release(child, healthy=True)

    def decode(self, source: Source | BinaryIO) -> Audio:
        """The whole input as one float32 mono 16 kHz array (see `stream` for the errors)."""
        return gather(self.stream_with_info(source))

    def stream(self, source: Source | BinaryIO) -> Generator[Audio, None, None]:
        """Chunks of float32 mono 16 kHz audio, decoded in a child process as they are consumed.

        Raises:
            AudioError: its subclasses for every reason an input is refused (see `pyav.decode_chunks`),
                `DecodeTimeoutError` when the child works past the limit, `InvalidAudioError` when it dies.
        """
        for item in self.stream_with_info(source):
            if not isinstance(item, MediaInfo):
                yield item

    def probe(self, source: Source | BinaryIO) -> MediaInfo:
        """What the container says (format, codec, length), checked as decoding would check it, decoding nothing.

        Raises:
            AudioError: as `stream` does for everything found before the first sample (empty, not media,
                a container or codec not accepted, no audio stream, longer than allowed).
        """
        items = list(self.stream_with_info(source, probe=True))
        return next(item for item in items if isinstance(item, MediaInfo))

    def stream_with_info(
        self, source: Source | BinaryIO, *, probe: bool = False
    ) -> Generator[MediaInfo | Audio, None, None]:
        """As `stream`, with the `MediaInfo` first (and only that with `probe`)."""
        if not isinstance(source, (Path, bytes)):
            source = _read_bounded(source, self.limits.max_bytes)
        check_size(source, self.limits)
        child = self._acquire()
        budget = _Budget(self.limits.timeout_seconds)
        finished = False
        try:
            budget.start()
            child.wait_started(budget)  # a fresh child's start-up counts against the time limit too
            budget.stop()
            path = str(source) if isinstance(source, Path) else None
            request = {"path": path, "limits": asdict(self.limits), "probe": probe}
            child.send(b"R", json.dumps(request).encode())
            if isinstance(source, bytes):
                child.send(b"D", source)
            child.stdin.flush()
            while True:
                budget.start()
                kind, payload = child.receive(budget)
                budget.stop()
                if kind == b"C":
                    yield np.frombuffer(payload, dtype=np.float32)
                elif kind == b"I":
                    yield MediaInfo(**json.loads(payload))
                elif kind == b"F":
                    finished = True
                    self._note_peak(json.loads(payload)["peak_mb"])
                    return
                elif kind == b"E":
                    finished = True
                    error = json.loads(payload)
                    self._note_peak(error["peak_mb"])
                    raise AudioError.rebuild(error["kind"], error["message"])
                else:
                    raise DecoderFailedError
        except AudioError:  # DecodeTimeoutError is also an OSError (a TimeoutError): it passes as it is
            raise
        except (EOFError, OSError) as exc:
            raise DecoderFailedError from exc
        finally:
            self._release(child, healthy=finished)

    def _note_peak(self, megabytes: float) -> None:
        with self._lock:
            self.peak_mb = max(self.peak_mb, megabytes)

    def close(self) -> None:
        """Stop every idle child; later requests fail."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()

    def _acquire(self) -> _Child:
        with self._lock:
            if self._closed:
                msg = "the decoder is closed"
                raise RuntimeError(msg)
            self._busy += 1
            self._note_busy()
            child = self._idle.pop() if self._idle else None
            surplus = self._surplus()
        for extra in surplus:
            extra.stop()
        while child is not None:
            if child.alive():
                return child
            child.kill()
            with self._lock:
                child = self._idle.pop() if self._idle else None
        try:
            return _Child(self._memory_mb)
        except OSError:
            with self._lock:
                self._busy -= 1
            raise

    def _release(self, child: _Child, *, healthy: bool) -> None:
        with self._lock:
            self._note_busy()  # this level lasted until now
            self._busy -= 1
            surplus = self._surplus()
            kept = healthy and child.alive() and not self._closed and len(self._idle) < self._keep()
            if kept:
                self._idle.append(child)
        for extra in surplus:
            extra.stop()
        if kept:
            return
        if healthy and child.alive():
            child.stop()
            return
        child.kill()

    def _note_busy(self) -> None:
        """Record that `_busy` children are busy now (under the lock): a sliding-window maximum's queue."""
        while self._levels and self._levels[-1][1] <= self._busy:
            self._levels.pop()
        self._levels.append((time.monotonic(), self._busy))

    def _recent_peak(self) -> int:
        """The most children busy at once within the pool's memory (under the lock)."""
        horizon = time.monotonic() - self._pool_memory
        while self._levels and self._levels[0][0] < horizon:
            self._levels.popleft()
        return self._levels[0][1] if self._levels else self._busy

    def _keep(self) -> int:
        """How many idle children to keep now (under the lock)."""
        return min(MAX_IDLE, max(self._idle_max, self._recent_peak()) - self._busy)

    def _surplus(self) -> list[_Child]:
        """The idle children beyond what the recent peak needs, taken out of the pool (under the lock)."""
        extra = max(0, len(self._idle) - max(0, self._keep()))
        surplus, self._idle = self._idle[:extra], self._idle[extra:]
        return surplus


def _read_bounded(file: BinaryIO, limit: int) -> bytes:
    """Read a file object whole, refusing (without reading on) past `limit` bytes."""
    from aviary.errors import PayloadTooLargeError

    data = file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(limit)
    return data
