"""Transcripts rendered as text, json, verbose_json, SRT and WebVTT, checked by real parsers and OpenAI's schema."""

from __future__ import annotations

import html
import json
import math
import re
import zlib
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import pytest
import srt
import webvtt
import yaml

from aviary.errors import InvalidOptionError
from aviary.formats import (
    FORMATS,
    MAX_CUE_CHARS,
    UNKNOWN_LANGUAGE,
    Cue,
    Granularity,
    ResponseFormat,
    clean_cue_text,
    compression_ratio,
    cues,
    language_name,
    media_type,
    milliseconds,
    parse_format,
    render,
    timestamp,
    to_json,
    to_srt,
    to_text,
    to_verbose_json,
    to_vtt,
    word_logprobs,
)
from aviary.types import Segment, Transcript, Word

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# --- OpenAI's schemas -------------------------------------------------------------------------------------------
# The structural part (type, properties, required, items, $ref) of components.schemas in openai/openai-openapi
# openapi.yaml at commit f85dbe22, as extracted to spec/openai-audio-schemas.yaml. The drift test below checks
# this copy against that file wherever the file is present.
_OPENAI: dict[str, dict[str, Any]] = {
    "CreateTranscriptionResponseVerboseJson": {
        "type": "object",
        "properties": {
            "language": {"type": "string"},
            "duration": {"type": "number"},
            "text": {"type": "string"},
            "words": {"type": "array", "items": {"$ref": "#/components/schemas/TranscriptionWord"}},
            "segments": {"type": "array", "items": {"$ref": "#/components/schemas/TranscriptionSegment"}},
            "usage": {"$ref": "#/components/schemas/TranscriptTextUsageDuration"},
        },
        "required": ["language", "duration", "text"],
    },
    "CreateTranslationResponseVerboseJson": {
        "type": "object",
        "properties": {
            "language": {"type": "string"},
            "duration": {"type": "number"},
            "text": {"type": "string"},
            "segments": {"type": "array", "items": {"$ref": "#/components/schemas/TranscriptionSegment"}},
        },
        "required": ["language", "duration", "text"],
    },
    "CreateTranscriptionResponseJson": {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "languages": {"type": "array", "items": {"$ref": "#/components/schemas/TranscriptionLanguage"}},
            "logprobs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "token": {"type": "string"},
                        "logprob": {"type": "number"},
                        "bytes": {"type": "array", "items": {"type": "number"}},
                    },
                },
            },
            "usage": {"type": "object"},
        },
        "required": ["text"],
    },
    "TranscriptionSegment": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "seek": {"type": "integer"},
            "start": {"type": "number"},
            "end": {"type": "number"},
            "text": {"type": "string"},
            "tokens": {"type": "array", "items": {"type": "integer"}},
            "temperature": {"type": "number"},
            "avg_logprob": {"type": "number"},
            "compression_ratio": {"type": "number"},
            "no_speech_prob": {"type": "number"},
        },
        "required": [
            "id",
            "seek",
            "start",
            "end",
            "text",
            "tokens",
            "temperature",
            "avg_logprob",
            "compression_ratio",
            "no_speech_prob",
        ],
    },
    "TranscriptionWord": {
        "type": "object",
        "properties": {"word": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"}},
        "required": ["word", "start", "end"],
    },
    "TranscriptTextUsageDuration": {
        "type": "object",
        "properties": {"type": {"type": "string", "enum": ["duration"]}, "seconds": {"type": "number"}},
        "required": ["type", "seconds"],
    },
}
_STRUCTURAL = {"type", "properties", "required", "items", "enum", "$ref"}
_DESCRIPTIVE = {"description", "format", "title", "optional", "x-oaiMeta", "x-stainless-const", "example"}
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
}


def _conform(instance: object, schema: Mapping[str, Any], schemas: Mapping[str, Any], path: str = "$") -> None:
    """Assert that `instance` satisfies `schema`; fail on any keyword this small validator cannot judge."""
    if "$ref" in schema:
        _conform(instance, schemas[schema["$ref"].rsplit("/", 1)[-1]], schemas, path)
        return
    assert set(schema) <= _STRUCTURAL | _DESCRIPTIVE, f"{path}: cannot check {set(schema)}"
    if "type" in schema:
        assert _TYPES[schema["type"]](instance), f"{path}: {instance!r} is not of type {schema['type']}"
    if "enum" in schema:
        assert instance in schema["enum"], f"{path}: {instance!r} is not one of {schema['enum']}"
    if isinstance(instance, dict):
        missing = set(schema.get("required", ())) - set(instance)
        assert not missing, f"{path}: missing {missing}"
        for key, value in instance.items():
            if key in schema.get("properties", {}):
                _conform(value, schema["properties"][key], schemas, f"{path}.{key}")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            _conform(item, schema["items"], schemas, f"{path}[{i}]")


def _structure(schema: object) -> object:
    """The structural keywords of a schema, recursively (what `_OPENAI` keeps)."""
    if not isinstance(schema, dict):
        return schema
    kept = {k: v for k, v in schema.items() if k in _STRUCTURAL}
    if "properties" in kept:
        kept["properties"] = {name: _structure(sub) for name, sub in kept["properties"].items()}
    if "items" in kept:
        kept["items"] = _structure(kept["items"])
    return kept


# The official schemas, extracted from OpenAI's public openapi.yaml (provenance in the file's header).
SPEC_FILE = Path(__file__).resolve().parents[1] / "data" / "openai-audio-schemas.yaml"


# --- Transcripts ------------------------------------------------------------------------------------------------


def _words(text: str, start: float, step: float, confidence: float = 0.9) -> tuple[Word, ...]:
    return tuple(
        Word(w, round(start + i * step, 3), round(start + i * step + step * 0.8, 3), confidence)
        for i, w in enumerate(text.split())
    )


def _segment(text: str, start: float, step: float = 0.4, confidence: float = 0.9) -> Segment:
    words = _words(text, start, step, confidence)
    return Segment(text, words[0].start, words[-1].end, words)


def _transcript(*segments: Segment, language: str | None = "en", duration: float | None = None) -> Transcript:
    return Transcript(
        text=" ".join(s.text for s in segments),
        duration=duration if duration is not None else (segments[-1].end + 0.5 if segments else 0.0),
        language=language,
        words=tuple(w for s in segments for w in s.words),
        segments=segments,
        tokens=(11, 12, 13),
    )


TWO = _transcript(_segment("Hello there.", 0.32), _segment("General Kenobi!", 2.0))
LONG_TEXT = " ".join(f"word{i:02d}" for i in range(40))  # 279 characters: four cues of up to 84
LONG = _transcript(_segment(LONG_TEXT, 1.0, step=0.25))
UNTIMED = Transcript(text="Ein Satz ohne Zeiten.", duration=3.25, language="de", tokens=(5, 6, 7), timestamps=False)
EMPTY = Transcript(text="", duration=0.0)


def _srt_cues(body: str) -> list[tuple[int, int, str]]:
    subs = list(srt.parse(body))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    return [(s.start // timedelta(milliseconds=1), s.end // timedelta(milliseconds=1), s.content) for s in subs]


def _vtt_cues(body: str) -> list[tuple[int, int, str]]:
    assert body.startswith("WEBVTT\n\n")
    return [
        (c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), html.unescape(c.raw_text))
        for c in webvtt.from_string(body, strict=True).captions
    ]


# --- Format names and media types ------------------------------------------------------------------------------


def test_formats_are_openais_response_formats() -> None:
    assert set(FORMATS) == {"json", "text", "srt", "verbose_json", "vtt"}
    assert get_args(ResponseFormat) == FORMATS


@pytest.mark.parametrize("name", ["json", "text", "srt", "verbose_json", "vtt"])
def test_parse_format_accepts_every_format(name: str) -> None:
    assert parse_format(name) == name


@pytest.mark.parametrize("name", ["", "JSON", "xml", "verbose-json", "diarized_json"])
def test_parse_format_rejects_other_names(name: str) -> None:
    with pytest.raises(InvalidOptionError, match="response_format") as raised:
        parse_format(name)
    assert raised.value.code == "invalid_option"
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", "application/json"),
        ("verbose_json", "application/json"),
        ("text", "text/plain; charset=utf-8"),
        ("srt", "text/plain; charset=utf-8"),
        ("vtt", "text/vtt; charset=utf-8"),
    ],
)
def test_media_types_follow_openai(fmt: ResponseFormat, expected: str) -> None:
    assert media_type(fmt) == expected


# --- text and json ---------------------------------------------------------------------------------------------


def test_text_is_the_transcript_with_one_newline() -> None:
    assert to_text(TWO) == "Hello there. General Kenobi!\n"
    assert render(TWO, "text") == "Hello there. General Kenobi!\n"
    assert to_text(EMPTY) == "\n"


def test_json_is_the_text_and_the_seconds_used_and_keeps_unicode_unescaped() -> None:
    transcript = Transcript(text="Grüße aus Łódź — 日本語", duration=2.0004)
    expected = {"text": "Grüße aus Łódź — 日本語", "usage": {"type": "duration", "seconds": 2.0}}
    assert to_json(transcript) == expected
    body = render(transcript, "json")
    assert "Grüße aus Łódź — 日本語" in body
    assert json.loads(body) == expected
    _conform(json.loads(body), _OPENAI["CreateTranscriptionResponseJson"], _OPENAI)
    _conform(json.loads(body)["usage"], _OPENAI["TranscriptTextUsageDuration"], _OPENAI)


def test_json_logprobs_are_one_per_word_and_their_tokens_join_to_the_text() -> None:
    words = (Word("Grüße", 0.0, 0.5, 0.5), Word("aus", 0.5, 0.7, 1.0), Word("Łódź.", 0.7, 1.2, 0.0))
    transcript = Transcript("Grüße aus Łódź.", 1.2, "de", words, (Segment("Grüße aus Łódź.", 0.0, 1.2, words),))
    body = json.loads(render(transcript, "json", logprobs=True))
    _conform(body, _OPENAI["CreateTranscriptionResponseJson"], _OPENAI)
    logprobs = body["logprobs"]
    assert "".join(p["token"] for p in logprobs) == transcript.text
    assert [p["token"] for p in logprobs] == ["Grüße", " aus", " Łódź."]
    assert [bytes(p["bytes"]).decode() for p in logprobs] == ["Grüße", " aus", " Łódź."]
    assert logprobs[0]["logprob"] == pytest.approx(math.log(0.5))
    assert logprobs[1]["logprob"] == 0.0
    assert math.isfinite(logprobs[2]["logprob"])  # a zero confidence is clamped: JSON has no -inf
    assert "logprobs" not in json.loads(render(transcript, "json"))
    assert "logprobs" not in json.loads(render(transcript, "verbose_json", logprobs=True))  # json only, as OpenAI
    continued = word_logprobs(words[1:], first=False)
    assert [p["token"] for p in continued] == [" aus", " Łódź."]


# --- verbose_json ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "granularities", [("segment",), ("word",), ("word", "segment"), ()], ids=["segment", "word", "both", "none"]
)
@pytest.mark.parametrize("transcript", [TWO, LONG, UNTIMED, EMPTY], ids=["two", "long", "untimed", "empty"])
def test_verbose_json_matches_openais_schema(transcript: Transcript, granularities: tuple[Granularity, ...]) -> None:
    body = json.loads(render(transcript, "verbose_json", granularities=granularities))
    _conform(body, _OPENAI["CreateTranscriptionResponseVerboseJson"], _OPENAI)
    assert set(body) == {"task", "language", "duration", "text", "usage"} | {f"{g}s" for g in granularities}
    for segment in body.get("segments", []):
        assert set(segment) == set(_OPENAI["TranscriptionSegment"]["required"])


def test_verbose_json_segments_carry_honest_numbers() -> None:
    segment = Segment(
        "Hello there.",
        0.32,
        1.1234,
        (Word("Hello", 0.32, 0.6, 0.5), Word("there.", 0.64, 1.1234, 0.25)),
    )
    body = to_verbose_json(_transcript(segment, duration=1.5))
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert body["duration"] == 1.5
    assert body["text"] == "Hello there."
    assert "words" not in body
    assert body["segments"] == [
        {
            "id": 0,
            "seek": 0,
            "start": 0.32,
            "end": 1.123,
            "text": "Hello there.",
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": pytest.approx(-1.5 * math.log(2)),
            "compression_ratio": pytest.approx(len(b"Hello there.") / len(zlib.compress(b"Hello there."))),
            "no_speech_prob": 0.0,
        }
    ]


def test_verbose_json_numbers_segments_in_order() -> None:
    body = to_verbose_json(TWO)
    assert [s["id"] for s in body["segments"]] == [0, 1]
    assert [s["text"] for s in body["segments"]] == ["Hello there.", "General Kenobi!"]
    assert [(s["start"], s["end"]) for s in body["segments"]] == [(0.32, 1.04), (2.0, 2.72)]


def test_avg_logprob_stays_finite_for_zero_confidence() -> None:
    body = to_verbose_json(_transcript(_segment("never sure", 0.0, confidence=0.0)))
    assert body["segments"][0]["avg_logprob"] == pytest.approx(math.log(1e-10))
    json.dumps(body, allow_nan=False)


def test_avg_logprob_is_zero_without_words() -> None:
    body = to_verbose_json(_transcript(Segment("no words here", 0.0, 1.0)))
    assert body["segments"][0]["avg_logprob"] == 0.0


def test_verbose_json_words_only_when_asked() -> None:
    word_only: tuple[Granularity, ...] = ("word",)
    body = to_verbose_json(TWO, granularities=word_only)
    assert "segments" not in body
    assert body["words"] == [
        {"word": "Hello", "start": 0.32, "end": 0.64},
        {"word": "there.", "start": 0.72, "end": 1.04},
        {"word": "General", "start": 2.0, "end": 2.32},
        {"word": "Kenobi!", "start": 2.4, "end": 2.72},
    ]


def test_verbose_json_words_fall_back_to_the_segments_words() -> None:
    transcript = Transcript(text=TWO.text, duration=TWO.duration, language="en", segments=TWO.segments)
    body = to_verbose_json(transcript, granularities=("word", "segment"))
    assert [w["word"] for w in body["words"]] == ["Hello", "there.", "General", "Kenobi!"]
    assert len(body["segments"]) == 2


def test_verbose_json_for_a_model_without_timestamps_is_one_segment_over_the_audio() -> None:
    body = to_verbose_json(UNTIMED, granularities=("word", "segment"))
    assert body["language"] == "german"
    assert body["words"] == []
    assert [(s["start"], s["end"], s["text"], s["tokens"]) for s in body["segments"]] == [
        (0.0, 3.25, "Ein Satz ohne Zeiten.", [5, 6, 7])
    ]


def test_verbose_json_of_an_empty_transcript() -> None:
    body = to_verbose_json(EMPTY, granularities=("word", "segment"))
    assert body == {
        "task": "transcribe",
        "language": UNKNOWN_LANGUAGE,
        "duration": 0.0,
        "text": "",
        "usage": {"type": "duration", "seconds": 0.0},
        "words": [],
        "segments": [],
    }


def test_translate_task_matches_the_translation_schema() -> None:
    transcript = _transcript(_segment("I am translated.", 0.0), language="en")
    body = json.loads(render(transcript, "verbose_json", task="translate"))
    assert body["task"] == "translate"
    assert body["language"] == "english"
    _conform(body, _OPENAI["CreateTranslationResponseVerboseJson"], _OPENAI)


@pytest.mark.parametrize(
    ("code", "name"),
    [("en", "english"), ("de", "german"), ("sl", "slovenian"), ("pt-BR", "portuguese"), ("EN_us", "english")],
)
def test_language_names_follow_openai(code: str, name: str) -> None:
    assert language_name(code) == name


@pytest.mark.parametrize(("code", "name"), [("ja", "ja"), ("zz-Latn", "zz-Latn"), (None, "unknown"), ("", "unknown")])
def test_unknown_languages_pass_through(code: str | None, name: str) -> None:
    assert language_name(code) == name


def test_every_european_language_has_its_own_name() -> None:
    codes = ["bg", "cs", "da", "de", "el", "en", "es", "et", "fi", "fr", "hr", "hu", "it", "lt", "lv", "mt", "nl"]
    codes += ["pl", "pt", "ro", "ru", "sk", "sl", "sv", "uk"]
    names = {language_name(code) for code in codes}
    assert len(names) == 25
    assert all(re.fullmatch(r"[a-z]+", name) for name in names)


def test_compression_ratio_is_whispers() -> None:
    repetitive = "la " * 200
    assert compression_ratio(repetitive) == len(repetitive) / len(zlib.compress(repetitive.encode()))
    assert compression_ratio(repetitive) > 2.4  # Whisper's threshold for a hallucinated loop
    assert compression_ratio("Grüße") == len("Grüße".encode()) / len(zlib.compress("Grüße".encode()))
    assert compression_ratio("") == 0.0


def test_schema_copy_matches_the_spec_file() -> None:
    schemas = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))["components"]["schemas"]
    for name, copy in _OPENAI.items():
        assert _structure(schemas[name]) == copy, name
    for transcript in (TWO, UNTIMED, EMPTY):
        body = json.loads(render(transcript, "verbose_json", granularities=("word", "segment")))
        _conform(body, schemas["CreateTranscriptionResponseVerboseJson"], schemas)


# --- Timestamps --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "srt_time"),
    [
        (0.0, "00:00:00,000"),
        (0.0004, "00:00:00,000"),
        (0.0005, "00:00:00,001"),
        (1.9995, "00:00:02,000"),
        (1.9994, "00:00:01,999"),
        (59.9996, "00:01:00,000"),
        (3599.9995, "01:00:00,000"),
        (36_000.0, "10:00:00,000"),
        (39_599.999, "10:59:59,999"),
        (360_000.25, "100:00:00,250"),
        (-1.0, "00:00:00,000"),
        (math.nan, "00:00:00,000"),
    ],
)
def test_timestamps_round_once_then_split(seconds: float, srt_time: str) -> None:
    assert timestamp(milliseconds(seconds), ",") == srt_time
    assert timestamp(milliseconds(seconds), ".") == srt_time.replace(",", ".")


def test_timestamps_never_carry_a_thousand_milliseconds() -> None:
    pattern = re.compile(r"\d{2,}:[0-5]\d:[0-5]\d,\d{3}")
    for base in (0, 59, 3599, 35_999):
        for tenth_ms in range(9_980, 10_000):
            ms = milliseconds(base + tenth_ms / 10_000)
            stamp = timestamp(ms, ",")
            assert pattern.fullmatch(stamp), stamp
            assert stamp.split(",")[1] != "1000"
            assert ms in {base * 1000 + 998, base * 1000 + 999, base * 1000 + 1000}


# --- SRT and WebVTT ----------------------------------------------------------------------------------------------


def test_srt_round_trips_through_the_srt_parser() -> None:
    body = to_srt(TWO)
    assert body.startswith("1\n00:00:00,320 --> 00:00:01,040\nHello there.\n\n2\n")
    assert _srt_cues(body) == [(320, 1040, "Hello there."), (2000, 2720, "General Kenobi!")]
    assert render(TWO, "srt") == body


def test_vtt_round_trips_through_webvtt() -> None:
    body = to_vtt(TWO)
    assert body.startswith("WEBVTT\n\n00:00:00.320 --> 00:00:01.040\nHello there.\n\n")
    assert _vtt_cues(body) == [(320, 1040, "Hello there."), (2000, 2720, "General Kenobi!")]
    assert render(TWO, "vtt") == body


def test_empty_transcript_gives_files_without_cues() -> None:
    assert to_srt(EMPTY) == ""
    assert _srt_cues(to_srt(EMPTY)) == []
    assert to_vtt(EMPTY) == "WEBVTT\n\n"
    assert _vtt_cues(to_vtt(EMPTY)) == []


def test_transcript_without_timestamps_is_one_cue_over_the_audio() -> None:
    assert _srt_cues(to_srt(UNTIMED)) == [(0, 3250, "Ein Satz ohne Zeiten.")]
    assert _vtt_cues(to_vtt(UNTIMED)) == [(0, 3250, "Ein Satz ohne Zeiten.")]


def test_ten_hour_audio_keeps_exact_times() -> None:
    late = _segment("Still talking.", 36_000.0 + 59 * 60 + 58.5)
    transcript = _transcript(_segment("Start.", 0.0), late, duration=39_600.0)
    expected = [(0, 320, "Start."), (39_598_500, 39_599_220, "Still talking.")]
    assert _srt_cues(to_srt(transcript)) == expected
    assert _vtt_cues(to_vtt(transcript)) == expected
    assert "10:59:58,500 --> 10:59:59,220" in to_srt(transcript)


def test_hundred_hour_timestamps_parse() -> None:
    transcript = _transcript(Segment("Very late.", 360_000.0, 360_001.5))
    assert _srt_cues(to_srt(transcript)) == [(360_000_000, 360_001_500, "Very late.")]
    assert _vtt_cues(to_vtt(transcript)) == [(360_000_000, 360_001_500, "Very late.")]


def test_cue_times_round_at_the_half_millisecond() -> None:
    transcript = _transcript(Segment("Edge.", 1.9995, 59.9996))
    assert "00:00:02,000 --> 00:01:00,000" in to_srt(transcript)
    assert _vtt_cues(to_vtt(transcript)) == [(2000, 60_000, "Edge.")]


def test_cue_end_is_never_before_its_start() -> None:
    transcript = _transcript(Segment("Backwards.", 5.0, 4.0))
    assert cues(transcript) == [Cue(5000, 5000, "Backwards.")]
    assert _srt_cues(to_srt(transcript)) == [(5000, 5000, "Backwards.")]
    assert to_verbose_json(transcript)["segments"][0]["end"] == 5.0


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("a --> b", "a -> b"),
        ("a ---> b", "a -> b"),
        ("first\n\nsecond", "first second"),
        ("  spaced\tout \r\n ", "spaced out"),
        ("2\n00:00:01,000 --> 00:00:02,000", "2 00:00:01,000 -> 00:00:02,000"),
    ],
)
def test_cue_text_is_sanitised(text: str, clean: str) -> None:
    assert clean_cue_text(text) == clean
    transcript = _transcript(Segment(text, 1.0, 2.0), Segment("next", 3.0, 4.0))
    assert _srt_cues(to_srt(transcript)) == [(1000, 2000, clean), (3000, 4000, "next")]
    assert _vtt_cues(to_vtt(transcript)) == [(1000, 2000, clean), (3000, 4000, "next")]


def test_blank_segments_make_no_cue() -> None:
    transcript = _transcript(Segment(" \n ", 0.0, 1.0), Segment("real", 1.0, 2.0))
    assert _srt_cues(to_srt(transcript)) == [(1000, 2000, "real")]


def test_vtt_escapes_markup_characters() -> None:
    transcript = _transcript(Segment("Tom & Jerry <3 a>b", 0.0, 1.0))
    body = to_vtt(transcript)
    assert "Tom &amp; Jerry &lt;3 a&gt;b" in body
    assert _vtt_cues(body) == [(0, 1000, "Tom & Jerry <3 a>b")]
    assert _srt_cues(to_srt(transcript)) == [(0, 1000, "Tom & Jerry <3 a>b")]


def test_unicode_text_survives_every_format() -> None:
    text = "Grüße aus Łódź — naïve 日本語 🎙"
    transcript = _transcript(Segment(text, 0.5, 2.5), language="pl")
    assert _srt_cues(to_srt(transcript)) == [(500, 2500, text)]
    assert _vtt_cues(to_vtt(transcript)) == [(500, 2500, text)]
    assert json.loads(render(transcript, "verbose_json"))["segments"][0]["text"] == text
    assert json.loads(render(transcript, "verbose_json"))["language"] == "polish"
    assert to_text(transcript) == text + "\n"


# --- Long segments -----------------------------------------------------------------------------------------------


def _assert_tiles(pieces: Sequence[tuple[int, int, str]], start_ms: int, end_ms: int, text: str) -> None:
    """The cues cover the segment in order, each within the limit, and their texts rejoin to the segment's."""
    assert len(pieces) > 1
    assert all(len(t) <= MAX_CUE_CHARS for _, _, t in pieces)
    assert " ".join(t for _, _, t in pieces) == text
    assert pieces[0][0] == start_ms
    assert pieces[-1][1] == end_ms
    for (s1, e1, _), (s2, e2, _) in pairwise(pieces):
        assert s1 <= e1 <= s2 <= e2


def test_long_segment_splits_at_word_times() -> None:
    segment = LONG.segments[0]
    pieces = _srt_cues(to_srt(LONG))
    assert len(pieces) == 4
    _assert_tiles(pieces, 1000, milliseconds(segment.end), LONG_TEXT)
    last = -1
    for (_, end, text), (next_start, _, _) in pairwise(pieces):
        last += len(text.split())
        assert end == milliseconds(segment.words[last].end)
        assert next_start == milliseconds(segment.words[last + 1].start)
    assert _vtt_cues(to_vtt(LONG)) == pieces


def test_long_segment_without_words_shares_time_by_characters() -> None:
    transcript = _transcript(Segment(LONG_TEXT, 10.0, 37.9))
    pieces = _srt_cues(to_srt(transcript))
    _assert_tiles(pieces, 10_000, 37_900, LONG_TEXT)
    for start, end, text in pieces:
        share = (end - start) / (37_900 - 10_000)
        assert share == pytest.approx((len(text) + 1) / (len(LONG_TEXT) + 1), abs=0.01)
    assert _vtt_cues(to_vtt(transcript)) == pieces


def test_long_untimed_transcript_splits_over_the_audio() -> None:
    transcript = Transcript(text=LONG_TEXT, duration=60.0, timestamps=False)
    _assert_tiles(_srt_cues(to_srt(transcript)), 0, 60_000, LONG_TEXT)


def test_max_chars_is_adjustable_and_a_long_word_stays_whole() -> None:
    transcript = _transcript(_segment("aa bb cc dd extraordinarily ee", 0.0))
    assert [c.text for c in cues(transcript, max_chars=5)] == ["aa bb", "cc dd", "extraordinarily", "ee"]
    assert [c.text for c in cues(transcript, max_chars=MAX_CUE_CHARS)] == ["aa bb cc dd extraordinarily ee"]
    assert _srt_cues(to_srt(transcript, max_chars=5))[2] == (1600, 1920, "extraordinarily")
    assert len(_vtt_cues(to_vtt(transcript, max_chars=5))) == 4
