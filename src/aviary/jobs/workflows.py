"""A job is a DBOS workflow: prepare (decode once, plan chunks), one step per chunk, then finish.

Every step's output is checkpointed by DBOS, so a process that dies mid-job resumes at the first
chunk that had not finished, on restart or on another worker: chunks already transcribed are
replayed from the database, not recomputed. Cancellation takes effect when the workflow starts its
next step, so a chunk (at most `job_chunk_seconds` of audio) bounds how long a cancel takes.

The decoded audio is written once to `<data_dir>/jobs/<id>.f32` (raw float32, 16 kHz) and read
chunk by chunk through a memory map, so a step holds one chunk, not the file. Chunks end in the
quietest 300 ms of the second half of their window, so a cut falls in a pause when there is one;
long-form
transcription with voice activity detection replaces this cut (TODO(#7)).

Workflow code reaches the models through `Runtime`, installed by `aviary.jobs.Jobs` when DBOS
launches (DBOS workflows are module functions registered at import; their work needs a process).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from dbos import DBOS

from aviary.errors import AviaryError
from aviary.formats import to_seed
from aviary.types import SAMPLE_RATE, Segment, TranscribeOptions, Transcript, Word

if TYPE_CHECKING:
    from aviary.audio import IsolatedDecoder
    from aviary.config import Settings
    from aviary.engine.registry import Registry
    from aviary.jobs.store import JobStore

logger = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 3
"""A job whose process dies this many times in a row is not recovered again (DBOS stops it)."""
_FRAME: Final = SAMPLE_RATE // 50  # 20 ms energy frames
_PAUSE_FRAMES: Final = 15  # 300 ms


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


def chunk_bounds(audio: np.ndarray, max_samples: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges of at most `max_samples`, each cut in the quietest 300 ms of its second half."""
    bounds = []
    start = 0
    while len(audio) - start > max_samples:
        window_start = start + max_samples // 2
        window = audio[window_start : start + max_samples]
        frames = len(window) // _FRAME
        energy = np.square(window[: frames * _FRAME].reshape(frames, _FRAME)).mean(axis=1)
        smoothed = np.convolve(energy, np.ones(_PAUSE_FRAMES), mode="valid")  # a pause, not a gap inside a word
        cut = window_start + (int(np.argmin(smoothed)) + _PAUSE_FRAMES // 2) * _FRAME
        bounds.append((start, cut))
        start = cut
    bounds.append((start, len(audio)))
    return bounds


@DBOS.step()
def prepare(job_id: str) -> list[tuple[int, int]] | None:
    """Decode the upload once into raw samples; plan the chunks. None when the audio is unusable (job failed)."""
    rt = _rt()
    job = rt.store.get(job_id)
    if job is None or job.audio_path is None:
        return None
    rt.store.update(job_id, status="processing", started_at=_now())
    target = audio_file(rt.settings, job_id)
    try:
        audio = rt.decoder.decode(Path(job.audio_path))
    except AviaryError as exc:
        _fail(job_id, exc)
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    audio.astype(np.float32).tofile(target)
    if not rt.store.update(job_id, duration=len(audio) / SAMPLE_RATE):  # cancelled meanwhile: leave nothing behind
        remove_audio(rt.settings, job_id, job.audio_path)
        return None
    return chunk_bounds(audio, int(rt.settings.job_chunk_seconds * SAMPLE_RATE))


@DBOS.step()
def transcribe_chunk(job_id: str, start: int, end: int) -> dict[str, Any] | None:
    """Transcribe samples [start, end) of the job's audio; times in the result are absolute. None: failed."""
    rt = _rt()
    job = rt.store.get(job_id)
    if job is None:
        return None
    audio = np.memmap(audio_file(rt.settings, job_id), dtype=np.float32, mode="r")
    piece = np.array(audio[start:end])
    del audio
    try:
        engine = rt.registry.get(job.options["model"])
        options = TranscribeOptions(language=job.options.get("engine_language"))
        transcript = engine.transcribe([piece], [options])[0]
    except AviaryError as exc:
        _fail(job_id, exc)
        return None
    rt.store.update(job_id, processed_seconds=end / SAMPLE_RATE)
    return _dump(transcript, start / SAMPLE_RATE)


@DBOS.step()
def finish(job_id: str, parts: list[dict[str, Any]]) -> None:
    """Join the chunks into the seed's result, store it, and remove the job's audio."""
    rt = _rt()
    job = rt.store.get(job_id)
    if job is None:
        return
    transcript = _merge(parts)
    result = to_seed(
        transcript,
        filename=job.filename,
        model=job.options["model"],
        language=job.options.get("language"),
        timestamps=bool(job.options.get("include_timestamps", True)),
        words=bool(job.options.get("include_words", False)),
    )
    rt.store.finish(job_id, "completed", result=result, processed_seconds=transcript.duration)
    remove_audio(rt.settings, job_id, job.audio_path)


@DBOS.workflow(max_recovery_attempts=MAX_ATTEMPTS)
def transcribe_job(job_id: str) -> None:
    """The job's workflow: prepare, every chunk, finish (each a checkpointed step)."""
    bounds = prepare(job_id)
    parts = []
    for start, end in bounds or []:
        part = transcribe_chunk(job_id, start, end)
        if part is None:
            break
        parts.append(part)
    else:
        if bounds is not None:
            finish(job_id, parts)
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


def _fail(job_id: str, error: AviaryError) -> None:
    rt = _rt()
    job = rt.store.get(job_id)
    rt.store.finish(job_id, "failed", error=str(error), error_code=error.code)
    remove_audio(rt.settings, job_id, job.audio_path if job else None)


def _now() -> float:
    import time

    return time.time()


def _dump(transcript: Transcript, offset: float) -> dict[str, Any]:
    """A chunk's transcript as JSON-able data (DBOS checkpoints it), times shifted by `offset`."""

    def word(w: Word) -> list[Any]:
        return [w.word, w.start + offset, w.end + offset, w.confidence]

    return {
        "text": transcript.text,
        "end": offset + transcript.duration,
        "language": transcript.language,
        "timestamps": transcript.timestamps,
        "words": [word(w) for w in transcript.words],
        "segments": [
            [s.text, s.start + offset, s.end + offset, [word(w) for w in s.words]] for s in transcript.segments
        ],
    }


def _merge(parts: list[dict[str, Any]]) -> Transcript:
    def word(values: list[Any]) -> Word:
        return Word(str(values[0]), float(values[1]), float(values[2]), float(values[3]))

    segments = tuple(
        Segment(str(s[0]), float(s[1]), float(s[2]), tuple(word(w) for w in s[3])) for p in parts for s in p["segments"]
    )
    return Transcript(
        text=" ".join(p["text"] for p in parts if p["text"]),
        duration=float(parts[-1]["end"]) if parts else 0.0,
        language=next((p["language"] for p in parts if p["language"]), None),
        words=tuple(word(w) for p in parts for w in p["words"]),
        segments=segments,
        timestamps=all(p["timestamps"] for p in parts),
    )
