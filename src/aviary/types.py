"""The values that flow between Aviary's parts: audio in, transcripts out, and the options between."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
"""Every engine takes float32 mono audio at this rate."""

Audio: TypeAlias = npt.NDArray[np.float32]
"""Mono float32 samples in [-1, 1] at `SAMPLE_RATE`."""

Task = Literal["transcribe", "translate"]
Device = Literal["auto", "cpu", "cuda"]


def language_code(tag: str) -> str:
    """The ISO 639 code a language tag starts with: "de-DE", "DE" and "de_DE" are all "de"."""
    return tag.strip().replace("_", "-").split("-", 1)[0].lower()


@dataclass(frozen=True)
class TranscribeOptions:
    """What to do with one utterance."""

    language: str | None = None
    """Spoken language (ISO 639-1); `None` lets the model decide (Canary: English)."""
    task: Task = "transcribe"
    target_language: str | None = None
    """Output language for `translate` (Canary); defaults to English."""
    pnc: bool = True
    """Punctuation and capitals, for models that can switch them (Canary)."""

    @property
    def output_language(self) -> str | None:
        """The language the text is written in."""
        if self.task == "translate":
            return self.target_language or "en"
        return self.language


@dataclass(frozen=True)
class Word:
    """One word with its time span in seconds and a confidence in [0, 1]."""

    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Segment:
    """A sentence-like span of the transcript."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """The result for one utterance."""

    text: str
    duration: float
    """Seconds of audio that were transcribed."""
    language: str | None = None
    words: tuple[Word, ...] = ()
    segments: tuple[Segment, ...] = ()
    tokens: tuple[int, ...] = field(default=(), repr=False)
    """Token ids as the model emitted them (text tokens only)."""
    timestamps: bool = True
    """False when the model gives no word times (then words and segments carry none)."""
