"""The OpenAI-compatible API against a real uvicorn process, driven by the official `openai` SDK."""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any, Literal

import av
import jsonschema
import numpy as np
import openai
import pytest
import srt
import webvtt

from tests.support.fixtures import AUDIO, golden
from tests.support.media import ENCODINGS, encode
from tests.support.openai_schemas import validate
from tools.fixtures import speech

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import Api

OGG = next(e for e in ENCODINGS if e.name == "ogg-opus")


@pytest.fixture(scope="module")
def client(api: Api) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key="sk-anything", max_retries=0)


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh utterance (held-out voice) as an Opus file, and its words."""
    spec = speech.random_spec(np.random.default_rng(201), "en", heldout=True)
    path = tmp_path_factory.mktemp("openai") / "speech.ogg"
    path.write_bytes(encode(speech.synthesize(spec), speech.SAMPLE_RATE, OGG))
    return path, spec.text


def test_json_is_the_default_and_whisper_1_means_the_default_model(
    client: openai.OpenAI, spoken: tuple[Path, str]
) -> None:
    path, text = spoken
    with path.open("rb") as file:
        result = client.audio.transcriptions.create(model="whisper-1", file=file)
    assert result.text == text
    validate("CreateTranscriptionResponseJson", result.model_dump(exclude_unset=True))
    assert result.usage is not None
    assert result.usage.type == "duration"
    with av.open(str(path)) as container:
        assert container.duration is not None
        assert result.usage.seconds == pytest.approx(container.duration / 1_000_000, abs=0.05)


@pytest.mark.parametrize(
    ("granularities", "schema_keys"),
    [
        ([], {"segments"}),
        (["word"], {"words"}),
        (["segment"], {"segments"}),
        (["word", "segment"], {"words", "segments"}),
    ],
)
def test_verbose_json_follows_the_granularities(
    client: openai.OpenAI,
    spoken: tuple[Path, str],
    granularities: list[Literal["word", "segment"]],
    schema_keys: set[str],
) -> None:
    path, text = spoken
    with path.open("rb") as file:
        result = client.audio.transcriptions.create(
            model="parakeet",
            file=file,
            response_format="verbose_json",
            timestamp_granularities=granularities,
        )
    body = result.model_dump(exclude_unset=True)
    validate("CreateTranscriptionResponseVerboseJson", body)
    assert {"words", "segments"} & set(body) == schema_keys
    assert (body["text"], body["task"]) == (text, "transcribe")
    for word in body.get("words", []):
        assert 0 <= word["start"] <= word["end"] <= body["duration"]
    if "words" in body:
        assert " ".join(w["word"] for w in body["words"]) == text


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_and_subtitles_come_back_as_strings(
    client: openai.OpenAI, spoken: tuple[Path, str], fmt: str, tmp_path: Path
) -> None:
    path, text = spoken
    with path.open("rb") as file:
        result = client.audio.transcriptions.create(model="whisper-1", file=file, response_format=fmt)  # type: ignore[call-overload]
    assert isinstance(result, str)
    if fmt == "text":
        assert result == text + "\n"
    elif fmt == "srt":
        assert " ".join(cue.content for cue in srt.parse(result)) == text
    else:
        (tmp_path / "out.vtt").write_text(result, encoding="utf-8")
        assert " ".join(cue.text for cue in webvtt.read(str(tmp_path / "out.vtt")).captions) == text


def test_streaming_sends_deltas_then_the_whole_text(client: openai.OpenAI, spoken: tuple[Path, str]) -> None:
    path, text = spoken
    with path.open("rb") as file:
        events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=file, stream=True))
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done"
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == text  # type: ignore[union-attr]
    for event in events:
        name = "TranscriptTextDoneEvent" if event.type == "transcript.text.done" else "TranscriptTextDeltaEvent"
        validate(name, event.model_dump(exclude_unset=True))


def test_logprobs_come_per_word_in_json_and_in_the_stream(client: openai.OpenAI, spoken: tuple[Path, str]) -> None:
    path, text = spoken
    with path.open("rb") as file:
        result = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=file, include=["logprobs"])
    validate("CreateTranscriptionResponseJson", result.model_dump(exclude_unset=True))
    assert result.logprobs is not None
    assert "".join(p.token or "" for p in result.logprobs) == text
    assert len(result.logprobs) == len(text.split())
    assert all(p.logprob is not None and p.logprob <= 0.0 for p in result.logprobs)
    assert [bytes(int(b) for b in p.bytes or []).decode() for p in result.logprobs] == [
        p.token for p in result.logprobs
    ]
    with path.open("rb") as file:
        events = list(
            client.audio.transcriptions.create(model="whisper-1", file=file, include=["logprobs"], stream=True)
        )
    deltas, done = events[:-1], events[-1]
    for event in deltas:
        validate("TranscriptTextDeltaEvent", event.model_dump(exclude_unset=True))
        assert "".join(p.token or "" for p in event.logprobs or []) == event.delta  # type: ignore[union-attr]
    assert done.type == "transcript.text.done"
    validate("TranscriptTextDoneEvent", done.model_dump(exclude_unset=True))
    assert [p.model_dump() for p in done.logprobs or []] == [p.model_dump() for p in result.logprobs]
    with path.open("rb") as file:
        plain = client.audio.transcriptions.create(model="whisper-1", file=file)
    assert plain.logprobs is None


def test_translation_into_english_with_canary(client: openai.OpenAI) -> None:
    expected = next(
        c
        for c in golden("canary-digits")["cases"]
        if c["clip"] == "canary-de-2.wav" and c["target_lang"] == "en" and c["pnc"]
    )
    with (AUDIO / "canary-de-2.wav").open("rb") as file:
        result = _translate(
            client, model="canary", file=file, response_format="verbose_json", extra_body={"language": "de"}
        )
    body = result.model_dump(exclude_unset=True)
    validate("CreateTranslationResponseVerboseJson", body)
    assert body["text"] == expected["text"]
    with (AUDIO / "canary-de-2.wav").open("rb") as file:
        plain = _translate(client, model="canary", file=file, extra_body={"language": "de-DE"})  # a locale: German
    assert plain.text == expected["text"]
    with (AUDIO / "canary-de-2.wav").open("rb") as file:  # the default (Parakeet) cannot translate: OpenAI's name
        aliased = _translate(client, model="whisper-1", file=file, extra_body={"language": "de"})  # means canary
    assert aliased.text == expected["text"]


def _translate(client: openai.OpenAI, **kwargs: Any) -> Any:  # noqa: ANN401  (the SDK's overloads)
    """`audio.translations.create`, which this SDK marks deprecated (OpenAI's own API still serves it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return client.audio.translations.create(**kwargs)


def test_models_are_listed_and_unknown_ones_are_404(client: openai.OpenAI) -> None:
    listed = client.models.list()
    ids = [model.id for model in listed.data]
    assert {"parakeet", "canary", "whisper-1", "gpt-4o-transcribe"} <= set(ids)
    assert not {"parakeet-tdt-0.6b-v2", "canary-1b-v2"} & set(ids)  # offline and not cached: they cannot be served
    validate("ListModelsResponse", listed.model_dump(exclude_unset=True))
    model = client.models.retrieve("parakeet")
    validate("Model", model.model_dump(exclude_unset=True))
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError) as error:
        client.models.retrieve("gpt-5")
    assert error.value.code == "model_not_found"


def _error(exc: openai.APIStatusError) -> dict[str, object]:
    body = exc.response.json()
    validate("ErrorResponse", {"error": body["error"]})
    return dict(body["error"])


def test_bad_requests_are_400_with_openai_errors(client: openai.OpenAI, spoken: tuple[Path, str]) -> None:
    path, _ = spoken
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"model": "whisper-1", "file": ("empty.wav", b"")}, "empty_file", "file"),
        ({"model": "whisper-1", "file": ("a.wav", b"not audio\n" * 50)}, "unsupported_media", "file"),
        (
            {"model": "whisper-1", "file": path.read_bytes(), "response_format": "docx"},
            "invalid_option",
            "response_format",
        ),
        ({"model": "whisper-1", "file": path.read_bytes(), "language": "english!"}, "invalid_option", "language"),
        ({"model": "whisper-1", "file": path.read_bytes(), "temperature": 3}, "invalid_request", "temperature"),
    ]
    for kwargs, code, param in cases:
        with pytest.raises(openai.BadRequestError) as error:
            client.audio.transcriptions.create(**kwargs)
        body = _error(error.value)
        assert (body["code"], body["param"], body["type"]) == (code, param, "invalid_request_error"), kwargs
    with pytest.raises(openai.BadRequestError) as error:
        _translate(client, model="parakeet", file=path.read_bytes())
    assert _error(error.value)["code"] == "unsupported_task"
    with pytest.raises(openai.BadRequestError) as error:
        _translate(client, model="canary", file=path.read_bytes())
    body = _error(error.value)
    assert (body["code"], body["param"]) == ("invalid_option", "language")
    assert str(body["message"]).startswith("Missing language: expected the spoken language")
    with pytest.raises(openai.NotFoundError) as missing:
        client.audio.transcriptions.create(model="whisper-2", file=path.read_bytes())
    assert _error(missing.value)["code"] == "model_not_found"


def test_an_unknown_route_and_method_keep_the_error_shape(api: Api) -> None:
    import requests

    response = requests.get(f"{api.url}/v1/nothing", timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    response = requests.get(f"{api.url}/transcribe", timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (405, "method_not_allowed")
    with pytest.raises(jsonschema.ValidationError):
        validate("ErrorResponse", {"error": json.loads('{"message": 1}')})
