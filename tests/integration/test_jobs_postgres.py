"""Many workers on PostgreSQL: an API that only accepts jobs, two `aviary worker`s, and a worker killed mid-job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import requests
import sqlalchemy as sa

from aviary.jobs.reaper import Reaper
from aviary.jobs.store import Job, JobStore
from tests.support.fixtures import MODELS
from tests.support.jobs import Jobs, chunked, recording, status_of, submit, until
from tests.support.postgres import postgres, postgres_server
from tests.support.server import AVIARY, ROOT, free_port, server

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with postgres() as url:
        yield url


def _environment(url: str, data: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AVIARY_DATABASE_URL": url,
        "AVIARY_DATA_DIR": str(data),  # the API and the workers share it (one machine here; shared storage across)
        "AVIARY_CHUNK_SECONDS": "10",
        "AVIARY_HEARTBEAT_SECONDS": "0.5",
        "AVIARY_EXECUTOR_TIMEOUT": "3",
        "AVIARY_THREADS": "1",
        "AVIARY_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }


@contextlib.contextmanager
def _worker(url: str, data: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """`aviary worker` as `name`; its stderr goes to `<data>/../<name>.log` (appended across restarts)."""
    command = [AVIARY, "worker", "--executor-id", name, "--model", str(MODELS / "parakeet-digits")]
    env = {**_environment(url, data), "PYTHONFAULTHANDLER": "1"}
    with (data.parent / f"{name}.log").open("a+b") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield process
        finally:
            if process.poll() is None:
                # SIGTERM, not SIGINT: a shell that starts the suite in the background hands its
                # children SIGINT ignored, and a worker signalled before its handler exists never hears it.
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
                    process.wait(timeout=30)
                    log.seek(0)
                    pytest.fail(
                        f"worker {name} did not stop on SIGINT:\n{log.read().decode(errors='replace')[-20000:]}"
                    )


def _logs(directory: Path) -> str:
    """The end of every worker's log in `directory`."""
    logs = sorted(directory.glob("*.log"))
    return "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-6000:]}" for log in logs)


def _executor_of(url: str, job_id: str) -> str | None:
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT executor_id, status FROM dbos.workflow_status WHERE workflow_uuid = %s", (job_id,)
        ).fetchone()
    return str(row[0]) if row is not None and row[1] == "PENDING" else None


def test_processes_starting_together_on_a_new_database_all_create_the_tables(database: str) -> None:
    # A fleet started at once on an empty database: every process creates the tables it needs.
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("CREATE DATABASE fresh_fleet")
    url = database.rsplit("/", 1)[0] + "/fresh_fleet"
    starters = 8
    ready = threading.Barrier(starters)
    failures: list[BaseException] = []

    def start(number: int) -> None:
        try:
            ready.wait()
            store = JobStore(url)
            Reaper(store.engine, f"worker-{number}", lambda _: None, heartbeat_seconds=1, timeout_seconds=3).beat()
            store.engine.dispose()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    with psycopg.connect(url) as check:
        beats = check.execute("SELECT count(*) FROM aviary_executors").fetchone()
        jobs = check.execute("SELECT count(*) FROM aviary_jobs").fetchone()
    assert (beats, jobs) == ((starters,), (0,))


def test_a_killed_worker_s_jobs_are_finished_by_the_other(database: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in _environment(database, data).items() if k.startswith(("AVIARY_", "HF_"))}
    env |= {"AVIARY_RUN_JOBS": "false", "AVIARY_EXECUTOR_ID": "api"}
    command = [AVIARY, "serve", "--port", str(port), "--model", str(MODELS / "parakeet-digits")]
    with server(command, port, env), contextlib.ExitStack() as stack:
        api = Jobs(f"http://127.0.0.1:{port}", data)
        workers = {name: stack.enter_context(_worker(database, data, name)) for name in ("w1", "w2")}
        killed_mid_job = 0
        for round_number in range(5):
            path, _ = recording(tmp_path, 40, seed=300 + round_number)  # ~3.5 minutes: 20 chunks
            job_id = submit(api, path)["job_id"]
            deadline = time.monotonic() + 120
            while (owner := _executor_of(database, job_id)) is None or status_of(api, job_id)["processed_seconds"] <= 0:
                assert time.monotonic() < deadline, status_of(api, job_id)
                time.sleep(0.01)
            workers[owner].send_signal(signal.SIGKILL)
            workers[owner].wait(timeout=30)
            killed_mid_job += status_of(api, job_id)["status"] != "completed"
            try:
                done = until(api, job_id, {"completed", "failed", "cancelled"}, seconds=120)
            except AssertionError as exc:
                pytest.fail(f"job {job_id} of round {round_number + 1}, {owner} killed: {exc}\n{_logs(tmp_path)}")
            assert done["status"] == "completed", done
            assert done["result"]["text"] == chunked(path)
            workers[owner] = stack.enter_context(_worker(database, data, owner))  # back, under its own name
        assert killed_mid_job >= 3, "the kills came too late to test anything"
        listed = requests.get(f"{api.url}/jobs", params={"status": "completed"}, timeout=30).json()
        assert listed["total"] == 5


def test_a_database_restart_neither_fails_a_step_nor_hands_live_workers_jobs_away() -> None:
    """PostgreSQL down for 5 s, then back: a job step's store call waits it out, and no process
    takes another's jobs because every heartbeat went stale while it was down."""
    with postgres_server() as server:
        store = JobStore(server.url)
        job = Job(id="j", status="processing", filename="a.wav", options={}, created_at=time.time())
        store.create(job)
        claimed: list[list[str]] = []
        reapers = [  # "a" beats often and is first back; "b" beats well within the timeout, but later
            Reaper(store.engine, name, claimed.append, heartbeat_seconds=every, timeout_seconds=2)
            for name, every in (("a", 0.25), ("b", 1.5))
        ]
        for reaper in reapers:
            reaper.start()
        server.stop()
        try:
            with pytest.raises(sa.exc.OperationalError):
                store.get("j")  # a request's call says so at once
            waited: list[object] = []
            step = threading.Thread(target=lambda: waited.append(store.patient(60).update("j", processed_seconds=4.0)))
            step.start()
            time.sleep(5)  # longer than the executor timeout: every heartbeat is stale
            server.start()
            step.join(60)
            time.sleep(4)  # two timeouts of beating again
        finally:
            for reaper in reapers:
                reaper.stop()
        assert waited == [True]
        assert store.get("j") is not None
        assert store.get("j").processed_seconds == 4.0  # type: ignore[union-attr]
        assert claimed == []  # both were alive all along
        store.close()


def _health_until(url: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    health: dict[str, Any] = {}
    while (health := requests.get(url, timeout=30).json())["status"] != status:
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    return health


@pytest.mark.parametrize("run_jobs", ["true", "false"])
def test_while_the_database_is_away_job_routes_answer_503_health_says_so_and_both_come_back(
    tmp_path: Path, run_jobs: str
) -> None:
    with postgres_server() as database:
        port = free_port()
        env = {
            k: v for k, v in _environment(database.url, tmp_path / "data").items() if k.startswith(("AVIARY_", "HF_"))
        }
        env |= {"AVIARY_WARM_UP": "false", "AVIARY_RUN_JOBS": run_jobs, "AVIARY_HEARTBEAT_SECONDS": "0.5"}
        command = [AVIARY, "serve", "--port", str(port), "--model", str(MODELS / "parakeet-digits")]
        with server(command, port, env):
            url = f"http://127.0.0.1:{port}/jobs"
            before = _health_until(f"http://127.0.0.1:{port}/health", "healthy")
            assert requests.get(url, timeout=30).status_code == 200
            database.stop()
            away = requests.get(url, timeout=30)
            degraded = _health_until(f"http://127.0.0.1:{port}/health", "degraded")
            database.start()
            deadline = time.monotonic() + 30
            while (back := requests.get(url, timeout=30)).status_code != 200:
                assert time.monotonic() < deadline, back.text
                time.sleep(0.5)
            after = _health_until(f"http://127.0.0.1:{port}/health", "healthy")
    assert (away.status_code, away.json()["error"]["code"]) == (503, "database_unavailable")
    assert away.headers["retry-after"] == "5"
    assert (before["jobs_database"], before["reason"], before["model_loaded"]) == ("available", None, True)
    assert degraded["jobs_database"] == "unavailable"
    assert degraded["reason"].startswith("[database_unavailable] the jobs database does not answer: ")
    assert degraded["model_loaded"] is True  # synchronous transcription still works
    assert (after["jobs_database"], after["reason"]) == ("available", None)
