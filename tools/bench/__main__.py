"""Run a benchmark: `python -m tools.bench NAME [options]` (`--help` lists the names and options)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_MODEL = Path("~/.cache/aviary-bench/parakeet-tdt-0.6b-v2").expanduser()
DEFAULT_CANARY = Path("~/.cache/aviary-bench/canary-180m-flash").expanduser()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print its JSON."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument(
        "benchmark",
        choices=("engines", "canary", "cuda", "clips", "audio", "server", "jobs", "batching", "longfile", "roofline"),
        help="engines: CPU engines side by side; canary: Canary's decoding, rewritten vs exported vs onnx-asr"
        " (--tokens); cuda: NeMo on a GPU (--audio); clips: write the clips to --out;"
        " audio: decoding vs the ffmpeg CLI (--minutes); server: HTTP vs the engine, and --concurrent uploads;"
        " jobs: the job path vs /transcribe (--jobs); batching: concurrent clients, batcher vs batch 1 vs onnx-asr"
        " (--clients, --requests); longfile: one long recording vs the same audio as 30 s clips (--hours);"
        " roofline: the encoder vs the machine's fp32 matmul rate, a decoding step vs memory bandwidth",
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60], help="audio: MP3 lengths")
    parser.add_argument(
        "--model", type=Path, help="ONNX model directory (default: the real-size parakeet; canary: canary-180m-flash)"
    )
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; longfile: 1)")
    parser.add_argument("--int8", action="store_true", help="also an int8-quantized encoder (and its WER cost)")
    parser.add_argument("--nemo", action="store_true", help="also NeMo's own batched transcribe (needs model.nemo)")
    parser.add_argument("--nemo-only", action="store_true", help="only Aviary vs NeMo, at batch 1 and --batch")
    parser.add_argument("--concurrent", type=int, default=32, help="server: uploads at once")
    parser.add_argument("--jobs", type=int, default=200, help="jobs: short jobs per round")
    parser.add_argument("--clients", type=int, default=16, help="batching: concurrent HTTP clients")
    parser.add_argument("--requests", type=int, default=4, help="batching: 10 s clips each client sends per round")
    parser.add_argument("--hours", type=float, default=3.0, help="longfile: length of the recording")
    parser.add_argument("--audio", type=Path, help="cuda: the clips written by `clips --out`")
    parser.add_argument(
        "--tokens", type=int, default=60, help="canary: tokens decoded per clip (random weights never stop)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here (clips: the .npz to write)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.benchmark == "longfile" else 3
    if args.model is None:
        args.model = DEFAULT_CANARY if args.benchmark == "canary" else DEFAULT_MODEL

    runners = {
        "jobs": _http,
        "server": _http,
        "batching": _http,
        "longfile": _longfile,
        "canary": _canary,
        "roofline": _roofline,
    }
    if args.benchmark in runners:
        return _emit(runners[args.benchmark](args), args.out)
    from tools.bench import audio as audio_bench
    from tools.bench import clips, cuda, engines

    if args.benchmark == "clips":
        cuda.save_clips(args.clips, args.out)
        return 0
    if args.benchmark in {"audio", "cuda"}:
        report = (
            audio_bench.run(args.minutes, args.rounds)
            if args.benchmark == "audio"
            else cuda.run(args.audio, args.batch, args.rounds)
        )
        return _emit(report, args.out)
    audio = clips.benchmark_clips(args.clips)
    if args.nemo_only:
        return _emit(
            engines.run_nemo(args.model, audio, threads=args.threads, batch=args.batch, rounds=args.rounds), args.out
        )
    report = engines.run(
        args.model, audio, threads=args.threads, batch=args.batch, rounds=args.rounds, int8=args.int8, nemo=args.nemo
    )
    if args.int8:
        import tempfile

        from tools.bench.int8 import digits_wer

        digits = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "models" / "parakeet-digits"
        with tempfile.TemporaryDirectory() as work:
            report["int8_digits_wer"] = digits_wer(digits, Path(work))
    return _emit(report, args.out)


def _http(args: argparse.Namespace) -> dict[str, object]:
    """The benchmarks that drive a real server process."""
    from tools.bench import batching, jobs, server

    if args.benchmark == "batching":
        return batching.run(
            args.model,
            threads=args.threads,
            rounds=args.rounds,
            clients=args.clients,
            requests_per_client=args.requests,
            batch=args.batch,
        )
    if args.benchmark == "jobs":
        return jobs.run(args.model, threads=args.threads, rounds=args.rounds, jobs=args.jobs)
    return server.run(args.model, threads=args.threads, rounds=args.rounds, concurrent=args.concurrent)


def _canary(args: argparse.Namespace) -> dict[str, object]:
    """Canary's decoding: the split decoder vs the exported one vs onnx-asr."""
    from tools.bench import canary, clips

    audio = clips.benchmark_clips(args.clips)
    return canary.run(args.model, audio, threads=args.threads, batch=args.batch, rounds=args.rounds, tokens=args.tokens)


def _longfile(args: argparse.Namespace) -> dict[str, object]:
    """The long-recording benchmark (it measures in a fresh process of its own)."""
    from tools.bench import longfile

    return longfile.run(args.model, threads=args.threads, hours=args.hours, rounds=args.rounds, batch=args.batch)


def _roofline(args: argparse.Namespace) -> dict[str, object]:
    """The encoder and a decoding step against what the machine can do."""
    from tools.bench import roofline

    return roofline.run(args.model, threads=args.threads, rounds=args.rounds)


def _emit(report: dict[str, object], out: Path | None) -> int:
    text = json.dumps(report, indent=1)
    print(text)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
