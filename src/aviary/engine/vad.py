"""Voice activity: Silero VAD v6 on onnxruntime, the chance of speech in every 32 ms of audio.

The model is Silero's "sequence" ONNX export, shipped in `aviary/engine/data/` with its MIT licence
(see the README there): one call scores a block of frames and passes the LSTM state in and out, so
a stream of any length is scored block by block, in constant memory, with a few calls per minute of
audio instead of the stock export's one call per frame. No torch.

Silero hears quiet speech as less likely speech: the same words with their peaks at -30 dBFS start
0.35 s later than at full scale, at -40 dBFS a second later, and at -50 dBFS most frames fall below
0.5, so long-form would trim or skip them. What the model scores is therefore levelled first (the
engines still get the audio as it is): each frame is raised toward a peak of `TARGET_DBFS` by up to
`MAX_GAIN_DB`, never lowered, following a peak envelope that rises at once and falls `RELEASE_DB` a
second. Stationary noise raised this way stays below 0.1 (white, pink, brown noise and mains hum all
measured), so pauses remain pauses. The envelope is integer arithmetic on the stream's frame
numbers, so a stream fed in any pieces is levelled, and scored, exactly as in one.
"""

from __future__ import annotations

import contextlib
import functools
from importlib import resources
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import onnxruntime as ort

from aviary.types import SAMPLE_RATE

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

    from aviary.types import Audio

FRAME: Final = 512
"""Samples per scored frame (32 ms at 16 kHz)."""
FRAME_SECONDS: Final = FRAME / SAMPLE_RATE
_CONTEXT: Final = 64  # each frame is scored with the last samples of the frame before it
_BLOCK: Final = 512  # frames per call (16 s)
_STATE: Final = (1, 1, 128)
TARGET_DBFS: Final = -6.0
"""The peak level the envelope of what Silero scores is raised toward."""
MAX_GAIN_DB: Final = 40.0
"""Most gain given: audio that peaks below -46 dBFS is scored quieter than the target."""
RELEASE_DB: Final = 6.0
"""How fast the envelope falls, in dB a second, after the loudest frame it has followed."""
_UNITS: Final = 100  # envelope levels are integers in hundredths of a dB
_RELEASE_UNITS: Final = round(RELEASE_DB * _UNITS * FRAME_SECONDS)  # per frame
_FLOOR_UNITS: Final = -200 * _UNITS  # the level of digital silence


class Scorer(Protocol):
    """One audio stream being scored, frame by frame."""

    def feed(self, samples: Audio) -> npt.NDArray[np.float32]:
        """The speech probability of every frame `samples` completes."""
        ...

    def flush(self) -> npt.NDArray[np.float32]:
        """The last partial frame's, padded with silence (nothing when there is none)."""
        ...


class Vad(Protocol):
    """A voice activity model (the seam long-form planning uses)."""

    def stream(self) -> Scorer:
        """A scorer for one new stream."""
        ...


class SileroVad:
    """A loaded Silero VAD model; thread-safe (each stream keeps its own state)."""

    def __init__(self, path: Path | None = None, *, threads: int = 1) -> None:
        """Load the bundled model (or the sequence export at `path`) on the CPU."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = resources.files("aviary.engine") / "data" / "silero_vad_16k_sequence.onnx"
        with resources.as_file(model) if path is None else contextlib.nullcontext(path) as file:
            self._session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])

    def stream(self) -> VadStream:
        """A fresh stream: feed it audio in pieces of any size, in order."""
        return VadStream(self._session)

    def probabilities(self, audio: Audio) -> npt.NDArray[np.float32]:
        """The speech probability of every frame of `audio` (the last one zero-padded)."""
        stream = self.stream()
        return np.concatenate([stream.feed(audio), stream.flush()])


class VadStream:
    """The state of one audio stream being scored."""

    def __init__(self, session: ort.InferenceSession) -> None:
        """Start with silence before the first sample, as the model was trained."""
        self._session = session
        self._h = np.zeros(_STATE, dtype=np.float32)
        self._c = np.zeros(_STATE, dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._envelope = _FLOOR_UNITS  # max over frames j so far of level(j) + j * release
        self.frames = 0
        """Frames scored so far."""

    def feed(self, samples: Audio) -> npt.NDArray[np.float32]:
        """Score every frame that `samples` completes; one probability per frame, in order."""
        pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        whole = len(pending) // FRAME
        self._pending = pending[whole * FRAME :]
        return self._score(pending[: whole * FRAME].reshape(whole, FRAME))

    def _levelled(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """`frames` raised toward `TARGET_DBFS` by the gain their peak envelope calls for."""
        peaks = np.abs(frames).max(axis=1).astype(np.float64)
        with np.errstate(divide="ignore"):
            levels = np.round(20 * _UNITS * np.log10(peaks))
        levels = np.maximum(np.nan_to_num(levels, neginf=_FLOOR_UNITS), _FLOOR_UNITS).astype(np.int64)
        # envelope(i) = max(level(i), envelope(i - 1) - release) = max over j <= i of level(j) + j * release,
        # minus i * release: a running maximum of integers, the same however the stream was cut.
        numbers = self.frames + np.arange(len(frames), dtype=np.int64)
        running = np.maximum.accumulate(np.maximum(levels + numbers * _RELEASE_UNITS, self._envelope))
        if len(running):
            self._envelope = int(running[-1])
        envelope = running - numbers * _RELEASE_UNITS
        gain_units = np.clip(round(TARGET_DBFS * _UNITS) - envelope, 0, round(MAX_GAIN_DB * _UNITS))
        gains = np.power(10.0, gain_units / (20 * _UNITS)).astype(np.float32)
        return frames * gains[:, None]

    def flush(self) -> npt.NDArray[np.float32]:
        """Score the last partial frame, padded with silence (nothing when there is none)."""
        if not len(self._pending):
            return np.zeros(0, dtype=np.float32)
        frame = np.zeros((1, FRAME), dtype=np.float32)
        frame[0, : len(self._pending)] = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        return self._score(frame)

    def _score(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        frames = self._levelled(frames)
        out = [np.zeros(0, dtype=np.float32)]
        for first in range(0, len(frames), _BLOCK):
            block = frames[first : first + _BLOCK]
            contexts = np.concatenate([self._context[None, :], block[:-1, -_CONTEXT:]])
            probabilities, self._h, self._c = self._session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, block], axis=1), "h": self._h, "c": self._c},
            )
            self._context = block[-1, -_CONTEXT:].copy()
            out.append(np.asarray(probabilities, dtype=np.float32).reshape(-1))
        self.frames += len(frames)
        return np.concatenate(out)


@functools.cache
def shared_vad() -> SileroVad:
    """The process's VAD model, loaded on first use."""
    return SileroVad()
