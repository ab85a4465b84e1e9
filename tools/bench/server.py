"""Server overhead, side by side in one run: a 30 s clip through HTTP vs the same clip through the engine.

The server is a real `aviary serve` process (uvicorn, the isolated decoder, worker threads) with the
same model files and thread count as the engine loaded here. Rounds interleave the two paths (the
server is idle while the engine runs and the other way round); each figure is its median round.
Overhead = HTTP wall time / engine wall time - 1: upload, multipart parsing, decoding the WAV in a
child process, and the JSON answer. Then `concurrent` clients upload at once: every answer must be
a 200, and the server's peak memory (its own and its decoder processes') is recorded.
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests

from aviary.types import SAMPLE_RATE, TranscribeOptions
from tools.bench.clips import speech_clip
from tools.bench.engines import aviary_engine


def _wav(audio: np.ndarray) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _peak_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of `pid` and its children, in MB."""
    total = 0.0
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):  # decoders are started by any thread
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def _start(model: Path, threads: int, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AVIARY_THREADS": str(threads), "AVIARY_DEVICE": "cpu", "AVIARY_MAX_QUEUE": "64"}
    aviary = str(Path(sys.executable).with_name("aviary"))
    command = [aviary, "serve", "--port", str(port), "--model", str(model)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if b'"healthy"' in response.read():
                    return process
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    message = "the server did not become healthy"
    raise RuntimeError(message)


def run(model: Path, *, threads: int, rounds: int, seconds: float = 30.0, concurrent: int = 32) -> dict[str, Any]:
    """Measure HTTP vs the engine on one clip, then `concurrent` uploads at once."""
    clip = speech_clip(np.random.default_rng(11), seconds)
    body = _wav(clip)
    engine = aviary_engine(model, threads)
    port = _free_port()
    server = _start(model, threads, port)
    url = f"http://127.0.0.1:{port}/transcribe"
    try:

        def http() -> str:
            response = requests.post(url, files={"file": ("clip.wav", body, "audio/wav")}, timeout=600)
            response.raise_for_status()
            return str(response.json()["text"])

        def direct() -> str:
            return engine.transcribe([clip], [TranscribeOptions()])[0].text

        assert http() == direct(), "HTTP and the engine disagree"  # noqa: S101  (also the warm-up)
        times: dict[str, list[float]] = {"engine": [], "http": []}
        for number in range(rounds):
            for name, call in (("engine", direct), ("http", http)):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
                print(f"round {number + 1} {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
        engine.close()
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrent) as pool:
            posts = pool.map(lambda _: requests.post(url, files={"file": body}, timeout=3600), range(concurrent))
            statuses = [response.status_code for response in posts]
        wall = time.perf_counter() - start
        peak = _peak_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    engine_s, http_s = statistics.median(times["engine"]), statistics.median(times["http"])
    return {
        "clip_seconds": seconds,
        "threads": threads,
        "rounds": rounds,
        "engine_seconds": round(engine_s, 3),
        "http_seconds": round(http_s, 3),
        "overhead": round(http_s / engine_s - 1, 4),
        "concurrent": {
            "clients": concurrent,
            "ok": statuses.count(200),
            "statuses": sorted(set(statuses)),
            "wall_seconds": round(wall, 1),
            "rtfx": round(concurrent * seconds / wall, 2),
            "server_peak_rss_mb": round(peak, 1),
        },
    }
