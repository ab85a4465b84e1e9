"""Fakes that implement Aviary's real seams, for tests of the parts above them (API, jobs, CLI).

`FakeEngine` satisfies the `Engine` protocol: it "hears" a fixed text per utterance (or one computed
from the audio), reports words spread evenly over the audio, records every call, and can be told to
fail or to take time, so the layers above can be tested without a model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aviary.engine.base import ModelInfo
from aviary.engine.timestamps import segments_from_words
from aviary.errors import InferenceError
from aviary.types import SAMPLE_RATE, Transcript, Word

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from aviary.types import Audio, TranscribeOptions


@dataclass
class FakeEngine:
    """An engine without a model: `text(audio)` is what it hears; calls are recorded in `calls`."""

    name: str = "fake"
    text: Callable[[Audio], str] = field(default=lambda _audio: "hello world")
    languages: tuple[str, ...] = ()
    translation: bool = False
    delay: float = 0.0
    """Seconds each `transcribe` call takes (to test timeouts, cancellation, batching)."""
    fail: bool = False
    """When true, `transcribe` raises `InferenceError` as a real engine failure would."""
    calls: list[tuple[int, list[TranscribeOptions]]] = field(default_factory=list)
    """(batch size, options) of every `transcribe` call, in order."""
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def info(self) -> ModelInfo:
        """A CPU model of the "tdt" family with word times."""
        return ModelInfo(self.name, "onnx", "tdt", "cpu", self.languages, self.translation)

    def transcribe(self, audio: Sequence[Audio], options: Sequence[TranscribeOptions]) -> list[Transcript]:
        """One transcript per utterance, words spaced evenly over its duration."""
        for option in options:
            self.info.check(option)
        with self._lock:
            self.calls.append((len(audio), list(options)))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise InferenceError(self.name)
        return [self._one(a, o) for a, o in zip(audio, options, strict=True)]

    def release_memory(self) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Mark the engine closed."""
        self.closed = True

    def _one(self, audio: Audio, options: TranscribeOptions) -> Transcript:
        duration = round(len(audio) / SAMPLE_RATE, 3)
        spoken = self.text(audio).split()
        step = duration / max(len(spoken), 1)
        words = tuple(Word(w, round(i * step, 3), round((i + 1) * step, 3), 1.0) for i, w in enumerate(spoken))
        return Transcript(
            text=" ".join(spoken),
            duration=duration,
            language=self.info.written_language(options),
            words=words,
            segments=tuple(segments_from_words(words)),
        )
