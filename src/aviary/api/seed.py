"""The original server's informational endpoints, same paths and fields: `GET /` and `GET /health` (and HEAD).

Shapes from `spec/seed-api.md`; Aviary adds fields and never removes or renames one. `/health`
answers 200 in every state, as the original did: its clients read `model_loaded` (the console
client stops unless it is true, the smoke script waits while it is false).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from aviary import __version__
from aviary.api.schemas import error_responses
from aviary.engine.registry import KNOWN

if TYPE_CHECKING:
    from aviary.api.service import Service

router = APIRouter()


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


@router.get(
    "/",
    summary="API information and links",
    responses=error_responses({401: "invalid_api_key (when API keys are configured)"}),
)
async def root(request: Request) -> dict[str, Any]:
    """Service, version, the seed's two model names (with what they stand for), languages, endpoints."""
    service = _service(request)
    loaded = {engine.info.name: engine.info for engine in service.loaded()}
    models: dict[str, Any] = {}
    for alias in ("parakeet", "canary"):
        target = service.settings.aliases[alias]
        known = KNOWN.get(target)
        spoken = known.languages if known else loaded[target].languages if target in loaded else ()
        models[alias] = {
            "name": target,
            "description": known.description if known else target,
            "languages": sorted(spoken),  # a directory or .nemo file says which once it is loaded
            "loaded": target in loaded,
        }
    languages = sorted({language for model in models.values() for language in model["languages"]})
    return {
        "service": "Aviary speech-to-text",
        "version": __version__,
        "models": models,
        "default_model": "parakeet",
        "supported_languages": languages,
        "endpoints": {
            "health": "/health",
            "docs": "/docs",
            "redoc": "/redoc",
            "transcribe": "/transcribe",
            "transcribe_async": "/transcribe/async",
            "job_status": "/jobs/{job_id}/status",
            "job_result": "/jobs/{job_id}/result",
            "job_cancel": "/jobs/{job_id}/cancel",
            "jobs": "/jobs",
            "openai_transcriptions": "/v1/audio/transcriptions",
            "openai_translations": "/v1/audio/translations",
            "openai_models": "/v1/models",
        },
    }


@router.get("/health", summary="Whether the default model is loaded")
async def health(request: Request) -> dict[str, Any]:
    """`status` is `healthy`, `loading` or `degraded` (with `reason`); `model_loaded` as the seed's clients read it.

    `device` is where the default model runs, and `device_fallback` why on the CPU when CUDA was asked for.

    While the jobs database does not answer (checked every `AVIARY_HEARTBEAT_SECONDS`), `status` is
    `degraded` with a `database_unavailable` reason and `jobs_database` is `unavailable`; the model
    still serves synchronous requests (`model_loaded` stays true).

    `queue` says how many transcriptions run (`running`, at most `workers`) and wait (`waiting`, at most
    `max_queue` before requests are refused). Answered on the event loop, never behind inference.
    """
    service = _service(request)
    state = service.health()
    return {
        "status": state.status,
        "model_loaded": state.model_loaded,
        "model_name": state.model_name,
        "device": state.device,
        "device_fallback": state.device_fallback,
        "reason": state.reason,
        "jobs_database": state.jobs_database,
        "loaded_models": sorted(engine.info.name for engine in service.loaded()),
        "queue": asdict(service.load()),
    }


@router.get(
    "/ready",
    summary="200 once the default model serves, else 503 (for probes that read only the status code)",
    responses={503: {"description": "Loading, or the default model cannot be served: `/health`'s body says why."}},
)
async def ready(request: Request) -> JSONResponse:
    """`/health`'s body, with status 200 when `model_loaded` (synchronous transcription works) and 503 before.

    `/health` answers 200 whatever the state, as the original server's did and its clients expect;
    Docker's HEALTHCHECK, Kubernetes' readiness probes and Aspire's `WithHttpHealthCheck` judge by
    the status code, so they ask here.
    """
    body = await health(request)
    return JSONResponse(body, status_code=200 if body["model_loaded"] else 503)


for _path, _endpoint in (("/", root), ("/health", health), ("/ready", ready)):  # monitors and `wget --spider` send HEAD
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False)
