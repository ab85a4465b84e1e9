"""The original server's `POST /transcribe`: same form fields, checks in the same order, same result.

The seed checked the model, then the language, then the file; Aviary keeps that order (after the
body is read and the form validated, as FastAPI did). Parakeet echoes any `language` back as given;
Canary checks it against its languages and defaults to English. Words (with confidences) are added
when `include_words` is set; segment text is always filled in.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

from fastapi import APIRouter, Request

from aviary.api.schemas import SeedForm, SeedResult, error_responses, multipart_body, validate_form
from aviary.api.uploads import client_gone, receive_form
from aviary.formats import to_seed
from aviary.types import TranscribeOptions, language_code

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

    from aviary.api.service import Service
    from aviary.api.uploads import Form
    from aviary.config import Settings
    from aviary.engine.base import ModelInfo
    from aviary.types import Transcript

router = APIRouter()

UPLOAD_ERRORS: Final = {
    401: "invalid_api_key (when API keys are configured)",
    408: "upload_timeout: nothing of the upload arrived for AVIARY_UPLOAD_IDLE_SECONDS",
    413: "payload_too_large or audio_too_long",
    500: "inference_failed, or internal_error with a request id",
    503: "server_busy (with Retry-After) or model_unavailable",
}
"""What every route that takes an upload may answer, besides its own 4xx for bad input."""
ERRORS: Final = error_responses(
    {
        400: "Unknown model or language, or media that cannot be used (empty_file, unsupported_media, "
        "invalid_audio, decode_timeout, model_not_found, unsupported_language, invalid_request)",
        **UPLOAD_ERRORS,
        422: "A missing file or an invalid field (FastAPI's detail list)",
    }
)
"""The seed's upload routes: `/transcribe` and `/transcribe/async`."""


@router.post(
    "/transcribe",
    summary="Transcribe an uploaded file",
    response_model=SeedResult,
    response_model_exclude_none=False,
    responses=ERRORS,
    openapi_extra=multipart_body(SeedForm),
)
async def transcribe(request: Request) -> SeedResult:
    """Transcribe the `file` field with `model`; segments unless `include_timestamps` is false."""
    async with admitted_upload(request) as (service, form):
        fields, upload = validate_form(SeedForm, form)
        engine, options = await service.engine_for(
            service.api_model(fields.model), lambda info: seed_options(info, fields.language)[0]
        )
        language = seed_options(engine.info, fields.language)[1]
        transcript = await service.transcribe(engine, upload.path, options, disconnected=lambda: client_gone(request))
    return seed_result(transcript, fields, filename=upload.filename, language=language)


@asynccontextmanager
async def admitted_upload(request: Request) -> AsyncIterator[tuple[Service, Form]]:
    """The body read into a form, then a place in the queue; the upload is removed on exit.

    A request is refused (503) before its body is read when the queue is full as it arrives, and
    again once it is read if the queue filled meanwhile; an upload in progress holds no place.
    """
    service: Service = request.app.state.service
    service.check_room()
    async with received_form(request, service.settings) as form:
        with service.admit():
            yield service, form


def received_form(request: Request, settings: Settings) -> AbstractAsyncContextManager[Form]:
    """`request`'s multipart body within the settings' bounds: upload size, directory, idle wait."""
    return receive_form(
        request,
        limit=settings.max_upload_bytes,
        directory=settings.upload_dir,
        idle_seconds=settings.upload_idle_seconds,
    )


def seed_options(model: ModelInfo, language: str | None) -> tuple[TranscribeOptions, str | None]:
    """The options for the seed's `language` field, and the language the result reports."""
    if model.family == "aed":  # Canary: the language is the prompt's source and target ("de-DE" is "de")
        language = language_code(language) if language else "en"
        return TranscribeOptions(language=language), language
    return TranscribeOptions(), language  # Parakeet: detects the language; the field is echoed back


def seed_result(transcript: Transcript, fields: SeedForm, *, filename: str, language: str | None) -> SeedResult:
    """The seed's result body for `transcript`."""
    body = to_seed(
        transcript,
        filename=filename,
        model=fields.model,
        language=language,
        timestamps=fields.include_timestamps,
        words=fields.include_words,
    )
    return SeedResult.model_validate(body)
