"""Job records as the API reads them: status, progress, result, error, idempotency keys.

DBOS keeps the durable workflow state (which steps ran, what they returned); this table keeps what
clients ask about, in the same database (SQLite file or PostgreSQL), through SQLAlchemy Core. A
terminal status (completed, failed, cancelled) is never overwritten: every transition is a
conditional UPDATE, so a cancel that lands while the last chunk finishes has one winner.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

import sqlalchemy as sa

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)
F = TypeVar("F", bound="Callable[..., Any]")

_SCHEMA_LOCK: Final = 0x61766961727931  # the advisory lock that serialises creating Aviary's tables


def create_tables(metadata: sa.MetaData, engine: sa.Engine) -> None:
    """Create `metadata`'s missing tables, safely beside other processes doing the same at once.

    PostgreSQL's `CREATE TABLE IF NOT EXISTS` loses a race with a concurrent one (the loser fails on
    the catalog's unique index), and a fleet of workers starting together on a new database races;
    so there the creation runs under a transaction-level advisory lock. SQLite's database lock
    already serialises it.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        metadata.create_all(connection)


JobStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
TERMINAL: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})

_metadata = sa.MetaData()
jobs_table = sa.Table(
    "aviary_jobs",
    _metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("options", sa.Text, nullable=False),  # JSON: model, language, flags, as the request gave them
    sa.Column("audio_path", sa.Text, nullable=True),
    sa.Column("file_sha256", sa.String(64), nullable=True),
    sa.Column("idempotency_key", sa.String(255), nullable=True, unique=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("completed_at", sa.Float, nullable=True),
    sa.Column("duration", sa.Float, nullable=True),
    sa.Column("processed_seconds", sa.Float, nullable=False, default=0.0),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("result", sa.Text, nullable=True),  # JSON: the seed's transcription result
)

attempts_table = sa.Table(
    "aviary_job_attempts",
    _metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("attempts", sa.Integer, nullable=False),
)
"""Tries of a job's current step: more than one means its process died on that step (a row only while so)."""

leftovers_table = sa.Table(
    "aviary_deleted_deliveries",
    _metadata,
    sa.Column("workflow_id", sa.String(255), primary_key=True),
)
"""Webhook deliveries of deleted jobs still under way at the delete: their records go once they end."""


@dataclass(frozen=True)
class Job:
    """One job as stored."""

    id: str
    status: JobStatus
    filename: str
    options: dict[str, Any]
    created_at: float
    audio_path: str | None = None
    file_sha256: str | None = None
    idempotency_key: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    duration: float | None = None
    processed_seconds: float = 0.0
    error: str | None = None
    error_code: str | None = None
    result: dict[str, Any] | None = field(default=None, repr=False)

    def document(self) -> dict[str, Any]:
        """The job as clients see it (the status endpoint's body, webhooks' `data`)."""
        return {
            "job_id": self.id,
            "status": self.status,
            "filename": self.filename,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "completed_at": _iso(self.completed_at),
            "error": self.error,
            "error_code": self.error_code,
            "result": self.result,
            "progress": round(self.progress, 4),
            "processed_seconds": round(self.processed_seconds, 3),
            "stage": self.stage,
            "duration": None if self.duration is None else round(self.duration, 3),
        }

    @property
    def stage(self) -> str | None:
        """What a job under way is doing: `queued`, `decoding` (its upload), `transcribing`; None once it ended."""
        if self.status == "pending":
            return "queued"
        if self.status == "processing":
            return "decoding" if self.duration is None else "transcribing"
        return None

    @property
    def progress(self) -> float:
        """Share of the audio transcribed, 0..1 (1 once completed)."""
        if self.status == "completed":
            return 1.0
        if not self.duration:
            return 0.0
        return min(1.0, self.processed_seconds / self.duration)


def _sqlite_pragmas(connection: Any, record: Any) -> None:  # noqa: ANN401  (DB-API objects)
    """Wait for DBOS's writers instead of failing; commit this table's writes without their own fsync.

    `synchronous=NORMAL` in WAL mode survives a killed process (the log is in the OS's hands at
    commit) and loses at most the last commits on power loss. Every write here is followed by one
    of DBOS's commits (the enqueue after `create`, the step's checkpoint after a progress or final
    update, the workflow's cancel), which keep SQLite's default FULL and so flush the log with
    ours: what a client was told stays told, at one fsync per step instead of two.
    """
    del record
    connection.execute("PRAGMA busy_timeout=30000")
    connection.execute("PRAGMA synchronous=NORMAL")


def _iso(moment: float | None) -> str | None:
    return datetime.fromtimestamp(moment, UTC).isoformat() if moment is not None else None


def _job(row: sa.Row[Any]) -> Job:
    values = dict(row._mapping)  # noqa: SLF001  (SQLAlchemy's public row mapping)
    values["options"] = json.loads(values["options"])
    values["result"] = json.loads(values["result"]) if values["result"] else None
    return Job(**values)


def _retried(method: F) -> F:
    """`method`, tried again while the database cannot be reached, for up to the store's `patience` seconds."""

    @functools.wraps(method)
    def call(self: JobStore, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401  (the method's own)
        deadline, delay, said = time.monotonic() + self.patience, 0.5, False
        while True:
            try:
                return method(self, *args, **kwargs)
            except sa.exc.OperationalError as exc:  # no connection, a server restarting, SQLite locked
                if time.monotonic() + delay > deadline:
                    raise
                if not said:
                    reason = (str(exc.orig or exc).strip().splitlines() or ["?"])[0]
                    logger.warning(
                        "the jobs database cannot be reached (%s); trying again for %.0f s", reason, self.patience
                    )
                    said = True
                time.sleep(delay)
                delay = min(2 * delay, 5.0)

    return cast("F", call)


class JobStore:
    """The `aviary_jobs` table on `url` (created if missing)."""

    patience: float = 0.0
    """Seconds a call keeps trying while the database cannot be reached (0: it raises at once)."""

    def __init__(self, url: str) -> None:
        """Connect and create the table. SQLite is switched to write-ahead logging (kept in the file).

        WAL makes a commit one fsync of the log instead of the rollback journal's several, and lets
        readers (status polls) run beside the writer; it holds for DBOS's connections to the same file too.
        """
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        create_tables(_metadata, self.engine)

    def patient(self, seconds: float) -> JobStore:
        """This store (the same connections) with calls that wait out a database outage of up to `seconds`.

        For job steps, which run off the event loop: a restart of the database must not fail a running job.
        """
        store = copy.copy(self)
        store.patience = seconds
        return store

    @_retried
    def create(self, job: Job) -> Job:
        """Insert `job`; with an idempotency key already stored, return that job instead."""
        values = {**job.__dict__, "options": json.dumps(job.options), "result": None}
        try:
            with self.engine.begin() as connection:
                connection.execute(jobs_table.insert().values(**values))
        except sa.exc.IntegrityError:
            existing = self.by_key(job.idempotency_key) if job.idempotency_key else None
            if existing is None:
                raise
            return existing
        return job

    @_retried
    def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(jobs_table.select().where(jobs_table.c.id == job_id)).first()
        return _job(row) if row is not None else None

    @_retried
    def by_key(self, key: str) -> Job | None:
        """The job created with idempotency key `key`, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(jobs_table.select().where(jobs_table.c.idempotency_key == key)).first()
        return _job(row) if row is not None else None

    @_retried
    def update(self, job_id: str, **values: Any) -> bool:  # noqa: ANN401
        """Set `values` unless the job has reached a terminal status; whether it changed."""
        if "result" in values and values["result"] is not None:
            values["result"] = json.dumps(values["result"])
        statement = (
            jobs_table.update().where(jobs_table.c.id == job_id, jobs_table.c.status.not_in(TERMINAL)).values(**values)
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount > 0

    def finish(self, job_id: str, status: JobStatus, **values: Any) -> bool:  # noqa: ANN401
        """Move to a terminal `status` (once: false when the job had already ended)."""
        finished = self.update(job_id, status=status, completed_at=time.time(), **values)
        if finished:
            self.attempted(job_id)
        return finished

    @_retried
    def attempt(self, job_id: str) -> int:
        """Count a try of the job's current step: how many tries it has had, this one included."""
        where = attempts_table.c.id == job_id
        with self.engine.begin() as connection:
            more = attempts_table.update().where(where).values(attempts=attempts_table.c.attempts + 1)
            if not connection.execute(more).rowcount:
                connection.execute(attempts_table.insert().values(id=job_id, attempts=1))
            return int(connection.execute(sa.select(attempts_table.c.attempts).where(where)).scalar_one())

    @_retried
    def leave(self, workflow_ids: Sequence[str]) -> None:
        """Note deliveries whose records must be deleted once they end (their job is gone)."""
        with self.engine.begin() as connection:
            known = set(
                connection.execute(
                    sa.select(leftovers_table.c.workflow_id).where(leftovers_table.c.workflow_id.in_(workflow_ids))
                ).scalars()
            )
            for workflow_id in (w for w in workflow_ids if w not in known):
                connection.execute(leftovers_table.insert().values(workflow_id=workflow_id))

    @_retried
    def left(self) -> list[str]:
        """Deliveries noted by `leave` and not yet forgotten."""
        with self.engine.connect() as connection:
            return list(connection.execute(sa.select(leftovers_table.c.workflow_id)).scalars())

    @_retried
    def forget(self, workflow_id: str) -> None:
        """A delivery noted by `leave` has had its record deleted."""
        with self.engine.begin() as connection:
            connection.execute(leftovers_table.delete().where(leftovers_table.c.workflow_id == workflow_id))

    @_retried
    def attempted(self, job_id: str) -> None:
        """The job's current step finished (or the job ended): the next step starts its own count."""
        with self.engine.begin() as connection:
            connection.execute(attempts_table.delete().where(attempts_table.c.id == job_id))

    @_retried
    def list(self, status: str | None = None, *, limit: int = 50, offset: int = 0) -> tuple[Sequence[Job], int]:
        """Jobs newest first, optionally of one status, and how many there are in all."""
        query = jobs_table.select()
        count = sa.select(sa.func.count()).select_from(jobs_table)
        if status is not None:
            query = query.where(jobs_table.c.status == status)
            count = count.where(jobs_table.c.status == status)
        query = query.order_by(jobs_table.c.created_at.desc(), jobs_table.c.id).limit(limit).offset(offset)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
            total = int(connection.execute(count).scalar_one())
        return [_job(row) for row in rows], total

    @_retried
    def ended_before(self, moment: float, limit: int = 500) -> Sequence[Job]:
        """Jobs that reached a terminal status before `moment` (oldest first, at most `limit`)."""
        query = (
            jobs_table.select()
            .where(jobs_table.c.status.in_(TERMINAL), jobs_table.c.completed_at < moment)
            .order_by(jobs_table.c.completed_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [_job(row) for row in connection.execute(query).all()]

    @_retried
    def delete(self, job_id: str) -> bool:
        """Remove the job's row; whether there was one."""
        with self.engine.begin() as connection:
            connection.execute(attempts_table.delete().where(attempts_table.c.id == job_id))
            return connection.execute(jobs_table.delete().where(jobs_table.c.id == job_id)).rowcount > 0

    def close(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()
