"""Cross-request batching, side by side in one run: many clients at once against a real server.

`clients` HTTP clients (threads, one `requests.Session` each) send `requests_per_client` distinct
10 s clips each, one after another (a closed loop: a client sends its next clip when the answer to
the last one came), to `POST /transcribe`. Throughput is the audio sent over the wall time from
the first upload to the last answer (RTFx); latency is each request's upload-to-answer time. Five
systems run the same clips:

- `aviary (batcher)`: a real `aviary serve` process with the default dynamic batcher
  (`AVIARY_BATCH_SIZE=batch`, `AVIARY_WORKERS` >= `clients`, a queue that never refuses).
- `aviary (batch 1)`: the same server with `AVIARY_BATCH_SIZE=1`: requests run one model call each.
- `onnx-asr, one request at a time`: the same model files loaded by onnx-asr in this process,
  transcribing the clips one after another, as a server built on it serves (one model behind a
  lock). It pays no HTTP, upload or decoding, which only flatters it.
- `aviary engine alone`: the same engine in this process, transcribing the clips in batches of
  `batch` (features, encoder in parts, decoding): what the server could reach with no HTTP, no
  decoding of uploads and no wait between batches. Between it and the bound: the features and the
  greedy decoder; between it and the batcher: everything the server adds.
- `encoder-only bound`: Aviary's own encoder session alone on precomputed features in batches of
  `batch`, each encoded in the engine's own runs (`encoder_parts`), as the batcher runs them: no
  end-to-end system can beat it.

Both servers stay loaded for the whole run, each paused (SIGSTOP) while it is not the one measured:
an idle server is not free (its background threads took 3.3% of a core), and that would be
charged to whichever system runs meanwhile. The systems are interleaved: every round runs each one
in turn, after one warm-up pass each; each figure is its median round, latencies are pooled over
the rounds. The servers are started through a small
bootstrap that records each batcher it makes and writes their `stats()` to a file five times a
second, so the mean batch per round is measured too, and the share of the round's wall time the
engine was running (`engine_busy_fraction`: the rest is the batcher waiting for requests); the
server itself is `aviary.cli.main` as is.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import requests

from aviary.types import TranscribeOptions
from tools.bench.clips import speech_clip
from tools.bench.engines import aviary_engine
from tools.bench.server import _free_port, _peak_mb, _wav

if TYPE_CHECKING:
    from collections.abc import Callable

    from aviary.engine.base import Engine
    from aviary.types import Audio

BATCHER = "aviary (batcher)"
BATCH1 = "aviary (batch 1)"
ONNX_ASR = "onnx-asr, one request at a time"
ENGINE = "aviary engine alone"
BOUND = "encoder-only bound"

BOOT = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from aviary.engine import batcher as _batcher
    from aviary.cli import main

    _made = []
    _init = _batcher.Batcher.__init__

    def _record(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        _made.append(self)

    def _report(path):
        while True:
            time.sleep(0.2)
            stats = [b.stats() for b in list(_made)]
            text = json.dumps({
                "batches": sum(s.batches for s in stats),
                "items": sum(s.items for s in stats),
                "largest": max((s.largest for s in stats), default=0),
                "busy": sum(s.busy for s in stats),
            })
            with open(path + ".tmp", "w") as out:
                out.write(text)
            os.replace(path + ".tmp", path)

    _batcher.Batcher.__init__ = _record
    threading.Thread(target=_report, args=(os.environ["AVIARY_BENCH_STATS"],), daemon=True).start()
    sys.exit(main(sys.argv[1:]))
    """
)
"""Runs `aviary serve` (the arguments after `-c BOOT`) with its batchers' counts written to $AVIARY_BENCH_STATS."""


@dataclass
class Server:
    """One `aviary serve` process, its batch counters and its log."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    stats: Path
    log: Path

    def counts(self) -> tuple[int, int, int, float]:
        """Batches run, items in them, the largest batch and seconds in engine calls so far (after the next write)."""
        time.sleep(0.5)
        try:
            data = json.loads(self.stats.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0, 0, 0, 0.0
        return int(data["batches"]), int(data["items"]), int(data["largest"]), float(data["busy"])

    def pause(self) -> None:
        """Stop the process's threads (SIGSTOP) until `resume`: it keeps its memory and takes no CPU."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let the process run again (SIGCONT)."""
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the server (resumed first, so it can shut down) and wait for it."""
        if self.process.poll() is None:
            self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class System:
    """A system under test: one measured pass (which records itself), and its warm-up."""

    measure: Callable[[], None]
    warm_up: Callable[[], object]


@dataclass
class Record:
    """One system's rounds: wall seconds, request latencies, batch counts, and its last round's texts."""

    walls: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    batches: int = 0
    items: int = 0
    largest: int = 0
    busy: list[float] = field(default_factory=list)  # per round: seconds the server spent in engine calls
    texts: list[str] = field(default_factory=list)


def _start(name: str, model: Path, work: Path, env: dict[str, str]) -> Server:
    """Start a server with `env` added to the environment and wait until it is healthy."""
    port = _free_port()
    data = work / name
    data.mkdir()
    stats, log = work / f"{name}.stats.json", work / f"{name}.log"
    environment = {**os.environ, **env, "AVIARY_DATA_DIR": str(data), "AVIARY_BENCH_STATS": str(stats)}
    command = [sys.executable, "-c", BOOT, "serve", "--port", str(port), "--model", str(model)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, process, f"http://127.0.0.1:{port}", stats, log)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{server.url}/health", timeout=5).json()["status"] == "healthy":
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
    message = f"the server {name!r} did not become healthy; its log ends with:\n{tail}"
    raise RuntimeError(message)


def _closed_loop(url: str, plan: list[list[int]], bodies: list[bytes]) -> tuple[float, list[float], dict[int, str]]:
    """Each client sends its clips (indices into `bodies`) one after another; wall time, latencies, texts."""
    latencies: list[float] = []
    texts: dict[int, str] = {}
    lock = threading.Lock()
    ready = threading.Barrier(len(plan) + 1)

    def client(indices: list[int]) -> None:
        with requests.Session() as session:
            ready.wait()
            for index in indices:
                start = time.perf_counter()
                response = session.post(
                    f"{url}/transcribe", files={"file": (f"{index}.wav", bodies[index], "audio/wav")}, timeout=3600
                )
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                with lock:
                    latencies.append(elapsed)
                    texts[index] = str(response.json()["text"])

    with ThreadPoolExecutor(len(plan)) as pool:
        futures = [pool.submit(client, indices) for indices in plan]
        ready.wait()
        start = time.perf_counter()
        for future in futures:
            future.result()
        wall = time.perf_counter() - start
    return wall, latencies, texts


def _encoder_only(engine: Any, clips: list[Audio], batch: int) -> Callable[[], None]:  # noqa: ANN401
    """Aviary's encoder session alone on features precomputed in batches of `batch`.

    Each batch is encoded in the engine's own runs (`encoder_parts`: at most `encoder_max_seconds` padded).
    """
    encoder = engine._encoder  # noqa: SLF001 - the bound must run the very session Aviary runs
    groups = [clips[i : i + batch] for i in range(0, len(clips), batch)]
    parts = [[g[k] for k in part] for g in groups for part in engine.encoder_parts([len(c) for c in g])]
    features = [engine._preprocessor(part) for part in parts]  # noqa: SLF001

    def run() -> None:
        for values, lengths in features:
            encoder.run(None, {"audio_signal": values, "length": lengths})

    return run


def _engine_alone(engine: Engine, clips: list[Audio], batch: int) -> Callable[[], list[str]]:
    """Aviary's engine in this process on the clips in batches of `batch`; their texts."""
    options = [TranscribeOptions()] * batch

    def run() -> list[str]:
        groups = [clips[i : i + batch] for i in range(0, len(clips), batch)]
        return [t.text for group in groups for t in engine.transcribe(group, options[: len(group)])]

    return run


def _onnx_asr(model: Path, threads: int) -> tuple[Any, str | None]:
    """onnx-asr's model for the same files, or None and why it could not be loaded."""
    try:
        import onnx_asr
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return onnx_asr.load_model(
            "nemo-conformer-tdt", model, sess_options=options, providers=["CPUExecutionProvider"]
        ), None
    except Exception as exc:  # noqa: BLE001  (the comparison is optional: the report says why it is missing)
        return None, f"onnx-asr could not load {model}: {type(exc).__name__}: {exc}"


def _http(server: Server, record: Record, bodies: list[bytes], plan: list[list[int]]) -> System:
    """Closed-loop clients against `server`; the warm-up sends one clip per client (a full batch once)."""

    def measure() -> None:
        server.resume()
        before = server.counts()
        wall, latencies, texts = _closed_loop(server.url, plan, bodies)
        after = server.counts()
        server.pause()
        record.walls.append(wall)
        record.latencies += latencies
        record.batches += after[0] - before[0]
        record.items += after[1] - before[1]
        record.largest = max(record.largest, after[2])
        record.busy.append(after[3] - before[3])
        record.texts = [texts[i] for i in sorted(texts)]

    def warm_up() -> None:
        server.resume()
        _closed_loop(server.url, [[indices[0]] for indices in plan], bodies)
        server.pause()

    return System(measure, warm_up)


def _in_process(record: Record, call: Callable[[], list[str] | None], warm_up: Callable[[], object]) -> System:
    """A system run in this process: `call` once per round, timed."""

    def measure() -> None:
        start = time.perf_counter()
        texts = call()
        record.walls.append(time.perf_counter() - start)
        record.texts = texts or []

    return System(measure, warm_up)


def _interleave(systems: dict[str, System], records: dict[str, Record], rounds: int, audio_seconds: float) -> float:
    """Warm every system up once, then run them in turn `rounds` times; the lowest MemAvailable seen (MB)."""
    for name, system in systems.items():
        start = time.perf_counter()
        system.warm_up()
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    lowest = _available_mb()
    for number in range(rounds):
        for name, system in systems.items():
            system.measure()
            lowest = min(lowest, _available_mb())
            wall = records[name].walls[-1]
            print(
                f"round {number + 1} {name}: {wall:.1f} s ({audio_seconds / wall:.2f} RTFx)",
                file=sys.stderr,
                flush=True,
            )
    return lowest


def _available_mb() -> float:
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(
    model: Path,
    *,
    threads: int,
    rounds: int,
    clients: int = 16,
    requests_per_client: int = 4,
    seconds: float = 10.0,
    batch: int = 16,
) -> dict[str, Any]:
    """Measure the five systems on `clients * requests_per_client` distinct clips of `seconds` each."""
    count = clients * requests_per_client
    clips = [speech_clip(np.random.default_rng(1000 + i), seconds) for i in range(count)]
    bodies = [_wav(clip) for clip in clips]
    plan = [list(range(c * requests_per_client, (c + 1) * requests_per_client)) for c in range(clients)]
    audio_seconds = count * seconds
    memory: dict[str, Any] = {"available before": round(_available_mb(), 0)}
    notes: list[str] = []
    common = {
        "AVIARY_THREADS": str(threads),
        "AVIARY_DEVICE": "cpu",
        "AVIARY_WORKERS": str(max(clients, 16)),
        "AVIARY_MAX_QUEUE": str(max(1000, 4 * count)),
    }
    records = {name: Record() for name in (BATCHER, BATCH1, ONNX_ASR, ENGINE, BOUND)}
    with tempfile.TemporaryDirectory(prefix="aviary-bench-batching-") as scratch:
        servers: dict[str, Server] = {}
        try:
            servers[BATCHER] = _start("batcher", model, Path(scratch), {**common, "AVIARY_BATCH_SIZE": str(batch)})
            servers[BATCH1] = _start("batch1", model, Path(scratch), {**common, "AVIARY_BATCH_SIZE": "1"})
            for server in servers.values():
                server.pause()  # each runs only for its own warm-up and rounds
            systems = {name: _http(server, records[name], bodies, plan) for name, server in servers.items()}
            reference, why = _onnx_asr(model, threads)
            if reference is not None:
                systems[ONNX_ASR] = _in_process(
                    records[ONNX_ASR],
                    lambda: [str(reference.recognize(clip)) for clip in clips],
                    lambda: [reference.recognize(clip) for clip in clips[:4]],
                )
            else:
                notes.append(f"{why}; that system is skipped")
                print(why, file=sys.stderr, flush=True)
                del records[ONNX_ASR]
            engine = aviary_engine(model, threads)
            systems[ENGINE] = _in_process(
                records[ENGINE], _engine_alone(engine, clips, batch), _engine_alone(engine, clips[:2], batch)
            )
            bound = _encoder_only(engine, clips, batch)
            systems[BOUND] = _in_process(records[BOUND], bound, bound)
            memory["lowest available during rounds"] = round(_interleave(systems, records, rounds, audio_seconds), 0)
            memory["server peak (its decoders included)"] = {
                name: round(_peak_mb(server.process.pid), 0) for name, server in servers.items()
            }
        finally:
            for server in servers.values():
                server.stop()
    memory["bench process peak"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    settings = {"clip_seconds": seconds, "clients": clients, "requests_per_client": requests_per_client}
    return {
        **settings,
        **_report(records, audio_seconds, threads=threads, batch=batch),
        "memory_mb": memory,
        "notes": notes,
    }


def _report(records: dict[str, Record], audio_seconds: float, *, threads: int, batch: int) -> dict[str, Any]:
    """The figures: median RTFx, ratios, latencies, batch sizes and text agreement."""
    rtfx = {name: audio_seconds / statistics.median(r.walls) for name, r in records.items()}

    def ratio(a: str, b: str) -> float | None:
        return round(rtfx[a] / rtfx[b], 3) if a in rtfx and b in rtfx else None

    def same(a: str, b: str) -> int | None:
        if a not in records or b not in records:
            return None
        return sum(x.strip() == y.strip() for x, y in zip(records[a].texts, records[b].texts, strict=True))

    def percentile(name: str, q: float) -> float:
        return round(float(np.percentile(records[name].latencies, q)), 3)

    return {
        "requests": len(records[BATCHER].texts),
        "audio_seconds_per_round": round(audio_seconds, 1),
        "threads": threads,
        "batch": batch,
        "rounds": len(records[BATCHER].walls),
        "rtfx": {name: round(value, 2) for name, value in rtfx.items()},
        "rtfx_rounds": {name: [round(audio_seconds / w, 2) for w in r.walls] for name, r in records.items()},
        "vs_encoder_only": {name: ratio(name, BOUND) for name in rtfx},
        "ratios": {
            f"{BATCHER} / {BOUND}": ratio(BATCHER, BOUND),
            f"{BATCHER} / {ENGINE}": ratio(BATCHER, ENGINE),
            f"{ENGINE} / {BOUND}": ratio(ENGINE, BOUND),
            f"{BATCHER} / {BATCH1}": ratio(BATCHER, BATCH1),
            f"{BATCHER} / {ONNX_ASR}": ratio(BATCHER, ONNX_ASR),
            f"{BATCH1} / {ONNX_ASR}": ratio(BATCH1, ONNX_ASR),
        },
        "latency_seconds": {
            name: {"p50": percentile(name, 50), "p95": percentile(name, 95)} for name in (BATCHER, BATCH1)
        },
        "batches": {
            name: {
                "mean": round(records[name].items / records[name].batches, 2) if records[name].batches else None,
                "largest": records[name].largest,
                "model_calls": records[name].batches,
                "engine_busy_fraction": [
                    round(b / w, 3) for b, w in zip(records[name].busy, records[name].walls, strict=True)
                ],
            }
            for name in (BATCHER, BATCH1)
        },
        "identical_text": {
            f"{BATCHER} vs {BATCH1}": same(BATCHER, BATCH1),
            f"{BATCHER} vs {ONNX_ASR}": same(BATCHER, ONNX_ASR),
            f"{BATCHER} vs {ENGINE}": same(BATCHER, ENGINE),
        },
    }
