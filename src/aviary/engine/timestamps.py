"""From timed tokens to text, words and segments, the way NeMo builds its word and segment timestamps.

A token carries its sentencepiece piece, its first and last encoder frame and a confidence. A word
starts at every piece that begins with "▁"; its time runs from its first token's start to its last
token's end; its confidence is the lowest of its tokens' (NeMo's default "min" aggregation).
Segments close after sentence-final punctuation and before a pause longer than the gap setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aviary.types import Segment, Word

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

WORD_START = "\u2581"
SENTENCE_END = (".", "?", "!", "\u2026", "\u3002", "\uff1f", "\uff01")
DEFAULT_SEGMENT_GAP = 1.0


@dataclass(frozen=True)
class TimedToken:
    """One emitted token: piece, [start, end) in encoder frames, and the probability it had."""

    piece: str
    start: int
    end: int
    confidence: float


def detokenize(pieces: Iterable[str]) -> str:
    """Sentencepiece text: pieces joined, "▁" as spaces, no leading or trailing space."""
    return "".join(pieces).replace(WORD_START, " ").strip()


def words_from_tokens(tokens: Sequence[TimedToken], frame_seconds: float) -> list[Word]:
    """Group tokens into words at "▁" boundaries, with times in seconds."""
    groups: list[list[TimedToken]] = []
    for token in tokens:
        if not groups or token.piece.startswith(WORD_START):
            groups.append([token])
        else:
            groups[-1].append(token)
    words: list[Word] = []
    for group in groups:
        text = "".join(t.piece for t in group).replace(WORD_START, "").strip()
        if not text:
            continue
        words.append(
            Word(
                word=text,
                start=round(group[0].start * frame_seconds, 3),
                end=round(max(group[-1].end, group[0].start) * frame_seconds, 3),
                confidence=round(min(t.confidence for t in group), 4),
            )
        )
    return words


def segments_from_words(words: Sequence[Word], gap_seconds: float = DEFAULT_SEGMENT_GAP) -> list[Segment]:
    """Sentence-like segments: split after sentence-final punctuation and at pauses of `gap_seconds` or more."""
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current and word.start - current[-1].end >= gap_seconds:
            segments.append(_segment(current))
            current = []
        current.append(word)
        if word.word.endswith(SENTENCE_END):
            segments.append(_segment(current))
            current = []
    if current:
        segments.append(_segment(current))
    return segments


def _segment(words: list[Word]) -> Segment:
    return Segment(text=" ".join(w.word for w in words), start=words[0].start, end=words[-1].end, words=tuple(words))
