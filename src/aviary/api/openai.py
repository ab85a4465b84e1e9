"""The OpenAI-compatible API: `/v1/audio/transcriptions`, `/v1/audio/translations`, `/v1/models`.

Clients of OpenAI's audio API work by changing only the base URL. Bodies follow the official schemas
(`spec/openai-audio-schemas.yaml`): `json`, `verbose_json`, and `text`/`srt`/`vtt` as plain bodies.
`whisper-1` and OpenAI's other transcription model names mean the default model while
`openai_model_aliases` is on (on `/translations`, the `canary` alias when the default cannot
translate, as Parakeet cannot); any other unknown model is 404 `model_not_found`. `prompt` and
`temperature` are accepted and unused (greedy decoding, no prompting). Translations go to English,
and Canary needs the spoken `language` to translate (it does not detect it).

`include[]=logprobs` adds `logprobs` to `json` bodies and to the streamed events: one entry per word
(these models keep confidences per word), the natural log of the word's confidence.

`stream=true` answers with server-sent events: one `transcript.text.delta` per segment, sent as
each chunk of long audio is transcribed, then `transcript.text.done` with the whole text. The first
chunk is awaited before the response starts, so an unusable file is still a 4xx; an error after
that ends the stream with an `error` event (OpenAI's error object).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from typing import TYPE_CHECKING, Final

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from aviary.api.errors import OPENAI_PREFIX, error_body, status_of
from aviary.api.schemas import ModelList, ModelObject, OpenAIForm, error_responses, multipart_body, validate_form
from aviary.api.transcribe import UPLOAD_ERRORS, admitted_upload
from aviary.api.uploads import client_gone
from aviary.engine.registry import KNOWN
from aviary.errors import AviaryError, InvalidOptionError, ModelNotFoundError
from aviary.formats import all_words, media_type, parse_format, render, timed_segments, word_logprobs
from aviary.types import Task, TranscribeOptions, language_code

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from aviary.api.service import Service
    from aviary.engine.base import ModelInfo
    from aviary.types import Transcript

router = APIRouter(prefix="/v1")
logger = logging.getLogger(__name__)

OPENAI_MODELS: Final = frozenset(
    {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize"}
)
"""OpenAI's audio model names, which mean the default model while `openai_model_aliases` is on."""
_LANGUAGE: Final = re.compile(r"[a-z]{2,3}")
_STREAMABLE: Final = frozenset({"json", "text"})


def _responses() -> dict[int | str, dict[str, object]]:
    text: dict[str, object] = {"schema": {"type": "string"}}
    content = {"application/json": {}, "text/plain": text, "text/vtt": text, "text/event-stream": text}
    ok: dict[str, object] = {"description": "The transcript in `response_format`", "content": content}
    errors = error_responses(
        {
            400: "A missing file, an invalid field, an unknown language, or media that cannot be used "
            "(invalid_request, invalid_option, empty_file, unsupported_media, invalid_audio, decode_timeout, "
            "unsupported_language, unsupported_task)",
            404: "model_not_found",
            **UPLOAD_ERRORS,
        }
    )
    return {**errors, 200: ok}


@router.post(
    "/audio/transcriptions",
    summary="Transcribe audio (OpenAI-compatible)",
    responses=_responses(),
    openapi_extra=multipart_body(OpenAIForm),
)
async def transcriptions(request: Request) -> Response:
    """Transcribe `file` into its own language."""
    return await _run(request, "transcribe")


@router.post(
    "/audio/translations",
    summary="Translate audio into English (OpenAI-compatible)",
    responses=_responses(),
    openapi_extra=multipart_body(OpenAIForm),
)
async def translations(request: Request) -> Response:
    """Transcribe `file` into English."""
    return await _run(request, "translate")


@router.get(
    "/models",
    summary="Models this server can serve",
    response_model=ModelList,
    responses=error_responses({401: "invalid_api_key (when API keys are configured)"}),
)
async def list_models(request: Request) -> ModelList:
    """The default model, the aliases, the registry names, and OpenAI's names while they are aliases too.

    Offline, only what is on this machine: a registry model that is not cached (or an alias of one) is left out.
    """
    service: Service = request.app.state.service
    openai_names = sorted(OPENAI_MODELS) if service.settings.openai_model_aliases else []
    names = dict.fromkeys([service.settings.model, *service.settings.aliases, *KNOWN, *openai_names])
    servable = await anyio.to_thread.run_sync(lambda: [name for name in names if _servable(service, name)])
    return ModelList(data=[_model(name, service.started) for name in servable])


def _servable(service: Service, name: str) -> bool:
    """Whether a request naming `name` can be served now (offline: from files on this machine)."""
    from huggingface_hub import constants

    target = service.settings.aliases.get(name, name)
    if target not in KNOWN or not (service.settings.offline or constants.HF_HUB_OFFLINE):
        return True
    registry = service.registry
    return registry.is_cached(registry.resolve(target))


@router.get(
    "/models/{model_id:path}",
    summary="One model",
    response_model=ModelObject,
    responses=error_responses({401: "invalid_api_key (when API keys are configured)", 404: "model_not_found"}),
)
async def get_model(request: Request, model_id: str) -> ModelObject:
    """The model `model_id`, or 404 `model_not_found`."""
    service: Service = request.app.state.service
    if model_id in OPENAI_MODELS and service.settings.openai_model_aliases:
        return _model(model_id, service.started)
    return _model(service.api_model(model_id), service.started)


def _model(name: str, created: int) -> ModelObject:
    """`created` is when this server began serving: models here have no publication date to report."""
    owner = "nvidia" if name in KNOWN or name in {"parakeet", "canary"} else "aviary"
    return ModelObject(id=name, created=created, owned_by=owner)


async def _run(request: Request, task: Task) -> Response:
    async with contextlib.AsyncExitStack() as stack:
        service, form = await stack.enter_async_context(admitted_upload(request))
        fields, upload = validate_form(OpenAIForm, form)
        fmt = parse_format(fields.response_format)
        if fields.stream and fmt not in _STREAMABLE:
            raise InvalidOptionError(option="stream", value=True, expected=f"false with response_format {fmt}")
        name = await _model_for(service, fields.model, task)
        engine, options = await service.engine_for(name, lambda info: _options(info, fields, task), called=fields.model)
        if fields.stream:
            parts = service.transcribe_parts(engine, upload.path, options)
            first = await anext(parts)  # errors before the first chunk keep their status
            events = _events(first, parts, stack.pop_all(), logprobs="logprobs" in fields.include)
            return StreamingResponse(events, media_type="text/event-stream")
        transcript = await service.transcribe(engine, upload.path, options, disconnected=lambda: client_gone(request))
    logprobs = "logprobs" in fields.include
    body = render(transcript, fmt, task=task, granularities=fields.timestamp_granularities, logprobs=logprobs)
    return Response(body, media_type=media_type(fmt))


async def _model_for(service: Service, requested: str, task: Task) -> str:
    """The model `requested` names; OpenAI's names translate with the `canary` alias when the default cannot."""
    name = _model_name(service, requested)
    if task == "translate" and requested in OPENAI_MODELS:
        info = service.registry.describe(name) or (await service.engine(name)).info
        if not info.translation:
            return service.api_model("canary")
    return name


def _model_name(service: Service, requested: str) -> str:
    if requested in OPENAI_MODELS:
        if not service.settings.openai_model_aliases:
            raise ModelNotFoundError(requested)
        return service.settings.model
    return service.api_model(requested)


def _options(model: ModelInfo, fields: OpenAIForm, task: Task) -> TranscribeOptions:
    language = language_code(fields.language) if fields.language else None
    if language is not None and not _LANGUAGE.fullmatch(language):
        raise InvalidOptionError(option="language", value=fields.language, expected="an ISO-639-1 code such as 'en'")
    if model.family == "aed" and language is None:
        if task == "translate":
            raise InvalidOptionError(
                option="language", value=None, expected="the spoken language: Canary needs it to translate"
            )
        language = "en"
    if task == "translate":
        return TranscribeOptions(language=language, task="translate", target_language="en")
    return TranscribeOptions(language=language)


async def _events(
    first: tuple[bool, Transcript],
    rest: AsyncGenerator[tuple[bool, Transcript]],
    owned: contextlib.AsyncExitStack,
    *,
    logprobs: bool,
) -> AsyncIterator[str]:
    """Deltas for each chunk's segments as they come, then the whole text (with `logprobs` if asked).

    `owned` (the upload, the request's place) is released when the stream ends or the client leaves.
    """
    async with owned, contextlib.aclosing(rest):
        sent = False
        item: tuple[bool, Transcript] | None = first
        while item is not None:
            last, transcript = item
            if last:
                done: dict[str, object] = {"type": "transcript.text.done", "text": transcript.text}
                if logprobs:
                    done["logprobs"] = word_logprobs(all_words(transcript))
                yield _event(done)
                return
            for segment in timed_segments(transcript):
                delta: dict[str, object] = {
                    "type": "transcript.text.delta",
                    "delta": (" " if sent else "") + segment.text,
                }
                if logprobs:
                    delta["logprobs"] = word_logprobs(segment.words, first=not sent)
                yield _event(delta)
                sent = True
            try:
                item = await anext(rest)
            except AviaryError as exc:
                logger.warning("a streamed transcription failed after its first chunk: [%s] %s", exc.code, exc)
                body = error_body(str(exc), exc.code, status_of(exc, OPENAI_PREFIX), param=exc.param)
                yield f"data: {json.dumps({'type': 'error', 'error': body['error']}, ensure_ascii=False)}\n\n"
                return


def _event(data: dict[str, object]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
