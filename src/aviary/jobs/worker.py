"""`aviary worker`: a process that only runs queued jobs, beside the API and other workers.

With PostgreSQL (`AVIARY_DATABASE_URL`), any number of workers on any number of machines listen on
the job queue, `AVIARY_WORKERS` jobs each at a time; the API (`AVIARY_RUN_JOBS=false`) only accepts
jobs and answers about them. Every worker beats and reaps (`aviary.jobs.reaper`), so the jobs of a
machine that dies are resumed by the others. SIGINT or SIGTERM stops a worker gracefully: its
running jobs stay pending and resume where they were (on its restart, or by the reaper).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Final

from aviary.engine.registry import Registry
from aviary.jobs import Jobs
from aviary.logs import log_to_stderr

if TYPE_CHECKING:
    from aviary.config import Settings

logger = logging.getLogger(__name__)

GRACE_SECONDS: Final = 5
"""How long a stopping worker lets running jobs go on before leaving them to resume elsewhere."""


def run_worker(settings: Settings, stop: threading.Event | None = None) -> int:
    """Run jobs until `stop` is set (by default, by SIGINT or SIGTERM); return 0."""
    log_to_stderr()
    if stop is None:
        stop = threading.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: stop.set())
    registry = Registry(settings)
    decoder = settings.audio_decoder()
    jobs = Jobs(settings.model_copy(update={"run_jobs": True}), registry, decoder)
    try:
        jobs.start()
        # Wake up now and then: a signal delivered to one of DBOS's threads runs our handler only when
        # the main thread next runs Python code, and an untimed wait would never get there.
        while not stop.wait(0.2):
            pass
    finally:
        jobs.close(grace_seconds=GRACE_SECONDS)
        decoder.close()
        registry.close()
    lingering = [
        t.name for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.current_thread()
    ]
    if lingering:
        # A job still inside a chunk keeps DBOS's (non-daemon) thread busy; its checkpoints are in the
        # database and it resumes elsewhere, so the worker leaves now instead of waiting on it.
        logger.warning(
            "stopping with a job mid-chunk (%s); it resumes from its last finished chunk", ", ".join(lingering)
        )
        sys.stderr.flush()
        os._exit(0)
    return 0
