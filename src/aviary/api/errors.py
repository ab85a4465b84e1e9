"""The one place that turns errors into HTTP responses: status codes, stable codes, one body shape.

Every error body is `{"detail": message, "error": {"message", "type", "param", "code"}}`: the seed's
clients read `detail`, the OpenAI SDKs read `error`. Domain errors (`aviary.errors`) carry their
code; this module alone decides their status. Validation errors keep FastAPI's `detail` list (the
seed's clients got it for a missing `file`) and add `error`; on the OpenAI routes they are 400, as
OpenAI answers bad input. Anything unexpected is 500 `internal_error` with a request id that is
also in the log next to the traceback; its text never reaches the client.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Final

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from aviary.errors import (
    AudioTooLongError,
    AuthenticationError,
    AviaryError,
    DecoderUnavailableError,
    IdempotencyConflictError,
    InferenceError,
    JobFailedError,
    JobNotFoundError,
    ModelError,
    ModelNotFoundError,
    PayloadTooLargeError,
    ServerBusyError,
    UploadTimeoutError,
)

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.types import Scope

__all__ = ["OPENAI_PREFIX", "error_body", "install", "route_path", "status_of"]

logger = logging.getLogger("aviary.api")

OPENAI_PREFIX: Final = "/v1/"
"""Routes under this prefix answer as OpenAI does (unknown model 404, bad input 400)."""

_HTTP_CODES: Final = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media",
    422: "invalid_request",
}


def status_of(error: AviaryError, path: str) -> int:
    """The HTTP status of a domain error raised while serving `path`."""
    status = 400  # RequestError and AudioError: the request or its media cannot be used
    if isinstance(error, (AudioTooLongError, PayloadTooLargeError)):
        status = 413
    elif isinstance(error, AuthenticationError):
        status = 401
    elif isinstance(error, UploadTimeoutError):
        status = 408
    elif isinstance(error, ModelNotFoundError):
        # The seed answers 400 for a model it does not know; OpenAI answers 404 model_not_found.
        status = 404 if path.startswith(OPENAI_PREFIX) else 400
    elif isinstance(error, (ModelError, ServerBusyError, DecoderUnavailableError)):
        status = 503  # the model or the decoder cannot run now, or no capacity: the request itself was fine
    elif isinstance(error, JobNotFoundError):
        status = 404
    elif isinstance(error, IdempotencyConflictError):
        status = 409
    elif isinstance(error, (InferenceError, JobFailedError)):
        status = 500  # the seed answers a failed job's result with 500
    return status


def error_body(
    message: str, code: str, status: int, *, param: str | None = None, detail: object = None
) -> dict[str, Any]:
    """The error body every endpoint answers with."""
    kind = "invalid_request_error" if status < 500 else "server_error"  # noqa: PLR2004
    error = {"message": message, "type": kind, "param": param, "code": code}
    return {"detail": message if detail is None else detail, "error": error}


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AviaryError)  # noqa: S101  (registered for AviaryError only)
    status = status_of(exc, route_path(request.scope))
    headers = {}
    if isinstance(exc, ServerBusyError):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, ServerBusyError):  # load, not a fault: a flood of refusals is not a flood of tracebacks
        logger.info("%s %s refused: [%s] %s", request.method, request.url.path, exc.code, exc)
    elif status >= 500 and not isinstance(exc, JobFailedError):  # noqa: PLR2004  (a failed job was logged as it failed)
        traceback = exc if status == 500 else None  # noqa: PLR2004  (503s say why in their message)
        logger.error("%s %s failed: [%s] %s", request.method, request.url.path, exc.code, exc, exc_info=traceback)
    return JSONResponse(error_body(str(exc), exc.code, status, param=exc.param), status, headers=headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in {"body", "query", "path", "header"}]
    param = ".".join(location) or None
    message = f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg", "Invalid request."))
    status = 400 if route_path(request.scope).startswith(OPENAI_PREFIX) else 422
    detail = [{key: value for key, value in error.items() if key != "ctx"} for error in errors]
    return JSONResponse(error_body(message, "invalid_request", status, param=param, detail=detail), status)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    code = _HTTP_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "invalid_request")  # noqa: PLR2004
    message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    del request
    return JSONResponse(error_body(message, code, exc.status_code), exc.status_code, headers=exc.headers)


async def _disconnected(request: Request, exc: Exception) -> JSONResponse:
    """The client went away mid-request (an abandoned upload): nothing to report, nobody to answer."""
    del exc
    logger.info("%s %s: the client disconnected", request.method, request.url.path)
    return JSONResponse(error_body("The client disconnected.", "client_disconnected", 400), 400)


async def _database(request: Request, exc: Exception) -> JSONResponse:
    """The jobs database is away (restarting, say): 503 with Retry-After, one line in the log."""
    reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["no answer"])[0]
    logger.warning("%s %s: the jobs database cannot be reached (%s)", request.method, request.url.path, reason)
    message = "The jobs database cannot be reached; retry shortly."
    return JSONResponse(error_body(message, "database_unavailable", 503), 503, headers={"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = uuid.uuid4().hex
    logger.error("request %s (%s %s) failed", request_id, request.method, request.url.path, exc_info=exc)
    message = f"Internal server error (request id {request_id})."
    return JSONResponse(error_body(message, "internal_error", 500), 500, headers={"X-Request-ID": request_id})


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(AviaryError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(Exception, _unexpected)


def route_path(scope: Scope) -> str:
    """The path without the proxy's prefix (`root_path`), whether the proxy stripped it or not."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(f"{root}/") else path
