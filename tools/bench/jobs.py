"""Job path vs `/transcribe`, side by side in one run: queue latency and the throughput of many short jobs.

One real `aviary serve` process (embedded worker, SQLite in a temporary data directory, one worker)
serves both paths with the same short clips. Each round sends the clips one after another through
`POST /transcribe`, then submits them all as jobs and waits for the last to complete; the figures
are the median rounds. Queue latency is measured on an idle server: one job at a time, from its
`created_at` to its `started_at` (the moment a worker began it).

The client polls each job's status every `POLL_SECONDS` (the original server's README example polls
every 5 s): the polls cost the server CPU that the `/transcribe` client, blocked on its response, does
not spend, and on 2 cores a 20 ms poll alone took about a tenth of the machine. The last job is seen
at most `POLL_SECONDS` late, well under 1% of a round.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests

from tools.bench.clips import speech_clip
from tools.bench.server import _free_port, _wav

POLL_SECONDS = 0.5


def _start(model: Path, threads: int, port: int, data: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AVIARY_THREADS": str(threads),
        "AVIARY_DEVICE": "cpu",
        "AVIARY_DATA_DIR": data,
        "AVIARY_MAX_QUEUE": "1000",
    }
    aviary = str(Path(sys.executable).with_name("aviary"))
    process = subprocess.Popen(
        [aviary, "serve", "--port", str(port), "--model", str(model)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["status"] == "healthy":
                return process
        except requests.RequestException:
            pass
        time.sleep(0.5)
    process.kill()
    message = "the server did not become healthy"
    raise RuntimeError(message)


def _wait(url: str, job_id: str, interval: float) -> dict[str, Any]:
    while True:
        status = requests.get(f"{url}/jobs/{job_id}/status", timeout=60).json()
        if status["status"] in {"completed", "failed", "cancelled"}:
            return dict(status)
        time.sleep(interval)


def run(model: Path, *, threads: int, rounds: int, jobs: int = 200, seconds: float = 3.0) -> dict[str, Any]:
    """Measure both paths on `jobs` clips of `seconds` each."""
    distinct = [_wav(speech_clip(np.random.default_rng(seed), seconds)) for seed in range(20)]
    bodies = [distinct[i % len(distinct)] for i in range(jobs)]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="aviary-bench-jobs-") as data:
        server = _start(model, threads, port, data)
        try:
            latencies = []
            for body in distinct:  # idle server: one job at a time
                job_id = requests.post(f"{url}/transcribe/async", files={"file": body}, timeout=60).json()["job_id"]
                status = _wait(url, job_id, 0.01)
                created, started = (datetime.fromisoformat(status[k]) for k in ("created_at", "started_at"))
                latencies.append((started - created).total_seconds())
            times: dict[str, list[float]] = {"transcribe": [], "jobs": []}
            for number in range(rounds):
                start = time.perf_counter()
                for body in bodies:
                    requests.post(f"{url}/transcribe", files={"file": body}, timeout=600).raise_for_status()
                times["transcribe"].append(time.perf_counter() - start)
                start = time.perf_counter()
                ids = [
                    requests.post(f"{url}/transcribe/async", files={"file": b}, timeout=60).json()["job_id"]
                    for b in bodies
                ]
                statuses = [_wait(url, job_id, POLL_SECONDS)["status"] for job_id in ids]
                times["jobs"].append(time.perf_counter() - start)
                assert statuses == ["completed"] * len(ids), statuses  # noqa: S101
                print(
                    f"round {number + 1}: transcribe {times['transcribe'][-1]:.1f} s, jobs {times['jobs'][-1]:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(timeout=60)
    sync, queued = statistics.median(times["transcribe"]), statistics.median(times["jobs"])
    return {
        "jobs": jobs,
        "clip_seconds": seconds,
        "threads": threads,
        "rounds": rounds,
        "transcribe_seconds": round(sync, 2),
        "jobs_seconds": round(queued, 2),
        "jobs_vs_transcribe": round(queued / sync, 4),
        "queue_latency_ms": {
            "median": round(1000 * statistics.median(latencies), 1),
            "max": round(1000 * max(latencies), 1),
        },
    }
