"""Heartbeats and the reaper: jobs of a machine that died are resumed by the ones still alive.

The same thread runs the job system's housekeeping (the retention purge) after each beat.

DBOS recovers, at launch, only the pending workflows of the launching process's own executor id; on
a self-hosted PostgreSQL nothing recovers a dead machine's workflows by itself. So every process
that runs jobs writes a heartbeat (`aviary_executors`: executor id, last seen) every
`heartbeat_seconds`; and every such process looks for executors silent for `executor_timeout`
seconds. One live process claims each silent executor (a conditional DELETE of its row: exactly one
claimer wins) and hands its pending workflows to DBOS's recovery, which re-enqueues them; any
worker then resumes each one at its first unfinished chunk.

Times are the database's clock, never a host's (a worker whose clock is off would otherwise seem
dead, or find everyone else dead). A process reaps only after beating steadily for a whole timeout:
when the database comes back from an outage every heartbeat is old, and the first process to
reconnect must not take the jobs of workers that are alive and about to beat again.

A process that runs no jobs (`executor_id` None) only watches: every beat reads the database's
clock. Either way `problem` says, for `/health`, whether the last beat reached the database.

Each process also beats as itself (`aviary_instances`: a random instance id under its executor
id). Two live processes sharing an executor id (two workers on one host, both named by the host)
would each recover the other's jobs when restarted, running them twice: when another instance of
this executor id beats between two of this one's beats, that is logged as an error (a crashed
predecessor's row, left behind by a quick restart, never beats again and is not mistaken for one).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

import sqlalchemy as sa

from aviary.jobs.store import create_tables

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

_metadata = sa.MetaData()
executors_table = sa.Table(
    "aviary_executors",
    _metadata,
    sa.Column("executor_id", sa.String(255), primary_key=True),
    sa.Column("last_seen", sa.Float, nullable=False),
)
instances_table = sa.Table(
    "aviary_instances",
    _metadata,
    sa.Column("instance", sa.String(64), primary_key=True),
    sa.Column("executor_id", sa.String(255), nullable=False, index=True),
    sa.Column("last_seen", sa.Float, nullable=False),
)
STALE_TIMEOUTS = 10
"""Instance rows silent for this many executor timeouts are deleted (a process that died)."""


class Reaper:
    """A thread that beats for `executor_id` and recovers the jobs of executors that stopped beating."""

    def __init__(
        self,
        engine: sa.Engine,
        executor_id: str | None,
        recover: Callable[[list[str]], None],
        *,
        heartbeat_seconds: float,
        timeout_seconds: float,
        housekeeping: Callable[[], object] | None = None,
    ) -> None:
        """Create the table if needed; nothing runs until `start()`. `housekeeping` runs after each beat.

        With `executor_id` None the thread only watches the database: no heartbeat row, no reaping.
        """
        create_tables(_metadata, engine)
        self._engine = engine
        self.executor_id = executor_id
        self._recover = recover
        self._every = heartbeat_seconds
        self._timeout = timeout_seconds
        self._housekeeping = housekeeping
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aviary-reaper", daemon=True)
        self._steady_since: float | None = time.monotonic()  # beating without a miss since (None: missing)
        self._problem: str | None = None
        self.instance = uuid.uuid4().hex
        self._others: dict[str, float] = {}  # other instances of this executor id: their last beat seen
        self.twins: set[str] = set()
        """Other live processes found beating as this executor id (said once each, as an error)."""

    @property
    def problem(self) -> str | None:
        """Why the last beat failed (the database's first line of error), or None when it went through."""
        return self._problem

    def start(self) -> None:
        """Beat once now, then keep beating and reaping (DBOS must be launched: reaping recovers through it)."""
        self.beat()
        self._steady_since = time.monotonic()
        self._thread.start()

    def beat(self) -> None:
        """Record that this executor is alive (watching only: that the database answers)."""
        with self._engine.begin() as connection:
            now = _database_now(connection)
            if self.executor_id is None:
                return
            updated = connection.execute(
                executors_table.update().where(executors_table.c.executor_id == self.executor_id).values(last_seen=now)
            ).rowcount
            if not updated:
                connection.execute(executors_table.insert().values(executor_id=self.executor_id, last_seen=now))
            mine = instances_table.c.instance == self.instance
            if not connection.execute(instances_table.update().where(mine).values(last_seen=now)).rowcount:
                row = {"instance": self.instance, "executor_id": self.executor_id, "last_seen": now}
                connection.execute(instances_table.insert().values(**row))
            others = connection.execute(
                sa.select(instances_table.c.instance, instances_table.c.last_seen).where(
                    instances_table.c.executor_id == self.executor_id, ~mine
                )
            ).all()
        self._check_twins({str(row.instance): float(row.last_seen) for row in others})

    def _check_twins(self, others: dict[str, float]) -> None:
        """Say so when another instance of this executor id beat since this one last looked."""
        for instance, seen in others.items():
            if instance in self._others and seen > self._others[instance] and instance not in self.twins:
                self.twins.add(instance)
                logger.error(
                    "another live process runs as executor %s: each process that runs jobs needs its own "
                    "AVIARY_EXECUTOR_ID (default: the host name), or restarts run jobs twice",
                    self.executor_id,
                )
        self._others = others

    def reap(self) -> list[str]:
        """Recover the jobs of every executor silent for longer than the timeout; the ids this call claimed."""
        with self._engine.connect() as connection:
            cutoff = _database_now(connection) - self._timeout
            silent = connection.execute(
                sa.select(executors_table.c.executor_id).where(
                    executors_table.c.last_seen < cutoff, executors_table.c.executor_id != self.executor_id
                )
            ).scalars()
            candidates = list(silent)
        with self._engine.begin() as connection:  # rows of instances that died (their executor lives on)
            stale = _database_now(connection) - STALE_TIMEOUTS * self._timeout
            connection.execute(instances_table.delete().where(instances_table.c.last_seen < stale))
        claimed = []
        for executor in candidates:
            with self._engine.begin() as connection:
                won = connection.execute(
                    executors_table.delete().where(
                        executors_table.c.executor_id == executor, executors_table.c.last_seen < cutoff
                    )
                ).rowcount
            if won:
                claimed.append(executor)
        if claimed:
            logger.warning("executors %s stopped beating: recovering their jobs", ", ".join(claimed))
            self._recover(claimed)
        return claimed

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001  (the database is away: said once per outage)
                self._problem = _first_line(exc)
                if self._steady_since is not None:
                    logger.warning(
                        "the jobs database does not answer (%s); trying every %.0f s", self._problem, self._every
                    )
                self._steady_since = None
                continue
            self._problem = None
            if self._steady_since is None:
                logger.info(
                    "the jobs database answers again%s",
                    "" if self.executor_id is None else f": reaping resumes in {self._timeout:.0f} s",
                )
                self._steady_since = time.monotonic()
            try:
                if self.executor_id is not None and time.monotonic() - self._steady_since >= self._timeout:
                    self.reap()
                if self._housekeeping is not None:
                    self._housekeeping()
            except Exception:
                logger.exception("recovery or housekeeping failed; trying again in %.0f s", self._every)

    def stop(self) -> None:
        """Stop beating. The executor's row stays: if it does not come back, others recover its pending jobs."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.executor_id is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError), self._engine.begin() as connection:
                connection.execute(instances_table.delete().where(instances_table.c.instance == self.instance))


def _database_now(connection: sa.Connection) -> float:
    """The database's clock, in seconds since the epoch: one clock for every host."""
    if connection.dialect.name == "postgresql":
        query = "SELECT extract(epoch FROM clock_timestamp())"
    elif connection.dialect.name == "sqlite":
        query = "SELECT (julianday('now') - 2440587.5) * 86400.0"
    else:
        return time.time()
    return float(connection.exec_driver_sql(query).scalar_one())


def _first_line(exc: Exception) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
