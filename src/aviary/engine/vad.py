"""Voice activity: Silero VAD v6 on onnxruntime, the chance of speech in every 32 ms of audio.

The model is Silero's "sequence" ONNX export, shipped in `aviary/engine/data/` with its MIT licence
(see the README there): one call scores a block of frames and passes the LSTM state in and out, so
a stream of any length is scored block by block, in constant memory, with a few calls per minute of
audio instead of the stock export's one call per frame. No torch.
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
        self.frames = 0
        """Frames scored so far."""

    def feed(self, samples: Audio) -> npt.NDArray[np.float32]:
        """Score every frame that `samples` completes; one probability per frame, in order."""
        pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        whole = len(pending) // FRAME
        self._pending = pending[whole * FRAME :]
        return self._score(pending[: whole * FRAME].reshape(whole, FRAME))

    def flush(self) -> npt.NDArray[np.float32]:
        """Score the last partial frame, padded with silence (nothing when there is none)."""
        if not len(self._pending):
            return np.zeros(0, dtype=np.float32)
        frame = np.zeros((1, FRAME), dtype=np.float32)
        frame[0, : len(self._pending)] = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        return self._score(frame)

    def _score(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
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
