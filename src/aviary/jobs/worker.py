"""`aviary worker`: a process that only runs queued jobs, beside the API and other workers.

With PostgreSQL (`AVIARY_DATABASE_URL`), any number of workers on any number of machines listen on
the job queue, `AVIARY_WORKERS` jobs each at a time; the API (`AVIARY_RUN_JOBS=false`) only accepts
jobs and answers about them. Every worker beats and reaps (`aviary.jobs.reaper`), so the jobs of a
machine that dies are resumed by the others. SIGINT or SIGTERM stops a worker gracefully: its
running jobs stay pending and resume where they were (on its restart, or by the reaper).
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

from aviary.engine.registry import Registry
from aviary.jobs import Jobs

if TYPE_CHECKING:
    from aviary.config import Settings


def run_worker(settings: Settings, stop: threading.Event | None = None) -> int:
    """Run jobs until SIGINT/SIGTERM (or `stop` is set); return 0."""
    stop = stop or threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    registry = Registry(settings)
    decoder = settings.audio_decoder()
    jobs = Jobs(settings.model_copy(update={"run_jobs": True}), registry, decoder)
    try:
        jobs.start()
        stop.wait()
    finally:
        jobs.close()
        decoder.close()
        registry.close()
    return 0
