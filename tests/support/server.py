"""A real server process (`aviary serve`, `uvicorn app:app`) on an ephemeral port, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
AVIARY = str(Path(sys.executable).with_name("aviary"))
UVICORN = str(Path(sys.executable).with_name("uvicorn"))


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dockerfile_instructions(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction in the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(f"{keyword} ")]


def docker_healthcheck(env: dict[str, str]) -> int:
    """The exit status of the Dockerfile's own HEALTHCHECK command, run with `env` (the port's variables)."""
    command = json.loads(dockerfile_instructions("HEALTHCHECK")[0].split(" CMD ", 1)[1])
    command[0] = sys.executable if command[0] == "python3" else command[0]  # the image's python3 is its venv's
    environment = {k: v for k, v in os.environ.items() if k not in {"PORT", "AVIARY_PORT"}} | env
    return subprocess.run(command, env=environment, capture_output=True, timeout=30, check=False).returncode


def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET `path` and parse the JSON answer (of an error status too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@dataclass
class Running:
    """A started server process and its log (stderr, kept in a file so it never blocks the server)."""

    process: subprocess.Popen[bytes]
    log_file: BinaryIO

    def log(self) -> str:
        """Everything the server has logged so far."""
        self.log_file.seek(0)
        return self.log_file.read().decode(errors="replace")


@contextmanager
def server(command: list[str], port: int, env: dict[str, str]) -> Iterator[Running]:
    """Run `command` until it answers `/health`; stop it with SIGINT (a graceful stop, so coverage sees it)."""
    environment = {**os.environ, "AVIARY_THREADS": "1", "AVIARY_DEVICE": "cpu", **env}
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory(prefix="aviary-data-") as data:
        environment.setdefault("AVIARY_DATA_DIR", data)  # jobs and their database: never the user's own
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=log)
        running = Running(process, log)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    get_json(port, "/health")
                    break
                except OSError:
                    assert process.poll() is None, running.log()
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.2)
            yield running
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


def until_settled(port: int) -> list[dict[str, Any]]:
    """Every `/health` body until the default model is no longer loading."""
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = get_json(port, "/health")
        assert status == 200
        seen.append(body)
        if body["status"] != "loading":
            return seen
        time.sleep(0.1)
    raise AssertionError(seen[-1])
