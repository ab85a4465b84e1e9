"""Durable jobs against real server processes on SQLite: the seed's async API, cancel, kill -9 and restart."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import jiwer
import pytest
import requests
from standardwebhooks import Webhook

from aviary.jobs.workflows import MAX_ATTEMPTS
from aviary.types import SAMPLE_RATE
from tests.support.fixtures import AUDIO, MODELS, clip
from tests.support.jobs import CHUNK_SECONDS, Jobs, chunked, recording, status_of, submit, until
from tests.support.longaudio import long_recording
from tests.support.media import cut_mp3
from tests.support.server import AVIARY, free_port, server
from tools.fixtures import speech

if TYPE_CHECKING:
    from collections.abc import Iterator


SECRET = "whsec_" + base64.b64encode(b"aviary test webhook secret 32b!").decode()


@contextlib.contextmanager
def _server(data_dir: Path, **env: str) -> Iterator[tuple[Jobs, subprocess.Popen[bytes]]]:
    port = free_port()
    settings = {
        "AVIARY_DATA_DIR": str(data_dir),
        "AVIARY_EXECUTOR_ID": "test-executor",
        "AVIARY_CHUNK_SECONDS": str(CHUNK_SECONDS),
        "AVIARY_WEBHOOK_SECRET": SECRET,
        "AVIARY_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    command = [AVIARY, "serve", "--port", str(port), "--model", str(MODELS / "parakeet-digits")]
    with server(command, port, settings) as running:
        yield Jobs(f"http://127.0.0.1:{port}", data_dir), running.process


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    with _server(tmp_path_factory.mktemp("jobs")) as (api, _):
        yield api


def test_the_seed_readme_async_python_example(jobs: Jobs, tmp_path: Path) -> None:
    (tmp_path / "audio.mp3").write_bytes((AUDIO / "en-digits-6.wav").read_bytes())
    base = jobs.url
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.chdir(tmp_path):
        # The README's example, with only the URL changed:
        # Start job
        with open("audio.mp3", "rb") as f:  # noqa: PTH123
            files = {"file": f}
            response = requests.post(f"{base}/transcribe/async", files=files)  # noqa: S113
            job = response.json()
            job_id = job["job_id"]
            print(f"Job started: {job_id}")  # noqa: T201

        # Poll for completion
        while True:
            response = requests.get(f"{base}/jobs/{job_id}/status")  # noqa: S113
            status = response.json()

            if status["status"] == "completed":
                result = requests.get(f"{base}/jobs/{job_id}/result")  # noqa: S113
                print(result.json())  # noqa: T201
                break
            if status["status"] == "failed":
                print(f"Job failed: {status['error']}")  # noqa: T201
                break

            print(f"Status: {status['status']}")  # noqa: T201
            time.sleep(5)
    lines = printed.getvalue().splitlines()
    assert lines[0] == f"Job started: {job_id}"
    assert job == {"job_id": job_id, "status": "pending", "message": "Transcription job started for audio.mp3"}
    assert "'text': 'two seven one eight two eight'" in lines[-1]
    assert status["progress"] == 1.0
    assert status["result"]["text"] == "two seven one eight two eight"
    assert status["completed_at"] >= status["created_at"]


def test_unknown_jobs_and_finished_jobs_answer_as_the_seed(jobs: Jobs, tmp_path: Path) -> None:
    for method, path in (("get", "status"), ("get", "result"), ("post", "cancel")):
        response = requests.request(method, f"{jobs.url}/jobs/no-such-job/{path}", timeout=30)
        assert (response.status_code, response.json()["detail"]) == (404, "Job not found")
    audio_path, text = recording(tmp_path, 3)
    job_id = submit(jobs, audio_path)["job_id"]
    done = until(jobs, job_id, {"completed"})
    assert done["result"]["text"] == chunked(audio_path)
    assert (
        jiwer.wer(text, done["result"]["text"]) < 0.3
    )  # the small digits model errs on joined clips; lost or doubled words would show above
    response = requests.post(f"{jobs.url}/jobs/{job_id}/cancel", timeout=30)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "job_finished")
    listed = requests.get(f"{jobs.url}/jobs", params={"status": "completed", "limit": "1"}, timeout=30).json()
    assert listed["total"] >= 1
    assert len(listed["jobs"]) == 1
    assert requests.delete(f"{jobs.url}/jobs/{job_id}", timeout=30).status_code == 204
    assert requests.get(f"{jobs.url}/jobs/{job_id}/status", timeout=30).status_code == 404
    assert not any((jobs.data_dir / "uploads").iterdir())


def test_a_failed_job_keeps_its_code_and_its_result_is_500(jobs: Jobs, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(cut_mp3(clip("en-digits-10.wav"), SAMPLE_RATE))  # only decoding finds what is wrong
    job_id = submit(jobs, cut)["job_id"]
    status = until(jobs, job_id, {"failed"})
    assert status["error_code"] == "invalid_audio"
    response = requests.get(f"{jobs.url}/jobs/{job_id}/result", timeout=30)
    assert response.status_code == 500
    body = response.json()
    assert body["detail"].startswith("Job failed: The audio is truncated")
    assert body["error"]["code"] == "invalid_audio"


def test_plainly_unusable_files_are_refused_at_submission_as_transcribe_refuses_them(jobs: Jobs) -> None:
    before = requests.get(f"{jobs.url}/jobs", timeout=30).json()["total"]
    for name, content, code in [
        ("notes.mp3", b"not audio at all\n" * 50, "unsupported_media"),
        ("empty.wav", b"", "empty_file"),
    ]:
        response = requests.post(f"{jobs.url}/transcribe/async", files={"file": (name, content)}, timeout=60)
        assert (response.status_code, response.json()["error"]["code"]) == (400, code), name
    assert requests.get(f"{jobs.url}/jobs", timeout=30).json()["total"] == before  # no job was made
    assert not any((jobs.data_dir / "uploads").iterdir())


def test_an_idempotency_key_gives_one_job_and_refuses_another_file_or_options(jobs: Jobs, tmp_path: Path) -> None:
    path, _ = recording(tmp_path, 2, seed=5)
    with ThreadPoolExecutor(10) as pool:
        ids = set(pool.map(lambda _: submit(jobs, path, **{"Idempotency-Key": "key-1"})["job_id"], range(10)))
    assert len(ids) == 1
    other, _ = recording(tmp_path, 2, seed=6)
    with other.open("rb") as file:
        response = requests.post(
            f"{jobs.url}/transcribe/async", files={"file": file}, headers={"Idempotency-Key": "key-1"}, timeout=60
        )
    assert (response.status_code, response.json()["error"]["code"]) == (409, "idempotency_conflict")
    with path.open("rb") as file:  # the same file, asked for differently: not the request the key stands for
        response = requests.post(
            f"{jobs.url}/transcribe/async",
            files={"file": file},
            data={"include_timestamps": "false"},
            headers={"Idempotency-Key": "key-1"},
            timeout=60,
        )
    assert (response.status_code, response.json()["error"]["code"]) == (409, "idempotency_conflict")
    assert response.json()["detail"] == "This Idempotency-Key was already used with the same file but other options."


def test_a_cancelled_running_job_stops_within_seconds(jobs: Jobs, tmp_path: Path) -> None:
    path, _ = recording(tmp_path, 240, seed=7)  # ~17 minutes: about a hundred 10 s chunks
    job_id = submit(jobs, path)["job_id"]
    deadline = time.monotonic() + 120
    stages: list[str] = []  # each stage seen, in order
    while (status := status_of(jobs, job_id))["processed_seconds"] <= 0:
        assert time.monotonic() < deadline
        if not stages or stages[-1] != status["stage"]:
            stages.append(status["stage"])
        time.sleep(0.05)
    assert "decoding" in stages, stages  # decoding and planning 17 minutes takes seconds
    assert stages == [s for s in ("queued", "decoding", "transcribing") if s in stages], stages  # in this order
    assert (status["stage"], status["duration"]) == (
        "transcribing",
        pytest.approx(len(speech.read_wav(path)[0]) / SAMPLE_RATE, abs=0.01),
    )
    response = requests.post(f"{jobs.url}/jobs/{job_id}/cancel", timeout=30)
    assert response.json() == {"message": f"Job {job_id} cancellation requested", "status": "cancelled"}
    cancelled_at = time.monotonic()
    first = status_of(jobs, job_id)
    time.sleep(1.0)
    later = status_of(jobs, job_id)
    assert (later["status"], later["stage"]) == ("cancelled", None)
    assert later["processed_seconds"] == first["processed_seconds"]  # nothing recorded after the cancel
    assert 0 < later["progress"] < 1
    response = requests.get(f"{jobs.url}/jobs/{job_id}/result", timeout=30)
    assert (response.status_code, response.json()["detail"]) == (400, "Job was cancelled")
    next_id = submit(jobs, recording(tmp_path, 1, seed=8)[0])["job_id"]
    until(jobs, next_id, {"completed"}, seconds=30)  # the worker moved on
    assert time.monotonic() - cancelled_at < 30
    assert not (jobs.data_dir / "jobs" / f"{job_id}.f32").exists()


def test_a_job_without_pauses_joins_its_windows_as_the_sync_path_does(jobs: Jobs, tmp_path: Path) -> None:
    """A minute with no pause, in windows of 10 s: each chunk, a step of its own, resolves its seam
    with the one before from that chunk's checkpoint, as the sync path does in memory."""
    unbroken = long_recording(70, seed=23, unbroken=((2.0, 60.0),))  # a seam where windows disagree
    path = tmp_path / "unbroken.wav"
    speech.write_wav(path, unbroken.audio)
    status = until(jobs, submit(jobs, path)["job_id"], {"completed", "failed"})
    assert status["status"] == "completed", status
    assert status["result"]["text"] == chunked(path)
    assert status["result"]["text"] == unbroken.text  # each word once (without the seams: one twice)


def test_what_jobs_keep_on_disk_is_readable_by_the_servers_user_only(jobs: Jobs, tmp_path: Path) -> None:
    path, _ = recording(tmp_path, 2, seed=7)
    until(jobs, submit(jobs, path)["job_id"], {"completed"})
    for kept in ("jobs", "uploads", "aviary.sqlite"):  # decoded audio, uploads, transcripts
        assert (jobs.data_dir / kept).stat().st_mode & 0o077 == 0, kept


@pytest.mark.parametrize("command", [["worker"], ["serve", "--port", "0"]])
def test_a_jobs_database_that_cannot_be_used_is_one_line(tmp_path: Path, command: list[str]) -> None:
    for url, reason in [
        ("nonsense", "Aviary keeps jobs in sqlite:///path/file or postgresql://user@host/database."),
        ("mysql://u:pw@127.0.0.1/db", "Aviary keeps jobs in sqlite:///path/file or postgresql://user@host/database."),
    ]:
        environment = {**os.environ, "AVIARY_DATA_DIR": str(tmp_path), "AVIARY_DATABASE_URL": url}
        done = subprocess.run(
            [AVIARY, *command], capture_output=True, text=True, env=environment, timeout=120, check=False
        )
        assert done.returncode == 1
        assert done.stderr.splitlines()[-1].startswith("aviary: error: [database_unavailable] The jobs database "), (
            done.stderr
        )
        assert done.stderr.splitlines()[-1].endswith(reason)
        assert "pw" not in done.stderr
        assert "Traceback" not in done.stderr


def test_kill_9_with_jobs_in_flight_loses_and_repeats_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    recordings = [recording(tmp_path, 6, seed=100 + i) for i in range(50)]  # 50 jobs, ~25 s (3 chunks) each
    with _server(data) as (api, process):
        ids = [submit(api, path)["job_id"] for path, _ in recordings]
        deadline = time.monotonic() + 120
        while not any(status_of(api, i)["processed_seconds"] > 0 for i in ids):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        before = [status_of(api, i) for i in ids]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert any(s["status"] != "completed" for s in before), "every job finished before the kill: nothing was tested"
    with _server(data) as (api, _):
        after = [until(api, i, {"completed", "failed", "cancelled"}) for i in ids]
        listed = requests.get(f"{api.url}/jobs", params={"limit": "100"}, timeout=30).json()
    assert [s["status"] for s in after] == ["completed"] * len(ids)
    assert listed["total"] == len(ids)
    for status, (path, text) in zip(after, recordings, strict=True):
        assert status["result"]["text"] == chunked(path)
        assert jiwer.wer(text, status["result"]["text"]) < 0.3
    assert not any((data / "uploads").iterdir())
    assert not any((data / "jobs").iterdir())
    assert os.environ.get("AVIARY_DATA_DIR") is None


def test_restarts_between_steps_never_add_up_but_three_deaths_on_one_step_fail_the_job(tmp_path: Path) -> None:
    """A job must survive any number of restarts that each let it progress, and must not kill workers for ever."""
    data = tmp_path / "data"
    path, _ = recording(tmp_path, 240, seed=13)  # ~17 minutes: about a hundred 10 s chunks
    job_id, seen = None, 0.0
    for _ in range(MAX_ATTEMPTS + 2):  # more restarts than the deaths in a row a job is allowed
        with _server(data) as (api, process):
            job_id = job_id or submit(api, path)["job_id"]
            deadline = time.monotonic() + 120
            while (status := status_of(api, job_id))["processed_seconds"] <= seen:
                assert status["status"] == "processing" or status["status"] == "pending", status
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert status["status"] == "processing", "the job ended between restarts: nothing was tested"
            seen = status["processed_seconds"]
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    with _server(data) as (api, _):
        done = until(api, str(job_id), {"completed", "failed", "cancelled"})
    assert (done["status"], done["result"]["text"]) == ("completed", chunked(path))

    long_path, _ = recording(tmp_path, 600, seed=14)  # ~40 minutes: seconds of decoding before the first chunk
    job_id = None
    for _ in range(MAX_ATTEMPTS):  # each process dies while the job is still decoding (its first step)
        with _server(data) as (api, process):
            job_id = job_id or submit(api, long_path)["job_id"]
            until(api, job_id, {"processing"})
            time.sleep(0.2)
            assert status_of(api, job_id)["processed_seconds"] == 0, "the first step ended: nothing was tested"
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    with _server(data) as (api, _):
        failed = until(api, str(job_id), {"completed", "failed", "cancelled"})
        listed = requests.get(f"{api.url}/jobs", params={"status": "failed"}, timeout=30).json()
    assert (failed["status"], failed["error_code"]) == ("failed", "job_crashed")
    assert [job["job_id"] for job in listed["jobs"]] == [job_id]
    assert not any((data / "uploads").iterdir())
    assert not any((data / "jobs").iterdir())


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Answers 500 to the first two tries of each event, then 200; records every try."""

    tries: ClassVar[list[tuple[dict[str, str], bytes, int]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        earlier = sum(1 for h, _, _ in self.tries if h["webhook-id"] == headers["webhook-id"])
        code = 500 if earlier < 2 else 200
        self.tries.append((headers, body, code))
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        del args


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes, int]]]]:
    _Receiver.tries = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", _Receiver.tries
    finally:
        httpd.shutdown()
        httpd.server_close()


def _submit_with_webhook(jobs: Jobs, path: Path, url: str) -> str:
    with path.open("rb") as file:
        response = requests.post(
            f"{jobs.url}/transcribe/async", files={"file": file}, data={"webhook_url": url}, timeout=60
        )
    return str(response.json()["job_id"])


def _events(tries: list[tuple[dict[str, str], bytes, int]], event_id: str, seconds: float = 60) -> list[int]:
    deadline = time.monotonic() + seconds
    while not any(h["webhook-id"] == event_id and code == 200 for h, _, code in tries):
        assert time.monotonic() < deadline, tries
        time.sleep(0.05)
    return [code for h, _, code in tries if h["webhook-id"] == event_id]


def test_webhooks_are_signed_retried_and_delivered_once_per_event(
    jobs: Jobs, tmp_path: Path, receiver: tuple[str, list[tuple[dict[str, str], bytes, int]]]
) -> None:
    url, tries = receiver
    audio_path, _ = recording(tmp_path, 2, seed=11)
    job_id = _submit_with_webhook(jobs, audio_path, url)
    assert _events(tries, f"{job_id}.job.completed") == [500, 500, 200]  # retried with backoff, then accepted
    notes = tmp_path / "cut.mp3"
    notes.write_bytes(cut_mp3(clip("en-digits-6.wav"), SAMPLE_RATE))  # accepted; its job fails
    failed_id = _submit_with_webhook(jobs, notes, url)
    assert _events(tries, f"{failed_id}.job.failed")[-1] == 200
    verifier = Webhook(SECRET)
    for headers, body, _ in tries:
        event = verifier.verify(body, headers)  # raises unless the signature is right
        assert event["type"] in {"job.completed", "job.failed"}
        assert event["data"]["job_id"] in {job_id, failed_id}
    completed = next(json.loads(b) for h, b, c in tries if c == 200 and h["webhook-id"] == f"{job_id}.job.completed")
    assert completed["data"]["status"] == "completed"
    assert completed["data"]["result"]["text"]
    assert requests.delete(f"{jobs.url}/jobs/{job_id}", timeout=30).status_code == 204
    with contextlib.closing(sqlite3.connect(jobs.data_dir / "aviary.sqlite")) as database:
        kept = database.execute(
            "SELECT workflow_uuid FROM workflow_status WHERE workflow_uuid LIKE ?", (f"%{job_id}%",)
        )
        assert kept.fetchall() == []  # not even the delivery, whose input held the transcript
    response = requests.post(
        f"{jobs.url}/transcribe/async",
        files={"file": audio_path.read_bytes()},
        data={"webhook_url": "http://10.1.2.3/hook"},
        timeout=60,
    )
    assert (response.status_code, response.json()["error"]["param"]) == (400, "webhook_url")


def test_a_delivery_still_retrying_when_its_job_is_deleted_leaves_no_record_once_it_ends(
    jobs: Jobs, tmp_path: Path, receiver: tuple[str, list[tuple[dict[str, str], bytes, int]]]
) -> None:
    url, tries = receiver
    audio_path, _ = recording(tmp_path, 1, seed=12)
    job_id = _submit_with_webhook(jobs, audio_path, url)
    deadline = time.monotonic() + 60
    while not any(h["webhook-id"] == f"{job_id}.job.completed" for h, _, _ in tries):  # the first try: 500
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert requests.delete(f"{jobs.url}/jobs/{job_id}", timeout=30).status_code == 204  # it retries in 1 s
    assert _events(tries, f"{job_id}.job.completed") == [500, 500, 200]  # the delivery went on
    deadline = time.monotonic() + 30
    while True:
        with contextlib.closing(sqlite3.connect(jobs.data_dir / "aviary.sqlite")) as database:
            kept = database.execute(
                "SELECT workflow_uuid FROM workflow_status WHERE workflow_uuid LIKE ?", (f"%{job_id}%",)
            ).fetchall()
        if not kept:
            break  # the delivery's record, whose input held the transcript, went once it ended
        assert time.monotonic() < deadline, kept
        time.sleep(0.2)


def test_deleting_a_running_job_tells_its_webhook_it_was_cancelled(
    jobs: Jobs, tmp_path: Path, receiver: tuple[str, list[tuple[dict[str, str], bytes, int]]]
) -> None:
    url, tries = receiver
    path, _ = recording(tmp_path, 120, seed=12)  # ~8 minutes: still running when it is deleted
    job_id = _submit_with_webhook(jobs, path, url)
    deadline = time.monotonic() + 120
    while status_of(jobs, job_id)["status"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert requests.delete(f"{jobs.url}/jobs/{job_id}", timeout=30).status_code == 204
    assert _events(tries, f"{job_id}.job.cancelled")[-1] == 200
    event = Webhook(SECRET).verify(*next((b, h) for h, b, c in tries if c == 200))
    assert (event["type"], event["data"]["job_id"], event["data"]["status"]) == ("job.cancelled", job_id, "cancelled")
    assert requests.get(f"{jobs.url}/jobs/{job_id}/status", timeout=30).status_code == 404


def test_ended_jobs_are_purged_after_the_retention_time(tmp_path: Path) -> None:
    settings = {"AVIARY_JOB_RETENTION_SECONDS": "1", "AVIARY_HEARTBEAT_SECONDS": "0.2"}
    with _server(tmp_path / "data", **settings) as (api, _):
        job_id = submit(api, recording(tmp_path, 1, seed=12)[0])["job_id"]
        until(api, job_id, {"completed"})
        deadline = time.monotonic() + 30
        while requests.get(f"{api.url}/jobs/{job_id}/status", timeout=30).status_code != 404:
            assert time.monotonic() < deadline, "the ended job was never purged"
            time.sleep(0.1)
        assert requests.get(f"{api.url}/jobs", timeout=30).json()["total"] == 0


def test_twenty_random_cancels_each_stop_their_job_and_the_worker_goes_on(jobs: Jobs, tmp_path: Path) -> None:
    rng = random.Random(20)  # noqa: S311  (when to cancel, not a secret)
    paths = [recording(tmp_path, 30, seed=400 + i)[0] for i in range(20)]  # ~2 minutes (12 chunks) each
    ids = [submit(jobs, path)["job_id"] for path in paths]
    cancelled = []
    for job_id in ids:
        deadline = time.monotonic() + 120
        while (state := status_of(jobs, job_id))["status"] == "pending" or state["processed_seconds"] <= 0:
            if state["status"] in {"completed", "failed", "cancelled"}:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.1))
        response = requests.post(f"{jobs.url}/jobs/{job_id}/cancel", timeout=30)
        if response.status_code == 400:  # it finished first
            assert response.json()["error"]["code"] == "job_finished"
            continue
        assert response.status_code == 200
        cancelled.append(job_id)
        frozen = status_of(jobs, job_id)
        assert frozen["status"] == "cancelled"
        assert 0 < frozen["progress"] < 1
    assert len(cancelled) >= 10, "most jobs finished before their cancel: nothing was tested"
    time.sleep(1.0)
    for job_id in cancelled:
        after = status_of(jobs, job_id)
        assert after["status"] == "cancelled"
        assert after["result"] is None
        assert not (jobs.data_dir / "jobs" / f"{job_id}.f32").exists()
    follow = submit(jobs, recording(tmp_path, 1, seed=499)[0])["job_id"]
    until(jobs, follow, {"completed"}, seconds=30)


def _peak_rss_mb(pid: int) -> float:
    lines = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines()
    return next(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:"))


def _ten_hours_with_a_few_words(tmp_path: Path) -> tuple[Path, list[float]]:
    """35 990 s of silence (FLAC, built by sox as a stream) with one digit clip at three places."""
    clip = AUDIO / "en-digits-6.wav"
    places = [600.0, 5 * 3600.0, 9.9 * 3600.0]
    pieces, before = [], 0.0
    clip_seconds = float(subprocess.run(["soxi", "-D", str(clip)], capture_output=True, text=True, check=True).stdout)
    for number, at in enumerate(places):
        piece = tmp_path / f"piece-{number}.flac"
        subprocess.run(["sox", str(clip), str(piece), "pad", f"{at - before:.3f}", "0"], check=True)
        pieces.append(str(piece))
        before = at + clip_seconds
    tail = tmp_path / "tail.flac"
    subprocess.run(["sox", str(clip), str(tail), "trim", "0", "0.01", "pad", "0", f"{35_990 - before:.3f}"], check=True)
    path = tmp_path / "ten-hours.flac"
    subprocess.run(["sox", *pieces, str(tail), str(path)], check=True)
    return path, places


def test_a_ten_hour_file_of_silence_and_a_few_words_finishes_in_bounded_memory(tmp_path: Path) -> None:
    path, places = _ten_hours_with_a_few_words(tmp_path)
    with _server(tmp_path / "data") as (api, process):
        before = _peak_rss_mb(process.pid)
        job_id = submit(api, path)["job_id"]
        done = until(api, job_id, {"completed", "failed"}, seconds=900)
        peak = _peak_rss_mb(process.pid)
    assert done["status"] == "completed", done
    assert done["result"]["duration"] == pytest.approx(35_990, abs=1)
    assert jiwer.wer(" ".join(["two seven one eight two eight"] * 3), done["result"]["text"]) <= 0.2
    starts = [segment["start"] for segment in done["result"]["segments"]]
    assert all(any(abs(start - at) < 1.5 for at in places) for start in starts), starts
    assert {min(places, key=lambda at: abs(at - start)) for start in starts} == set(places)
    # Ten hours of float32 samples would be 2.3 GB: the server holds a window and a chunk, not the file.
    assert peak - before < 400, (before, peak)
    assert not any((api.data_dir / "jobs").iterdir())
