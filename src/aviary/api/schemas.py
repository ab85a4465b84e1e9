"""Request forms and response bodies of the HTTP API, seed-compatible and OpenAI-compatible.

Forms are parsed by `api.uploads` (streamed, size-capped) and validated here with the same pydantic
rules and error shapes FastAPI would apply to `Form()` parameters; `multipart_body` writes them
into the OpenAPI schema so `/docs` shows every field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from aviary.api.uploads import Form, Upload

__all__ = [
    "AsyncForm",
    "ErrorResponse",
    "ModelList",
    "ModelObject",
    "OpenAIForm",
    "SeedForm",
    "SeedResult",
    "multipart_body",
    "validate_form",
]


_Model = TypeVar("_Model", bound=BaseModel)


class SeedForm(BaseModel):
    """The fields of `POST /transcribe` (and, later, `/transcribe/async`)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(default="parakeet", description="`parakeet`, `canary`, or a registry name.")
    language: str | None = Field(
        default=None, description="Spoken language. Canary: checked against its languages, default `en`."
    )
    include_timestamps: bool = Field(default=True, description="Return sentence segments with start and end times.")
    include_words: bool = Field(default=False, description="Also return every word with its times and confidence.")


class AsyncForm(SeedForm):
    """The fields of `POST /transcribe/async`: those of `/transcribe`, and where to send the job's events."""

    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="POST job.completed / job.failed / job.cancelled here, signed (Standard Webhooks).",
    )


class OpenAIForm(BaseModel):
    """The fields of `POST /v1/audio/transcriptions` and `/v1/audio/translations`."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="A registry name or alias; `whisper-1` and other OpenAI names mean the default.")
    language: str | None = Field(
        default=None, description="ISO-639-1 code of the spoken language (Canary needs it to translate)."
    )
    prompt: str | None = Field(default=None, description="Accepted for compatibility; these models take no prompt.")
    response_format: str = Field(default="json", description="json, text, srt, verbose_json or vtt.")
    temperature: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Accepted for compatibility; decoding is greedy."
    )
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default_factory=lambda: ["segment"],  # type: ignore[arg-type]  # mypy cannot narrow the list literal
        description="verbose_json: `word`, `segment` or both.",
    )
    stream: bool = Field(default=False, description="Send `transcript.text.delta` and `.done` server-sent events.")
    include: list[Literal["logprobs"]] = Field(
        default_factory=list,
        description="`logprobs`: each word's log-probability (json, and the streamed events).",
    )

    @field_validator("timestamp_granularities", "include", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        """A single value (sent without `[]`) is a list of one."""
        return [value] if isinstance(value, str) else value


class SeedSegment(BaseModel):
    """One sentence-like span."""

    start: float
    end: float
    text: str


class SeedWord(BaseModel):
    """One word, when `include_words` is set."""

    word: str
    start: float
    end: float
    confidence: float


class SeedResult(BaseModel):
    """The original server's transcription result, with Aviary's additions (`duration`, `words`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "text": "Hello there. How are you?",
                    "segments": [
                        {"start": 0.0, "end": 0.96, "text": "Hello there."},
                        {"start": 1.2, "end": 2.08, "text": "How are you?"},
                    ],
                    "filename": "greeting.mp3",
                    "timestamp": "2026-11-25T20:00:00.123456+00:00",
                    "model": "parakeet",
                    "language": None,
                    "duration": 2.4,
                    "words": None,
                }
            ]
        }
    )

    text: str
    segments: list[SeedSegment]
    filename: str
    timestamp: str = Field(description="When the transcription finished (ISO 8601, UTC).")
    model: str = Field(description="The model as requested.")
    language: str | None
    duration: float = Field(description="Seconds of audio transcribed.")
    words: list[SeedWord] | None = Field(default=None, description="Only when `include_words` is set.")


class ModelObject(BaseModel):
    """OpenAI's Model object."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """OpenAI's ListModelsResponse."""

    object: Literal["list"] = "list"
    data: list[ModelObject]


class ErrorDetail(BaseModel):
    """OpenAI's Error object, with Aviary's stable `code`."""

    message: str
    type: str
    param: str | None
    code: str


class ErrorResponse(BaseModel):
    """Every error body: `detail` for the seed's clients, `error` for OpenAI's SDKs."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "The file is not a supported audio or video format.",
                    "error": {
                        "message": "The file is not a supported audio or video format.",
                        "type": "invalid_request_error",
                        "param": "file",
                        "code": "unsupported_media",
                    },
                }
            ]
        }
    )

    detail: Any
    error: ErrorDetail


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route's error statuses, each with the one error body."""
    return {status: {"model": ErrorResponse, "description": text} for status, text in descriptions.items()}


def validate_form(model: type[_Model], form: Form, *, file_field: str = "file") -> tuple[_Model, Upload]:
    """`form`'s fields as `model`, and its file; empty values mean the default, as in FastAPI's form parsing.

    Raises:
        RequestValidationError: a field is invalid or the file is missing, in FastAPI's shape.
    """
    values = {name: value for name, value in form.values().items() if value not in ("", [])}
    errors: list[dict[str, Any]] = []
    if form.file is None:
        errors.append({"type": "missing", "loc": ("body", file_field), "msg": "Field required", "input": None})
    try:
        parsed = model.model_validate(values)
    except ValidationError as exc:
        errors.extend({**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False))
    if errors or form.file is None:
        raise RequestValidationError(errors)
    return parsed, form.file


def multipart_body(model: type[BaseModel], *, file_field: str = "file") -> dict[str, Any]:
    """The OpenAPI `requestBody` of a multipart form with `model`'s fields and a required file."""
    schema = model.model_json_schema()
    properties = {
        file_field: {"type": "string", "format": "binary", "description": "The audio or video file."},
        **schema.get("properties", {}),
    }
    body = {"type": "object", "properties": properties, "required": [file_field, *schema.get("required", [])]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}}}
