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


@contextmanager
def postgres() -> Iterator[str]:
    """A running server; yields the URL of its `aviary` database (created here)."""
    binaries = _bin()
    root = Path(tempfile.mkdtemp(prefix="aviary-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    subprocess.run(_as_owner(initdb), check=True, capture_output=True)
    port = free_port()
    options = ["-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(root), "-c", "max_connections=200"]
    process = subprocess.Popen(
        _as_owner([str(binaries / "postgres"), *options]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(admin, autocommit=True) as connection:
                    connection.execute("CREATE DATABASE aviary")
                break
            except psycopg.OperationalError:
                assert process.poll() is None, "PostgreSQL exited"
                assert time.monotonic() < deadline, "PostgreSQL did not start"
                time.sleep(0.2)
        yield f"postgresql://postgres@127.0.0.1:{port}/aviary"
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
