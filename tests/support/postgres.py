"""A throwaway PostgreSQL server from the Debian packages, on an ephemeral port on 127.0.0.1.

PostgreSQL refuses to run as root: as root, the cluster belongs to (and runs as) the `postgres`
user the Debian package creates. Trust authentication on loopback only; the data directory is
removed when the server stops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from tests.support.server import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


def _bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        message = "PostgreSQL is not installed (scripts/setup installs the Debian package)"
        raise RuntimeError(message)
    return found[-1].parent


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class Server:
    """A throwaway PostgreSQL cluster on an ephemeral port, which a test may stop and start again."""

    def __init__(self) -> None:
        self._binaries = _bin()
        self._root = Path(tempfile.mkdtemp(prefix="aviary-pg-"))
        self._data = self._root / "data"
        self._data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self._root, "postgres")
            shutil.chown(self._data, "postgres")
        initdb = [str(self._binaries / "initdb"), "-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        subprocess.run(_as_owner(initdb), check=True, capture_output=True)
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/aviary"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Run the server and wait until it answers."""
        options = ["-D", str(self._data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self._root)]
        self._process = subprocess.Popen(
            _as_owner([str(self._binaries / "postgres"), *options, "-c", "max_connections=200"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 60
        while not self._answered(admin):
            assert self._process.poll() is None, "PostgreSQL exited"
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)

    @staticmethod
    def _answered(admin: str) -> bool:
        """Whether the server answered (and has the `aviary` database now)."""
        try:
            with psycopg.connect(admin, autocommit=True) as connection:
                if connection.execute("SELECT 1 FROM pg_database WHERE datname = 'aviary'").fetchone() is None:
                    connection.execute("CREATE DATABASE aviary")
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """Shut the server down (a fast shutdown: its clients' connections are cut) and wait until it has."""
        if self._process is not None:
            fast = [str(self._binaries / "pg_ctl"), "stop", "-D", str(self._data), "-m", "fast", "-w"]
            subprocess.run(_as_owner(fast), check=False, capture_output=True, timeout=60)
            self._process.terminate()  # if pg_ctl could not: a smart shutdown
            self._process.wait(timeout=30)
            self._process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[Server]:
    """A running server that the test may stop and start."""
    server = Server()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def postgres() -> Iterator[str]:
    """A running server; yields the URL of its `aviary` database (created here)."""
    with postgres_server() as server:
        yield server.url
