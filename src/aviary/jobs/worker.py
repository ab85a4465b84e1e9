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
    """Run jobs until SIGINT or SIGTERM (or until `stop` is set, when one is given); return 0.

    The signals are blocked before DBOS starts its threads (they inherit the mask) and the main
    thread collects them with `sigtimedwait`, so a signal cannot go astray to a thread that never
    tells the main one; the timeout lets one that did reach an older thread still raise here.
    """
    log_to_stderr()
    signals = {signal.SIGINT, signal.SIGTERM}
    if stop is None:
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    registry = Registry(settings)
    decoder = settings.audio_decoder()
    jobs = Jobs(settings.model_copy(update={"run_jobs": True}), registry, decoder)
    try:
        jobs.start()
        while not (received := stop.wait(0.5) if stop is not None else signal.sigtimedwait(signals, 0.5)):
            pass  # the timeout lets a signal that reached another thread raise here (KeyboardInterrupt)
        if not isinstance(received, bool):
            logger.info("stopping on %s from process %d", signal.Signals(received.si_signo).name, received.si_pid)
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
