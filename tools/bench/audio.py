"""Audio decoding, side by side: Aviary (in process, and isolated in a child) vs the seed's ffmpeg CLI path.

- `seed`: what the original server did: pydub ran the ffmpeg binary to turn the upload into a WAV at
  its own rate and channels, and NeMo loaded that WAV (soundfile, channel mean, librosa resampling
  to 16 kHz: NeMo's `AudioSegment.from_file`).
- `ffmpeg-cli-16k`: the ffmpeg binary at its best: it downmixes and resamples itself
  (`-ac 1 -ar 16000`), and the 16 kHz WAV is read into float32.
- `aviary-in-process` / `aviary-isolated`: `aviary.audio.decode` and `IsolatedDecoder.decode` (warm
  decoder processes, as a server keeps them).

Each system decodes each file in a fresh process, in interleaved rounds; the median round counts.
Memory is peak resident memory (VmHWM, so not the pages a fork inherits) above the resident memory
once imports are done, against the decoded output (16 kHz float32); the ffmpeg binary's and the
decoder process's own peaks are reported beside it.

`python -m tools.bench audio [--minutes 10 60] [--rounds 3]` (needs Debian's `ffmpeg`; the product does not).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from aviary.types import SAMPLE_RATE

SYSTEMS = ("seed", "ffmpeg-cli-16k", "aviary-in-process", "aviary-isolated")


def make_mp3(minutes: float, path: Path) -> None:
    """English speech (espeak-ng) at 44.1 kHz stereo, `minutes` long, as a 128 kb/s MP3."""
    from tests.support.media import Encoding, encode
    from tools.bench.clips import benchmark_clips

    clips = benchmark_clips(6, seed=11)
    speech = np.concatenate(clips)
    reps = int(np.ceil(minutes * 60 * SAMPLE_RATE / len(speech)))
    audio = np.tile(speech, reps)[: int(minutes * 60 * SAMPLE_RATE)]
    path.write_bytes(encode(audio, SAMPLE_RATE, Encoding("mp3", "mp3", "libmp3lame", rate=44_100, channels=2)))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _seed(path: Path, work: Path) -> np.ndarray:
    """Pydub's conversion (ffmpeg to a PCM WAV, same rate and channels), then NeMo's loader."""
    from nemo.collections.asr.parts.preprocessing.segment import AudioSegment

    out = work / "seed.wav"
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(path), "-acodec", "pcm_s16le", "-vn"]
    subprocess.run([*command, "-f", "wav", str(out)], check=True)
    return np.asarray(AudioSegment.from_file(str(out), target_sr=SAMPLE_RATE).samples, dtype=np.float32)


def probe(system: str, path: Path) -> dict[str, Any]:
    """Run one system on one file in this (fresh) process: wall time, output size, memory."""
    import resource

    from aviary.audio import AudioLimits, IsolatedDecoder, decode

    decoder = IsolatedDecoder(AudioLimits(), idle=1) if system == "aviary-isolated" else None
    if decoder is not None:
        decoder.warm()  # a server keeps its decoder processes ready
    import av  # noqa: F401 - every system's libraries are loaded before the baseline

    if system == "seed":
        from nemo.collections.asr.parts.preprocessing.segment import AudioSegment  # noqa: F401
    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    if system == "seed":
        with tempfile.TemporaryDirectory() as work:
            audio = _seed(path, Path(work))
    elif system == "ffmpeg-cli-16k":
        with tempfile.TemporaryDirectory() as work:
            out = Path(work) / "out.wav"
            command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-ac", "1", "-ar", "16000"]
            subprocess.run([*command, "-f", "wav", str(out)], check=True)
            with wave.open(str(out), "rb") as reader:
                raw = reader.readframes(reader.getnframes())
            audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    elif decoder is not None:
        audio = decoder.decode(path)
    else:
        audio = decode(path)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    children = decoder.peak_mb if decoder is not None else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if decoder is not None:
        decoder.close()
    return {
        "seconds": seconds,
        "output_mb": audio.nbytes / 2**20,
        "audio_seconds": len(audio) / SAMPLE_RATE,
        "peak_above_baseline_mb": peak - baseline,
        "child_peak_mb": children,
    }


def run(minutes: list[float], rounds: int) -> dict[str, Any]:
    """Every system on every file, in fresh processes, interleaved rounds; medians and ratios."""
    if shutil.which("ffmpeg") is None:
        msg = "the benchmark needs Debian's ffmpeg: apt-get install ffmpeg"
        raise SystemExit(msg)
    report: dict[str, Any] = {"rounds": rounds, "files": {}}
    with tempfile.TemporaryDirectory() as work:
        for length in minutes:
            path = Path(work) / f"speech-{length:g}min.mp3"
            make_mp3(length, path)
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
            for number in range(rounds):
                for system in SYSTEMS:
                    done = subprocess.run(
                        [sys.executable, "-m", "tools.bench.audio", system, str(path)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    runs[system].append(json.loads(done.stdout))
                    print(f"{length:g} min round {number + 1} {system}: {runs[system][-1]}", file=sys.stderr)
            medians = {s: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]} for s, rs in runs.items()}
            report["files"][f"{length:g} min"] = {
                "mp3_mb": round(path.stat().st_size / 2**20, 1),
                "systems": medians,
                "speedup_vs_seed": {s: round(medians["seed"]["seconds"] / m["seconds"], 2) for s, m in medians.items()},
                "speedup_vs_ffmpeg_cli_16k": {
                    s: round(medians["ffmpeg-cli-16k"]["seconds"] / m["seconds"], 2) for s, m in medians.items()
                },
                "peak_over_output": {
                    s: round(m["peak_above_baseline_mb"] / m["output_mb"], 2) for s, m in medians.items()
                },
            }
    return report


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], Path(sys.argv[2]))))
