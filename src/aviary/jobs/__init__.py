"""Durable asynchronous jobs on DBOS: submit, status, result, cancel, list, delete.

`Jobs` owns the process's DBOS instance (configured and launched here, never at import; destroyed
on `close`), the job table, and the queue the workflows run from. Embedded mode (the default): the
server process is the worker, on SQLite in `data_dir`. Every process has a stable executor id (the
host name unless set) and an explicit application version, so a restarted process recovers the
jobs it had in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import shutil
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

from aviary import __version__
from aviary.errors import DatabaseUnavailableError, IdempotencyConflictError, JobFinishedError, JobNotFoundError
from aviary.jobs.reaper import Reaper
from aviary.jobs.store import TERMINAL, Job, JobStore

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from aviary.audio import IsolatedDecoder
    from aviary.config import Settings
    from aviary.engine.registry import Registry

__all__ = ["QUEUE", "Job", "JobStore", "Jobs", "open_store"]

logger = logging.getLogger(__name__)
QUEUE: Final = "aviary-jobs"
_URLS: Final = "Aviary keeps jobs in sqlite:///path/file or postgresql://user@host/database"
START_PATIENCE_SECONDS: Final = 60.0
"""How long a starting process waits for the jobs database (a database container still starting, say)."""
STEP_PATIENCE_SECONDS: Final = 600.0
"""How long a job's step waits for an unreachable jobs database before it fails (and the job with it)."""
_GAVE_UP: Final = frozenset({"ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})
_UNDER_WAY: Final = frozenset({"PENDING", "ENQUEUED"})
"""A workflow status that may still run (a delivery retrying, or waiting for a worker)."""


def _executor_id(settings: Settings) -> str:
    import socket

    return settings.executor_id or socket.gethostname()


class Jobs:
    """The job system of one process: DBOS, the job table, and the queue."""

    def __init__(self, settings: Settings, registry: Registry, decoder: IsolatedDecoder) -> None:
        """Hold the parts; nothing connects until `start()`."""
        self.settings = settings
        self._registry = registry
        self._decoder = decoder
        self._store: JobStore | None = None
        self._reaper: Reaper | None = None

    @property
    def store(self) -> JobStore:
        """The job table (after `start()`)."""
        if self._store is None:
            message = "jobs are not started"
            raise RuntimeError(message)
        return self._store

    def start(self) -> None:
        """Configure and launch DBOS (recovering this executor's jobs), then listen on the queue."""
        from dbos import DBOS

        from aviary.jobs import webhooks, workflows

        settings = self.settings
        url = settings.jobs_database_url()
        self._store = open_store(settings)
        steps = self._store.patient(STEP_PATIENCE_SECONDS)  # a database restart must not fail running jobs
        workflows.install(workflows.Runtime(settings, self._registry, self._decoder, steps))
        webhooks.install(settings)
        executor = _executor_id(settings)
        self._reaper = Reaper(  # a process that runs no jobs only watches that the database answers
            self._store.engine,
            executor if settings.run_jobs else None,
            _recover,
            heartbeat_seconds=settings.heartbeat_seconds,
            timeout_seconds=settings.executor_timeout,
            housekeeping=self.housekeeping if settings.run_jobs else None,
        )
        # Known to the others before it can take a job: a process that dies (or fails to start)
        # after its first dequeue must have a heartbeat row for a reaper to find.
        self._reaper.beat()
        DBOS(
            config={
                "name": "aviary",
                "system_database_url": url,
                "application_version": __version__,
                "executor_id": executor,
            }
        )
        if not settings.run_jobs:
            DBOS.listen_queues([])
        for dbos_filter in (_ENDED_BY_REQUEST, _REPEATS):
            if dbos_filter not in logging.getLogger("dbos").filters:
                logging.getLogger("dbos").addFilter(dbos_filter)
        DBOS.launch()
        DBOS.register_queue(QUEUE, worker_concurrency=settings.workers, polling_interval_sec=settings.job_poll())
        if self._reaper is not None:
            self._reaper.start()

    def database_problem(self) -> str | None:
        """Why the jobs database did not answer the last heartbeat (every `heartbeat_seconds`), or None."""
        return self._reaper.problem if self._reaper is not None else None

    def submit(
        self, upload: Path, *, filename: str, options: dict[str, Any], idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Keep `upload` (moved into the data directory) and enqueue its job; (job, created).

        With an `idempotency_key` already used, the existing job is returned (`created` false) and
        the upload is left where it is.
        """
        from dbos import DBOS, SetWorkflowID

        from aviary.jobs.workflows import transcribe_job

        digest = _sha256(upload)
        if idempotency_key is not None:
            existing = self.store.by_key(idempotency_key)
            if existing is not None:
                return _same_request(existing, digest, options), False
        job_id = str(uuid.uuid4())
        kept = self.settings.data_dir / "uploads" / job_id
        kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.move(upload, kept)
        job = Job(
            id=job_id,
            status="pending",
            filename=filename,
            options=options,
            created_at=time.time(),
            audio_path=str(kept),
            file_sha256=digest,
            idempotency_key=idempotency_key,
        )
        try:
            stored = self.store.create(job)
        except BaseException:
            kept.unlink(missing_ok=True)  # no job points at it
            raise
        if stored.id != job_id:  # another request with the same key won the race
            kept.unlink(missing_ok=True)
            return _same_request(stored, digest, options), False
        with SetWorkflowID(job_id):
            DBOS.retrieve_queue(QUEUE).enqueue(transcribe_job, job_id)  # type: ignore[union-attr]
        return stored, True

    def get(self, job_id: str) -> Job:
        """The job.

        Raises:
            JobNotFoundError: no such job.
        """
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFoundError
        if job.status not in TERMINAL:
            job = self._reconcile(job)
        return job

    def _reconcile(self, job: Job) -> Job:
        """A job DBOS has given up on (its code raised, or it was recovered `RECOVERY_LIMIT` times) is failed."""
        from dbos import DBOS

        from aviary.jobs.workflows import notify, remove_audio

        status = DBOS.get_workflow_status(job.id)
        if status is None or status.status not in _GAVE_UP:
            return job
        message = "the job was recovered too many times" if status.status != "ERROR" else "the job crashed"
        if self.store.finish(job.id, "failed", error=f"Transcription failed: {message}.", error_code="job_crashed"):
            remove_audio(self.settings, job.id, job.audio_path)
            notify(job.id)
        return self.store.get(job.id) or job

    def housekeeping(self) -> None:
        """Fail the running jobs DBOS has given up on (so lists, webhooks and the disk hear of it), purge, sweep."""
        running, _ = self.store.list("processing", limit=1000)
        for job in running:
            self._reconcile(job)
        self.purge()
        self.sweep()

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending or running job: its workflow stops before its next chunk, its audio is removed.

        Raises:
            JobNotFoundError: no such job.
            JobFinishedError: it already ended.
        """
        from dbos import DBOS

        from aviary.jobs.workflows import notify, remove_audio

        job = self.get(job_id)
        if job.status in TERMINAL or not self.store.finish(job_id, "cancelled"):
            raise JobFinishedError(self.get(job_id).status)
        DBOS.cancel_workflow(job_id)
        self._withdraw(job_id)
        remove_audio(self.settings, job_id, job.audio_path)
        notify(job_id)
        return self.get(job_id)

    def _withdraw(self, job_id: str) -> None:
        """Take the job's chunk out of its batcher if it still waits for a batch."""
        for batcher in self._registry.batchers():
            batcher.cancel(job_id)

    def delete(self, job_id: str) -> None:
        """Cancel the job if it runs (its webhook gets `job.cancelled`), then forget it: row, workflow record, audio.

        Raises:
            JobNotFoundError: no such job.
        """
        from dbos import DBOS

        from aviary.jobs import webhooks
        from aviary.jobs.workflows import notify, remove_audio

        job = self.get(job_id)
        if job.status not in TERMINAL and self.store.finish(job_id, "cancelled"):
            DBOS.cancel_workflow(job_id)
            self._withdraw(job_id)
            notify(job_id)  # it was cancelled: its webhook hears so, as after POST .../cancel
        DBOS.delete_workflow(job_id)
        under_way = []
        for delivery in webhooks.delivery_ids(job_id):  # their recorded input is the job's document: its result
            status = DBOS.get_workflow_status(delivery)
            if status is not None and status.status in _UNDER_WAY:  # still trying: deleted once it ends
                under_way.append(delivery)
            elif status is not None:  # delivered, or given up
                DBOS.delete_workflow(delivery)
        if under_way:
            self.store.leave(under_way)
        remove_audio(self.settings, job_id, job.audio_path)
        self.store.delete(job_id)

    def sweep(self) -> list[str]:
        """Delete the records of deleted jobs' deliveries that have ended since; the ids deleted."""
        from dbos import DBOS

        swept = []
        for delivery in self.store.left():
            status = DBOS.get_workflow_status(delivery)
            if status is not None and status.status in _UNDER_WAY:
                continue
            if status is not None:
                DBOS.delete_workflow(delivery)
                swept.append(delivery)
            self.store.forget(delivery)
        return swept

    def purge(self) -> list[str]:
        """Forget jobs that ended more than `job_retention_seconds` ago (rows, results, workflow records)."""
        ended = self.store.ended_before(time.time() - self.settings.job_retention_seconds)
        purged = []
        for job in ended:
            with contextlib.suppress(JobNotFoundError):  # another process purged it first
                self.delete(job.id)
                purged.append(job.id)
        return purged

    def list(self, status: str | None, *, limit: int, offset: int) -> tuple[Sequence[Job], int]:
        """Jobs newest first, and the total count."""
        return self.store.list(status, limit=limit, offset=offset)

    def close(self, grace_seconds: int = 0) -> None:
        """Shut DBOS down, after up to `grace_seconds` for running jobs; unfinished ones stay pending and resume."""
        from dbos import DBOS

        from aviary.jobs import webhooks, workflows

        if self._reaper is not None:
            self._reaper.stop()
        DBOS.destroy(destroy_registry=False, workflow_completion_timeout_sec=grace_seconds)
        workflows.install(None)
        webhooks.install(None)
        if self._store is not None:
            self._store.close()


class _EndedByRequest(logging.Filter):
    """DBOS logs a background workflow that was cancelled, deleted or stopped by a shutdown as an error.

    For a job, that is what a client's cancel or delete, or a graceful stop (the job resumes on
    restart), does: the record becomes one line at INFO, without a traceback. A webhook try that
    was not accepted stays a warning, on one line with the reason.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from dbos._error import (  # not re-exported by dbos
            DBOSAwaitedWorkflowCancelledError,
            DBOSException,
            DBOSNonExistentWorkflowError,
            DBOSWorkflowCancelledError,
        )

        from aviary.jobs.webhooks import DeliveryError

        error = record.exc_info[1] if record.exc_info else None
        ended = (DBOSAwaitedWorkflowCancelledError, DBOSNonExistentWorkflowError, DBOSWorkflowCancelledError)
        stopped = isinstance(error, DBOSException) and "before DBOS was launched" in str(error)  # after destroy
        if isinstance(error, ended) or stopped:
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.msg, record.args = "Background workflow ended (cancelled, deleted or shut down): %s", (error,)
            record.exc_info = record.exc_text = None
        elif isinstance(error, DeliveryError):  # a webhook receiver that refused or was not there: no traceback
            record.msg, record.args = f"{record.getMessage()}: {error}", ()
            record.exc_info = record.exc_text = None
        return True


_ENDED_BY_REQUEST: Final = _EndedByRequest()


class Repeats(logging.Filter):
    """DBOS's background threads warn "Exception ..." on every try while the database is away.

    Its queue thread tries every poll interval (20 ms on PostgreSQL): about 2,000 lines per process
    in a 20 s outage. Each kind of such warning (its words before the first colon) passes once per
    `every` seconds, the next one saying how many were held back.
    """

    def __init__(self, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        """Let each kind through once per `every` seconds of `clock`."""
        super().__init__()
        self._every, self._clock = every, clock
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (when it last passed, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno != logging.WARNING or not message.startswith("Exception "):
            return True
        kind, now = message.partition(":")[0], self._clock()
        last, held = self._last.get(kind, (-math.inf, 0))
        if now - last < self._every:
            self._last[kind] = (last, held + 1)
            return False
        self._last[kind] = (now, 0)
        if held:
            record.msg, record.args = f"{message} ({held} more like it in the last {now - last:.0f} s)", ()
        return True


_REPEATS: Final = Repeats()


def _recover(executor_ids: list[str]) -> None:
    """DBOS's recovery of other executors' pending workflows (what its admin API's recovery endpoint calls)."""
    from dbos import DBOS

    DBOS._recover_pending_workflows(executor_ids)  # noqa: SLF001  (DBOS's documented self-hosted recovery)


def _same_request(job: Job, digest: str, options: dict[str, Any]) -> Job:
    """`job`, when it was made from the same file with the same options; else the key is in conflict."""
    if job.file_sha256 != digest:
        raise IdempotencyConflictError
    if job.options != options:
        raise IdempotencyConflictError(same_file=True)
    return job


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_store(settings: Settings) -> JobStore:
    """The job table of `settings` (its data directory made), once the database answers.

    Raises:
        DatabaseUnavailableError: not a URL Aviary can use, or no answer within `START_PATIENCE_SECONDS`.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # uploads, audio and transcripts
    if settings.database_url is None:  # SQLite: this process's own file (its -wal and -shm take its mode)
        (settings.data_dir / "aviary.sqlite").touch(mode=0o600)
    return _connect(settings.jobs_database_url())


def _connect(url: str) -> JobStore:
    """The job store on `url`, once the database answers (waiting up to `START_PATIENCE_SECONDS`).

    Raises:
        DatabaseUnavailableError: not a URL Aviary can use, or no answer in time.
    """
    import sqlalchemy as sa

    try:
        shown = sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError as exc:
        raise DatabaseUnavailableError(repr(url), _URLS) from exc
    deadline, said = time.monotonic() + START_PATIENCE_SECONDS, False
    while True:
        try:
            return JobStore(url)
        except (sa.exc.NoSuchModuleError, ModuleNotFoundError) as exc:  # another database, or its driver missing
            raise DatabaseUnavailableError(shown, _URLS) from exc
        except sa.exc.OperationalError as exc:
            reason = (str(exc.orig or exc).strip().splitlines() or ["no answer"])[0]
            if time.monotonic() > deadline:
                raise DatabaseUnavailableError(shown, reason) from exc
            if not said:
                logger.warning("waiting for the jobs database %s (%s)", shown, reason)
                said = True
            time.sleep(1.0)
