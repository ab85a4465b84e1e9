"""A `Transcript` in the OpenAI audio API's response formats: `text`, `json`, `verbose_json`, `srt` and `vtt`.

Everything here is a pure function of the transcript. Subtitles are cut from `transcript.segments`;
a transcript without segments but with text (a model without timestamps) becomes one cue over the
whole audio. A cue longer than `MAX_CUE_CHARS` is split at word boundaries, at the words' own times
when the segment has words and at times shared out by characters when it has none.

Timestamps are rounded to whole milliseconds once, half up, and only then split into fields, so
59.9996 s is `00:01:00,000` and never `00:00:59,1000`. Cue text is kept on one line: whitespace runs
(blank lines included) collapse to one space and `-->` loses a dash, so a cue can never end early or
read as a timing line.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, NotRequired, TypedDict, TypeGuard, get_args

from aviary.errors import InvalidOptionError
from aviary.types import Segment, Task, Transcript, Word

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Granularity = Literal["word", "segment"]

FORMATS: Final[tuple[ResponseFormat, ...]] = get_args(ResponseFormat)
"""Every `response_format` value, in the order OpenAI documents them."""

DEFAULT_GRANULARITIES: Final[tuple[Granularity, ...]] = ("segment",)
"""OpenAI's default `timestamp_granularities`."""

MAX_CUE_CHARS: Final = 84
"""Longest cue text before it is split: two subtitle lines of 42 characters."""

_MEDIA_TYPES: Final[dict[ResponseFormat, str]] = {
    "json": "application/json",
    "verbose_json": "application/json",
    # OpenAI serves SRT as text/plain (spec/openai-audio.md); application/x-subrip would make browsers download it.
    "text": "text/plain; charset=utf-8",
    "srt": "text/plain; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}

# OpenAI names languages in lower-case English, as Whisper does. These are the 25 European languages
# Parakeet v3 and Canary speak; any other code is passed through as given.
_LANGUAGE_NAMES: Final[dict[str, str]] = {
    "bg": "bulgarian",
    "cs": "czech",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "et": "estonian",
    "fi": "finnish",
    "fr": "french",
    "hr": "croatian",
    "hu": "hungarian",
    "it": "italian",
    "lt": "lithuanian",
    "lv": "latvian",
    "mt": "maltese",
    "nl": "dutch",
    "pl": "polish",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sk": "slovak",
    "sl": "slovenian",
    "sv": "swedish",
    "uk": "ukrainian",
}
UNKNOWN_LANGUAGE: Final = "unknown"
"""The `language` of a verbose_json response when the transcript does not name one."""

_MIN_CONFIDENCE: Final = 1e-10  # a zero confidence would make avg_logprob -inf, which JSON cannot carry


class LogprobJson(TypedDict):
    """One entry of `logprobs`: a word (with the space before it) and the natural log of its confidence."""

    token: str
    logprob: float
    bytes: list[int]


class UsageJson(TypedDict):
    """OpenAI's TranscriptTextUsageDuration: the seconds of audio transcribed."""

    type: Literal["duration"]
    seconds: float


class TranscriptionJson(TypedDict):
    """The `json` response: OpenAI's CreateTranscriptionResponseJson."""

    text: str
    usage: UsageJson
    logprobs: NotRequired[list[LogprobJson]]
    """Only when `include[]=logprobs` was asked for."""


class WordJson(TypedDict):
    """One entry of `words`: OpenAI's TranscriptionWord."""

    word: str
    start: float
    end: float


class SegmentJson(TypedDict):
    """One entry of `segments`: OpenAI's TranscriptionSegment, every field required."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    """Mean natural log of the segment's word confidences; 0.0 when it has no words."""
    compression_ratio: float
    """UTF-8 bytes of the text over their zlib-compressed size, as Whisper computes it."""
    no_speech_prob: float


class VerboseJson(TypedDict):
    """The `verbose_json` response: OpenAI's CreateTranscriptionResponseVerboseJson."""

    task: Task
    language: str
    duration: float
    text: str
    usage: UsageJson
    words: NotRequired[list[WordJson]]
    """Only when the word granularity was asked for."""
    segments: NotRequired[list[SegmentJson]]
    """Only when the segment granularity was asked for."""


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: whole milliseconds, `end_ms >= start_ms`, text on one line."""

    start_ms: int
    end_ms: int
    text: str


def is_response_format(value: str) -> TypeGuard[ResponseFormat]:
    """Whether `value` is one of `FORMATS`."""
    return value in FORMATS


def parse_format(value: str) -> ResponseFormat:
    """The `response_format` named by `value`.

    Raises:
        InvalidOptionError: `value` is not one of `FORMATS`.
    """
    if is_response_format(value):
        return value
    raise InvalidOptionError(option="response_format", value=value, expected="one of " + ", ".join(FORMATS))


def media_type(fmt: ResponseFormat) -> str:
    """The Content-Type of a response body in `fmt`."""
    return _MEDIA_TYPES[fmt]


def render(
    transcript: Transcript,
    fmt: ResponseFormat,
    *,
    task: Task = "transcribe",
    granularities: Collection[Granularity] = DEFAULT_GRANULARITIES,
    logprobs: bool = False,
) -> str:
    """The response body for `transcript` in `fmt`, ready to send with `media_type(fmt)`.

    Args:
        transcript: What the engine returned.
        fmt: The request's `response_format`.
        task: Echoed in verbose_json as `task`.
        granularities: The request's `timestamp_granularities`; verbose_json only.
        logprobs: Whether `include[]=logprobs` was asked for; json only, as OpenAI has it.

    Returns:
        The body as text: JSON for `json` and `verbose_json`, the document itself for the others.
    """
    if fmt == "text":
        return to_text(transcript)
    if fmt == "srt":
        return to_srt(transcript)
    if fmt == "vtt":
        return to_vtt(transcript)
    if fmt == "json":
        return json.dumps(to_json(transcript, logprobs=logprobs), ensure_ascii=False, allow_nan=False)
    body = to_verbose_json(transcript, task=task, granularities=granularities)
    return json.dumps(body, ensure_ascii=False, allow_nan=False)


def to_text(transcript: Transcript) -> str:
    """The plain text, ending in one newline as OpenAI's `text` responses do."""
    return transcript.text.strip() + "\n"


def to_json(transcript: Transcript, *, logprobs: bool = False) -> TranscriptionJson:
    """The `json` response: the text and the seconds transcribed, and the words' log-probabilities if asked."""
    body: TranscriptionJson = {"text": transcript.text, "usage": usage(transcript)}
    if logprobs:
        body["logprobs"] = word_logprobs(all_words(transcript))
    return body


def usage(transcript: Transcript) -> UsageJson:
    """What the request used: the seconds of audio transcribed."""
    return {"type": "duration", "seconds": _seconds(transcript.duration)}


def word_logprobs(words: Iterable[Word], *, first: bool = True) -> list[LogprobJson]:
    """OpenAI's `logprobs` with one entry per word: these models' confidences are kept per word.

    Each word but the transcript's first (`first`: whether `words` starts it) carries the space before
    it, so the tokens joined are the text; `logprob` is the natural log of the word's confidence (the
    probability of its least likely token).
    """
    out: list[LogprobJson] = []
    for word in words:
        token = word.word if first and not out else " " + word.word
        out.append({"token": token, "logprob": _logprob(word.confidence), "bytes": list(token.encode())})
    return out


def all_words(transcript: Transcript) -> tuple[Word, ...]:
    """Every word of `transcript`, from its own list or else from its segments."""
    return transcript.words or tuple(w for s in transcript.segments for w in s.words)


def to_verbose_json(
    transcript: Transcript, *, task: Task = "transcribe", granularities: Collection[Granularity] = DEFAULT_GRANULARITIES
) -> VerboseJson:
    """The `verbose_json` response, with `words` and `segments` as `granularities` asks."""
    body: VerboseJson = {
        "task": task,
        "language": language_name(transcript.language),
        "duration": _seconds(transcript.duration),
        "text": transcript.text,
        "usage": usage(transcript),
    }
    if "word" in granularities:
        words = all_words(transcript)
        body["words"] = [{"word": w.word, "start": _seconds(w.start), "end": _seconds(w.end)} for w in words]
    if "segment" in granularities:
        body["segments"] = [_segment_json(i, s, transcript) for i, s in enumerate(timed_segments(transcript))]
    return body


def to_seed(
    transcript: Transcript,
    *,
    filename: str,
    model: str,
    language: str | None,
    timestamps: bool = True,
    words: bool = False,
) -> dict[str, Any]:
    """The original server's result: text, segments (when `timestamps`), filename, timestamp (now), model, language.

    Aviary adds `duration`, and `words` (start, end, confidence) when `words` is set.
    """
    segments = [
        {"start": _ms(s.start), "end": _ms(max(s.end, s.start)), "text": s.text} for s in timed_segments(transcript)
    ]
    every = all_words(transcript)
    return {
        "text": transcript.text,
        "segments": segments if timestamps else [],
        "filename": filename,
        "timestamp": datetime.now(UTC).isoformat(),
        "model": model,
        "language": language,
        "duration": _ms(transcript.duration),
        "words": [{"word": w.word, "start": _ms(w.start), "end": _ms(w.end), "confidence": w.confidence} for w in every]
        if words
        else None,
    }


def _ms(seconds: float) -> float:
    return round(seconds, 3)


def to_srt(transcript: Transcript, *, max_chars: int = MAX_CUE_CHARS) -> str:
    """SubRip subtitles: numbered cues with `HH:MM:SS,mmm` times."""
    return "".join(
        f"{n}\n{timestamp(c.start_ms, ',')} --> {timestamp(c.end_ms, ',')}\n{c.text}\n\n"
        for n, c in enumerate(cues(transcript, max_chars=max_chars), start=1)
    )


def to_vtt(transcript: Transcript, *, max_chars: int = MAX_CUE_CHARS) -> str:
    """WebVTT subtitles: a `WEBVTT` header and cues with `HH:MM:SS.mmm` times."""
    blocks = (
        f"{timestamp(c.start_ms, '.')} --> {timestamp(c.end_ms, '.')}\n{_vtt_escape(c.text)}\n\n"
        for c in cues(transcript, max_chars=max_chars)
    )
    return "WEBVTT\n\n" + "".join(blocks)


def language_name(code: str | None) -> str:
    """OpenAI's lower-case English name for an ISO 639-1 code ("de" -> "german"); other codes unchanged."""
    if not code:
        return UNKNOWN_LANGUAGE
    primary = code.replace("_", "-").split("-", 1)[0].lower()
    return _LANGUAGE_NAMES.get(primary, code)


def milliseconds(seconds: float) -> int:
    """Seconds as whole milliseconds, rounded half up on the decimal value; negative or non-finite is 0."""
    if not math.isfinite(seconds) or seconds <= 0:
        return 0
    # repr() is the shortest decimal that reads back as this float, so 1.9995 rounds up as written.
    return int(Decimal(repr(seconds)).scaleb(3).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def timestamp(ms: int, separator: Literal[",", "."]) -> str:
    """`HH:MM:SS<separator>mmm` for a time in whole milliseconds; hours grow past two digits as needed."""
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def cues(transcript: Transcript, *, max_chars: int = MAX_CUE_CHARS) -> list[Cue]:
    """The subtitle cues of `transcript`, each at most `max_chars` long unless one word is longer."""
    out: list[Cue] = []
    for segment in timed_segments(transcript):
        text = clean_cue_text(segment.text)
        words = [w for w in segment.words if clean_cue_text(w.word)]
        if len(text) <= max_chars:
            out.extend([_cue(segment.start, segment.end, text)] if text else [])
        elif words:
            out.extend(_word_cues(segment, words, max_chars))
        else:
            out.extend(_text_cues(segment, text, max_chars))
    return out


def clean_cue_text(text: str) -> str:
    """`text` on one line, safe inside a cue: whitespace collapsed, no `-->`."""
    text = " ".join(text.split())
    while "-->" in text:
        text = text.replace("-->", "->")
    return text


def compression_ratio(text: str) -> float:
    """UTF-8 size of `text` over its zlib-compressed size (Whisper's repetition check); 0.0 for no text."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def timed_segments(transcript: Transcript) -> tuple[Segment, ...]:
    """The transcript's segments; one over the whole audio when it has text but no segments."""
    if transcript.segments:
        return transcript.segments
    if transcript.text.strip():
        return (Segment(transcript.text, 0.0, transcript.duration, transcript.words),)
    return ()


def _segment_json(index: int, segment: Segment, transcript: Transcript) -> SegmentJson:
    # Token ids are kept per transcript, not per segment: only a segment that is the whole transcript gets them.
    whole = not transcript.segments
    return {
        "id": index,
        "seek": 0,
        "start": _seconds(segment.start),
        "end": _seconds(max(segment.end, segment.start)),
        "text": segment.text,
        "tokens": list(transcript.tokens) if whole else [],
        "temperature": 0.0,
        "avg_logprob": _avg_logprob(segment.words),
        "compression_ratio": compression_ratio(segment.text),
        "no_speech_prob": 0.0,
    }


def _avg_logprob(words: Sequence[Word]) -> float:
    if not words:
        return 0.0
    return math.fsum(_logprob(w.confidence) for w in words) / len(words)


def _logprob(confidence: float) -> float:
    return math.log(min(max(confidence, _MIN_CONFIDENCE), 1.0))


def _seconds(seconds: float) -> float:
    return milliseconds(seconds) / 1000


def _cue(start: float, end: float, text: str) -> Cue:
    start_ms = milliseconds(start)
    return Cue(start_ms, max(milliseconds(end), start_ms), text)


def _word_cues(segment: Segment, words: Sequence[Word], max_chars: int) -> Iterable[Cue]:
    groups = _pack([clean_cue_text(w.word) for w in words], max_chars)
    first = 0
    for n, group in enumerate(groups):
        last = first + len(group) - 1
        start = segment.start if n == 0 else words[first].start
        end = segment.end if n == len(groups) - 1 else words[last].end
        yield _cue(start, end, " ".join(group))
        first = last + 1


def _text_cues(segment: Segment, text: str, max_chars: int) -> Iterable[Cue]:
    # No word times: share the segment's span out in proportion to the characters of each piece.
    span, total = max(segment.end - segment.start, 0.0), len(text)
    done = 0
    for group in _pack(text.split(" "), max_chars):
        piece = " ".join(group)
        start = segment.start + span * done / total
        done = min(done + len(piece) + 1, total)
        yield _cue(start, segment.start + span * done / total, piece)


def _pack(words: Sequence[str], max_chars: int) -> list[list[str]]:
    """Greedy runs of `words` whose space-joined length stays within `max_chars` (one word may exceed it)."""
    groups: list[list[str]] = []
    length = 0
    for word in words:
        if groups and length + 1 + len(word) <= max_chars:
            groups[-1].append(word)
            length += 1 + len(word)
        else:
            groups.append([word])
            length = len(word)
    return groups


def _vtt_escape(text: str) -> str:
    # WebVTT reads "<" as a tag and "&" as an entity; ">" is escaped too, as the spec's serialiser does.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
