"""The engine seam: a loaded model that turns a batch of utterances into transcripts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

from aviary.errors import UnsupportedLanguageError, UnsupportedTaskError, UnsupportedTranslationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aviary.types import Audio, TranscribeOptions, Transcript

Family = Literal["tdt", "aed"]
ISO_639: Final = re.compile(r"[a-z]{2,3}")
"""A language code as models name languages (ISO 639-1, or 639-3 where there is no two-letter code)."""
EngineName = Literal["onnx", "nemo"]


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is and can do."""

    name: str
    engine: EngineName
    family: Family
    device: str
    """Where it runs: "cpu" or "cuda" (after any fallback)."""
    languages: tuple[str, ...] = ()
    """Spoken languages it accepts; empty when it does not say (Parakeet takes any and detects)."""
    translation: bool = False
    """Whether `task="translate"` is possible."""
    timestamps: bool = True
    """Whether transcripts carry word times."""
    fallback: str | None = None
    """Why it runs on the CPU though CUDA was asked for; None when it runs where it was asked to."""
    max_seconds: float | None = None
    """The longest audio it takes in one piece (its exported position table); None: no limit but memory."""

    def written_language(self, options: TranscribeOptions) -> str | None:
        """The language a transcript for `options` is written in; None when the model detects it unseen.

        The one asked for; else Canary writes English, and a model that speaks one language writes that one.
        """
        if options.output_language:
            return options.output_language
        if self.family == "aed":
            return "en"
        return self.languages[0] if len(self.languages) == 1 else None

    def check(self, options: TranscribeOptions, *, called: str | None = None) -> None:
        """Raise a `RequestError` when the model cannot honour `options`; its message names it `called`.

        `called` is the name the caller used (an alias, say), which a client knows: not the path or
        repository the model was loaded from.

        A model that does not list its languages takes any ISO 639 code (two or three letters), nothing else.
        Canary translates from English or into it (X -> en, en -> X), never between two other languages.
        """
        name = called or self.name
        if options.task == "translate" and not self.translation:
            raise UnsupportedTaskError(options.task, name)
        if options.task == "translate" and self.family == "aed":
            source, target = options.language or "en", options.target_language or "en"
            if source != target and "en" not in (source, target):
                raise UnsupportedTranslationError(source, target, name)
        for language in (options.language, options.target_language if options.task == "translate" else None):
            if language is None:
                continue
            if self.languages and language not in self.languages:
                raise UnsupportedLanguageError(language, name, self.languages)
            if not ISO_639.fullmatch(language):
                raise UnsupportedLanguageError(language, name, ("ISO 639 codes such as 'en'",))


class Engine(Protocol):
    """A loaded model. `transcribe` is blocking and thread-safe; callers run it off the event loop."""

    @property
    def info(self) -> ModelInfo:
        """What this model is and can do."""
        ...

    def transcribe(self, audio: Sequence[Audio], options: Sequence[TranscribeOptions]) -> list[Transcript]:
        """Transcribe a batch: one options entry per utterance, one transcript per utterance, in order."""
        ...

    def release_memory(self) -> None:
        """Give cached accelerator memory back (between jobs)."""
        ...

    def close(self) -> None:
        """Free the model; the engine is unusable afterwards."""
        ...
