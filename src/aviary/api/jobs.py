"""The original server's asynchronous endpoints, same paths, shapes and status codes, on durable jobs.

`POST /transcribe/async` takes the `/transcribe` form (checked in the same order: model, language),
keeps the upload in the data directory and answers `{job_id, status: "pending", message}`; an
`Idempotency-Key` header returns the same job for the same key and file (409 for another file).
`GET /jobs/{id}/status`, `GET /jobs/{id}/result` (400 until completed, 400 cancelled, 500 failed
with the failure's code), `POST /jobs/{id}/cancel` (400 once ended), plus `GET /jobs` and
`DELETE /jobs/{id}`. A `webhook_url` field gets the job's end as a signed event (`aviary.jobs.webhooks`).
Job calls touch the database, so they run in worker threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field

from aviary.api.schemas import AsyncForm, SeedResult, error_responses, multipart_body, validate_form
from aviary.api.transcribe import ERRORS, received_form, seed_options
from aviary.errors import JobCancelledError, JobFailedError, JobNotFinishedError
from aviary.jobs.webhooks import check_url

if TYPE_CHECKING:
    from aviary.api.service import Service
    from aviary.jobs import Job, Jobs

router = APIRouter()
_DATABASE: Final = "database_unavailable (with Retry-After): the jobs database does not answer"
_KEY: Final = {401: "invalid_api_key (when API keys are configured)", 503: _DATABASE}
_FOUND: Final = {**_KEY, 404: "job_not_found"}
_SUBMIT: Final = {
    **ERRORS,
    **error_responses(
        {
            409: "idempotency_conflict: the key was used for another file",
            503: "server_busy (with Retry-After), model_unavailable, or " + _DATABASE,
        }
    ),
}

Status = Literal["pending", "processing", "completed", "failed", "cancelled"]


class JobAccepted(BaseModel):
    """The answer to `POST /transcribe/async`."""

    job_id: str
    status: Status
    message: str


class JobStatusBody(BaseModel):
    """A job's state, as the original server reported it, with progress added."""

    job_id: str
    status: Status
    filename: str
    created_at: str
    started_at: str | None = Field(default=None, description="When a worker began the job.")
    completed_at: str | None
    error: str | None
    error_code: str | None = Field(description="The failure's stable code, when the job failed.")
    result: SeedResult | None
    progress: float = Field(description="Share of the audio transcribed, 0 to 1.")
    processed_seconds: float = Field(description="Seconds of audio transcribed so far.")
    stage: Literal["queued", "decoding", "transcribing"] | None = Field(
        default=None,
        description="While the job is under way: waiting for a worker, decoding its upload (progress stays 0; "
        "about a third of a long job's time on a CPU), or transcribing; null once it ended.",
    )
    duration: float | None = Field(default=None, description="Seconds of audio in the upload, once decoded.")


class JobCancelled(BaseModel):
    """The answer to a cancel."""

    message: str
    status: Status


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobStatusBody]
    total: int
    limit: int
    offset: int


def _jobs(request: Request) -> Jobs:
    service: Service = request.app.state.service
    return service.jobs


def _status(job: Job) -> JobStatusBody:
    return JobStatusBody.model_validate(job.document())


@router.post(
    "/transcribe/async",
    summary="Start a transcription job",
    response_model=JobAccepted,
    responses=_SUBMIT,
    openapi_extra=multipart_body(AsyncForm),
)
async def transcribe_async(
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=255, description="Same key, same file: same job.")] = None,
) -> JobAccepted:
    """Accept the file (once its container is checked); a worker transcribes it chunk by chunk (poll the status)."""
    service: Service = request.app.state.service
    settings = service.settings
    async with received_form(request, settings) as form:
        fields, upload = validate_form(AsyncForm, form)
        engine, options = await service.engine_for(
            service.api_model(fields.model), lambda info: seed_options(info, fields.language)[0]
        )
        language = seed_options(engine.info, fields.language)[1]
        # What is plainly not usable audio (empty, not media, no audio stream, too long) is refused now,
        # as /transcribe refuses it; what only decoding finds fails the job.
        await anyio.to_thread.run_sync(service.decoder.probe, upload.path)
        job_options: dict[str, Any] = {
            "model": fields.model,
            "language": language,
            "engine_language": options.language,
            "include_timestamps": fields.include_timestamps,
            "include_words": fields.include_words,
            "webhook_url": await anyio.to_thread.run_sync(check_url, fields.webhook_url, settings)
            if fields.webhook_url
            else None,
        }
        job, _ = await anyio.to_thread.run_sync(
            lambda: service.jobs.submit(
                upload.path, filename=upload.filename, options=job_options, idempotency_key=idempotency_key
            )
        )
    return JobAccepted(job_id=job.id, status=job.status, message=f"Transcription job started for {job.filename}")


@router.get(
    "/jobs/{job_id}/status", summary="A job's state", response_model=JobStatusBody, responses=error_responses(_FOUND)
)
async def job_status(request: Request, job_id: str) -> JobStatusBody:
    """Status, progress, and the result once completed."""
    return _status(await anyio.to_thread.run_sync(_jobs(request).get, job_id))


@router.get(
    "/jobs/{job_id}/result",
    summary="A completed job's result",
    response_model=SeedResult,
    responses=error_responses(
        {
            400: "job_not_finished (pending or processing) or job_cancelled",
            **_FOUND,
            500: "The job failed: its failure's own code (unsupported_media, ..., job_crashed)",
        }
    ),
)
async def job_result(request: Request, job_id: str) -> SeedResult:
    """The transcription result; 400 while pending or processing, or when cancelled; 500 when it failed."""
    job = await anyio.to_thread.run_sync(_jobs(request).get, job_id)
    if job.status == "cancelled":
        raise JobCancelledError
    if job.status == "failed":
        raise JobFailedError(job.error or "unknown error", job.error_code or "internal_error")
    if job.status != "completed" or job.result is None:
        raise JobNotFinishedError
    return SeedResult.model_validate(job.result)


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job",
    response_model=JobCancelled,
    responses=error_responses({400: "job_finished: completed, failed or cancelled already", **_FOUND}),
)
async def cancel_job(request: Request, job_id: str) -> JobCancelled:
    """Stop a pending or running job before its next chunk; 400 when it already ended."""
    await anyio.to_thread.run_sync(_jobs(request).cancel, job_id)
    return JobCancelled(message=f"Job {job_id} cancellation requested", status="cancelled")


@router.get("/jobs", summary="List jobs", response_model=JobList, responses=error_responses(_KEY))
async def list_jobs(
    request: Request,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JobList:
    """Jobs newest first, optionally only those of one status."""
    jobs, total = await anyio.to_thread.run_sync(lambda: _jobs(request).list(status, limit=limit, offset=offset))
    return JobList(jobs=[_status(job) for job in jobs], total=total, limit=limit, offset=offset)


@router.delete("/jobs/{job_id}", summary="Delete a job", status_code=204, responses=error_responses(_FOUND))
async def delete_job(request: Request, job_id: str) -> None:
    """Cancel it if it runs, then remove its record, result and audio."""
    await anyio.to_thread.run_sync(_jobs(request).delete, job_id)
