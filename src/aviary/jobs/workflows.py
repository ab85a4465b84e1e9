"""A job is a DBOS workflow: prepare (decode once, plan the chunks), one step per chunk, then finish.

Every step's output is checkpointed by DBOS, so a process that dies mid-job resumes at the first
chunk that had not finished, on restart or on another worker: chunks already transcribed are
replayed from the database, not recomputed. Cancellation takes effect when the workflow starts its
next step, so a chunk (at most `chunk_seconds` of audio) bounds how long a cancel takes; `Jobs.cancel`
also withdraws the job's chunk from the batcher if it is still waiting there, and `prepare` looks
for a cancel while it decodes.

`prepare` streams the upload through the decoder once, into the long-form planner
(`aviary.engine.longform`: Silero VAD, cuts at pauses, overlap where nobody paused); the samples of
every chunk with speech go to `<data_dir>/jobs/<id>.f32` (raw float32, 16 kHz; silence is neither
kept nor transcribed), and the chunks' spans and file offsets are the step's checkpoint. Each chunk
step reads its samples through a memory map and sends them to the model's batcher, so a step holds
one chunk and jobs batch with each other and with sync requests.

A process that dies mid-step (killed, out of memory, a crash in native code) leaves the step to be
tried again where the job resumes. Each step counts its tries in the job store (`JobStore.attempt`,
cleared when a step finishes), so a job whose process died `MAX_ATTEMPTS` times in a row on the same
step fails as `job_crashed` instead of taking down every worker that picks it up; restarts between
steps that finished never add up.

Workflow code reaches the models through `Runtime`, installed by `aviary.jobs.Jobs` when DBOS
launches (DBOS workflows are module functions registered at import; their work needs a process).
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from dbos import DBOS

from aviary.engine import longform
from aviary.errors import AudioError, AviaryError, RequestError
from aviary.formats import to_seed
from aviary.jobs.store import TERMINAL
from aviary.types import SAMPLE_RATE, TranscribeOptions

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aviary.audio import IsolatedDecoder
    from aviary.config import Settings
    from aviary.engine.registry import Registry
    from aviary.jobs.store import JobStore
    from aviary.types import Audio

logger = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 3
"""A job whose process dies this many times in a row on the same step is failed (`job_crashed`)."""
RECOVERY_LIMIT: Final = 100
"""DBOS's own limit on recoveries of one workflow, counted over its whole life: restarts between steps
that progressed are normal, so it is only a backstop (DBOS's default)."""
CRASHED: Final = f"Transcription failed: its process died {MAX_ATTEMPTS} times in a row while working on it."
_CANCEL_CHECK_SECONDS: Final = 1.0  # how often `prepare` looks for a cancel while it decodes


class _Cancelled(Exception):  # noqa: N818  (control flow inside `prepare`, never raised out of it)
    pass


@dataclass
class Runtime:
    """What the steps use: settings, models, decoder, and the job table."""

    settings: Settings
    registry: Registry
    decoder: IsolatedDecoder
    store: JobStore


_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    """Give the workflow steps their runtime (None: remove it)."""
    global _runtime  # noqa: PLW0603  (one per process, as DBOS itself is)
    _runtime = runtime


def _rt() -> Runtime:
    if _runtime is None:
        message = "aviary jobs are not started in this process"
        raise RuntimeError(message)
    return _runtime


def audio_file(settings: Settings, job_id: str) -> Path:
    """Where a job's decoded audio lives while it runs."""
    return settings.data_dir / "jobs" / f"{job_id}.f32"


@DBOS.step()
def prepare(job_id: str) -> dict[str, Any] | None:
    """Decode the upload once into raw samples and plan its chunks. None when the job ended (failed, cancelled)."""
    rt = _rt()
    job = rt.store.get(job_id)
    if job is None or job.audio_path is None or not _tried(rt, job_id):
        return None
    rt.store.update(job_id, status="processing", started_at=time.time())
    target = audio_file(rt.settings, job_id)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # decoded audio: readable by this user only
    spans: list[list[int]] = []
    written = 0
    try:
        engine = rt.registry.get(job.options["model"])
        planner = longform.Planner(rt.settings.chunking(engine.info))
        with target.open("wb") as out:
            for span, samples in planner.plan(_watched(rt, job_id, Path(job.audio_path))):
                out.write(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
                spans.append([*span.to_list(), written])
                written += len(samples)
    except AviaryError as exc:
        _fail(job_id, exc)
        return None
    except _Cancelled:
        remove_audio(rt.settings, job_id, job.audio_path)
        return None
    if not rt.store.update(job_id, duration=planner.seconds):  # cancelled meanwhile: leave nothing behind
        remove_audio(rt.settings, job_id, job.audio_path)
        return None
    rt.store.attempted(job_id)
    return {"seconds": planner.seconds, "spans": spans}


def _watched(rt: Runtime, job_id: str, upload: Path) -> Iterator[Audio]:
    """The decoder's blocks; stops when the job is cancelled (looked up about once a second)."""
    checked = time.monotonic()
    for block in rt.decoder.stream(upload):
        yield block
        if time.monotonic() - checked > _CANCEL_CHECK_SECONDS:
            checked = time.monotonic()
            job = rt.store.get(job_id)
            if job is None or job.status == "cancelled":
                raise _Cancelled


@DBOS.step()
def transcribe_chunk(job_id: str, span_values: list[int], before: list[Any] | None = None) -> dict[str, Any] | None:
    """Transcribe one planned chunk (its span, and where its samples start in the job's file). None: the job ended.

    `before`: the seam of the chunk before (`longform.Seam`), where this one overlaps it; the part
    returned carries its own under "seam".
    """
    rt = _rt()
    job = rt.store.get(job_id)
    if job is None or job.status in TERMINAL or not _tried(rt, job_id):
        return None
    span, offset = longform.Span.from_list(span_values[:4]), span_values[4]
    audio = np.memmap(audio_file(rt.settings, job_id), dtype=np.float32, mode="r")
    piece = np.array(audio[offset : offset + span.end - span.start])
    del audio
    options = TranscribeOptions(language=job.options.get("engine_language"))
    try:
        engine = rt.registry.get(job.options["model"])
        transcript = rt.registry.batcher(engine).submit(piece, options, owner=job_id).result()
    except CancelledError:  # `Jobs.cancel` withdrew it
        return None
    except AviaryError as exc:
        _fail(job_id, exc)
        return None
    rt.store.update(job_id, processed_seconds=min(span.keep_end, span.end) / SAMPLE_RATE)
    rt.store.attempted(job_id)
    seam = longform.Seam.from_list(before) if before else None
    return longform.dump(longform.place(transcript, span, seam)) | {
        "seam": longform.seam(transcript, span, seam).to_list()
    }


@DBOS.step()
def finish(job_id: str, seconds: float, parts: list[dict[str, Any]]) -> None:
    """Join the chunks into the seed's result, store it, and remove the job's audio."""
    rt = _rt()
    job = rt.store.get(job_id)
    if job is None or not _tried(rt, job_id):
        return
    transcript = longform.join([longform.load(part) for part in parts], seconds)
    result = to_seed(
        transcript,
        filename=job.filename,
        model=job.options["model"],
        language=job.options.get("language"),
        timestamps=bool(job.options.get("include_timestamps", True)),
        words=bool(job.options.get("include_words", False)),
    )
    rt.store.finish(job_id, "completed", result=result, processed_seconds=seconds)
    remove_audio(rt.settings, job_id, job.audio_path)


@DBOS.workflow(max_recovery_attempts=RECOVERY_LIMIT)
def transcribe_job(job_id: str) -> None:
    """The job's workflow: prepare, every chunk with speech, finish (each a checkpointed step)."""
    plan = prepare(job_id)
    parts: list[dict[str, Any]] = []
    for span in plan["spans"] if plan is not None else []:
        part = transcribe_chunk(job_id, span, parts[-1].get("seam") if parts else None)
        if part is None:
            break
        parts.append(part)
    else:
        if plan is not None:
            finish(job_id, plan["seconds"], parts)
    notify(job_id)


def notify(job_id: str) -> None:
    """Start the webhook delivery for the job's end, when it asked for one (idempotent per event)."""
    from aviary.jobs import webhooks

    job = _rt().store.get(job_id)
    url = job.options.get("webhook_url") if job is not None else None
    if job is not None and url and job.status in webhooks.EVENTS:
        webhooks.send(job.id, job.status, job.document(), str(url))


def remove_audio(settings: Settings, job_id: str, upload: str | None) -> None:
    """Delete the job's upload and decoded samples (both may already be gone)."""
    for path in (audio_file(settings, job_id), Path(upload) if upload else None):
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _tried(rt: Runtime, job_id: str) -> bool:
    """Count this try of the job's current step; False, and the job failed, when its process died on it too often."""
    if rt.store.attempt(job_id) <= MAX_ATTEMPTS:
        return True
    logger.error("job %s failed: its process died %d times in a row on the same step", job_id, MAX_ATTEMPTS)
    job = rt.store.get(job_id)
    rt.store.finish(job_id, "failed", error=CRASHED, error_code="job_crashed")
    remove_audio(rt.settings, job_id, job.audio_path if job else None)
    return False


def _fail(job_id: str, error: AviaryError) -> None:
    if isinstance(error, RequestError | AudioError):  # the job's input: the client hears of it, the log notes it
        logger.info("job %s failed: [%s] %s", job_id, error.code, error)
    else:  # the server's fault: the operator needs the cause
        logger.error("job %s failed: [%s] %s", job_id, error.code, error, exc_info=error)
    rt = _rt()
    job = rt.store.get(job_id)
    rt.store.finish(job_id, "failed", error=str(error), error_code=error.code)
    remove_audio(rt.settings, job_id, job.audio_path if job else None)
