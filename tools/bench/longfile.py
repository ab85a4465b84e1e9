"""One long recording vs the same audio as 30 s clips, side by side in one run: throughput and memory.

The recording: `hours` of English speech (distinct espeak-ng clips of 20 to 60 s, each from its
own seed, separated by pauses of 0.2 to 1.5 s, with a faint noise floor), written piece by piece
to a 16-bit FLAC file, so building it never holds more than one piece (3 hours: about a minute).

A fresh process (so its memory figures are its own) loads Aviary's engine, notes its resident
memory, resets its peak (`/proc/self/clear_refs`), and then, per round:

- `long file`: `transcribe_source` over the FLAC file, as the server, the CLI and jobs run it:
  decoded as a stream in a decoder process, cut at pauses into chunks of at most `chunk_seconds`
  (Silero VAD), the chunks batched by a `Batcher` (`batch`), merged. Its peak resident memory
  (VmHWM, which `ru_maxrss` reports) above the loaded model is the memory cost of the length.
- `30 s clips`: the same file cut at fixed 30 s boundaries, each group one engine call of as many
  clips as the server's batcher would put in one batch (`batch`, and at most the server's
  `batch_seconds` of audio): what the same audio costs as independent short requests. It is decoded
  here as it is read (no decoder process), with no VAD and no merging.

RTFx = seconds of the recording per wall-clock second; both sides count the same seconds. Rounds
alternate which side runs first (the first round runs the long file first, so its peak is taken
before the clips side ever ran); each figure is its median round.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aviary.types import SAMPLE_RATE, TranscribeOptions
from tools.bench.clips import speech_clip

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aviary.audio import AudioLimits
    from aviary.types import Audio

ROOT = Path(__file__).resolve().parents[2]
LONG = "long file"
CLIPS = "30 s clips"


def build_recording(path: Path, hours: float, seed: int = 5) -> float:
    """Write `hours` of speech with short pauses to `path` (FLAC, 16 kHz mono), piece by piece; its seconds."""
    import av

    rng = np.random.default_rng(seed)
    total = int(hours * 3600 * SAMPLE_RATE)
    written = 0
    with av.open(str(path), mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        while written < total:
            speech = speech_clip(np.random.default_rng(int(rng.integers(1 << 31))), float(rng.uniform(20, 60)))
            pause = np.zeros(int(rng.uniform(0.2, 1.5) * SAMPLE_RATE), dtype=np.float32)
            piece = np.concatenate([speech, pause])[: total - written]
            piece += rng.normal(0, 3e-4, len(piece)).astype(np.float32)  # a faint noise floor, as microphones have
            samples = (np.clip(piece, -1, 1) * 32767).astype(np.int16)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            container.mux(stream.encode(frame))
            written += len(piece)
        container.mux(stream.encode(None))
    return written / SAMPLE_RATE


def run(
    model: Path, *, threads: int, hours: float = 3.0, rounds: int = 1, batch: int = 16, chunk_seconds: float = 30.0
) -> dict[str, Any]:
    """Build the recording, then measure both sides in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="aviary-bench-longfile-") as work:
        audio = Path(work) / "long.flac"
        start = time.perf_counter()
        seconds = build_recording(audio, hours)
        built = time.perf_counter() - start
        print(f"built {seconds / 3600:.2f} h of audio in {built:.1f} s", file=sys.stderr, flush=True)
        paths = os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "tools.bench.longfile", str(model), str(audio), "--seconds", str(seconds)]
        options = ["--threads", str(threads), "--rounds", str(rounds), "--batch", str(batch)]
        child = subprocess.run(
            [*command, *options, "--chunk-seconds", str(chunk_seconds)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": paths},
            stdout=subprocess.PIPE,
            check=True,
        )
        size = audio.stat().st_size
    return {
        "hours": hours,
        "audio_seconds": round(seconds, 1),
        "file": {"format": "flac", "mb": round(size / (1 << 20), 1), "build_seconds": round(built, 1)},
        **json.loads(child.stdout.splitlines()[-1]),  # the report is the child's last line
    }


def measure(
    model: Path, audio: Path, seconds: float, *, threads: int, rounds: int, batch: int, chunk_seconds: float
) -> dict[str, Any]:
    """Both sides over `audio` (`seconds` long), in this process (run it in a fresh one)."""
    from aviary.config import Settings
    from aviary.engine.batcher import Batcher
    from aviary.engine.longform import transcribe_source
    from tools.bench.engines import aviary_engine

    memory: dict[str, Any] = {"after_imports": _status_mb("VmRSS")}
    engine = aviary_engine(model, threads)
    loaded = _status_mb("VmRSS")
    memory |= {"after_load": loaded, "load_peak": _status_mb("VmHWM")}
    defaults = Settings()
    settings = Settings(
        chunk_seconds=chunk_seconds,
        max_audio_seconds=max(defaults.max_audio_seconds, seconds + 60),
        max_decoded_samples=max(defaults.max_decoded_samples, int((seconds + 60) * 48_000 * 2)),
        max_upload_bytes=max(defaults.max_upload_bytes, audio.stat().st_size + 1),
    )
    decoder = settings.audio_decoder()
    decoder.warm()
    max_seconds = settings.batch_seconds(engine.info.device)  # the server's cap on a batch's padded audio
    batcher = Batcher(engine, max_batch=batch, max_wait=settings.batch_wait_ms / 1000, max_seconds=max_seconds)
    chunking = settings.chunking(engine.info)
    per_call = max(1, min(batch, int(max_seconds // 30)))  # 30 s clips in one batch of the server's
    options = TranscribeOptions()
    times: dict[str, list[float]] = {LONG: [], CLIPS: []}
    words: dict[str, int] = {}
    peaks: list[float] = []

    def long_file() -> None:
        _reset_peak()
        transcript = transcribe_source(decoder, batcher, audio, options, chunking)
        peaks.append(_status_mb("VmHWM") - loaded)
        words[LONG] = len(transcript.text.split())

    def clips() -> None:
        count = 0
        for group in _groups(audio, settings.audio_limits(), int(30 * SAMPLE_RATE), per_call):
            count += sum(len(t.text.split()) for t in engine.transcribe(group, [options] * len(group)))
        words[CLIPS] = count

    try:
        for number in range(rounds):
            order = [(LONG, long_file), (CLIPS, clips)]
            for name, side in order if number % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                side()
                times[name].append(time.perf_counter() - start)
                wall = times[name][-1]
                print(
                    f"round {number + 1} {name}: {wall:.1f} s ({seconds / wall:.2f} RTFx)", file=sys.stderr, flush=True
                )
    finally:
        batcher.close()
        decoder.close()
    stats = batcher.stats()
    rtfx = {name: seconds / statistics.median(walls) for name, walls in times.items()}
    memory |= {
        "long_file_peak_above_model": round(peaks[0], 1),
        "long_file_peak_above_model_rounds": [round(p, 1) for p in peaks],
        "process_peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "decoder_process_peak": round(decoder.peak_mb, 1),
    }
    return {
        "threads": threads,
        "batch": batch,
        "batch_max_seconds": max_seconds,
        "chunk_seconds": chunk_seconds,
        "rounds": rounds,
        "rtfx": {name: round(value, 2) for name, value in rtfx.items()},
        "rtfx_rounds": {name: [round(seconds / w, 2) for w in walls] for name, walls in times.items()},
        "long_file_vs_clips": round(rtfx[LONG] / rtfx[CLIPS], 3),
        "rss_mb": memory,
        "long_file_batches": {
            "model_calls": stats.batches // rounds,
            "chunks": stats.items // rounds,
            "mean": round(stats.mean_batch, 2),
            "largest": stats.largest,
        },
        "clips_per_call": per_call,
        "clips_model_calls": math.ceil(math.ceil(seconds / 30) / per_call),
        "words": words,
    }


def _groups(audio: Path, limits: AudioLimits, size: int, batch: int) -> Iterator[list[Audio]]:
    """The file in clips of `size` samples (the last one shorter), `batch` at a time, decoded as they are needed."""
    from aviary.audio.pyav import MediaInfo, decode_chunks

    buffer = np.zeros(0, dtype=np.float32)
    group: list[Audio] = []
    for block in decode_chunks(audio, limits):
        if isinstance(block, MediaInfo):
            continue
        buffer = np.concatenate([buffer, block])
        while len(buffer) >= size:
            group.append(buffer[:size].copy())
            buffer = buffer[size:]
            if len(group) == batch:
                yield group
                group = []
    if len(buffer):
        group.append(buffer)
    if group:
        yield group


def _status_mb(field: str) -> float:
    """A `/proc/self/status` memory figure (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _reset_peak() -> None:
    """Reset this process's peak resident memory (VmHWM, and so `ru_maxrss`) to its current one (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")


def _main() -> int:
    parser = argparse.ArgumentParser(description="the measuring process of the longfile benchmark")
    parser.add_argument("model", type=Path)
    parser.add_argument("audio", type=Path)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--chunk-seconds", type=float, required=True)
    args = parser.parse_args()
    report = measure(
        args.model,
        args.audio,
        args.seconds,
        threads=args.threads,
        rounds=args.rounds,
        batch=args.batch,
        chunk_seconds=args.chunk_seconds,
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
