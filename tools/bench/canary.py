"""Canary (AED) decoding, side by side in one run: Aviary's decoder rewrites vs the decoder as exported vs onnx-asr.

Systems: Aviary as it runs (`engine.invariants` and `engine.kv_cache`), Aviary with the split only,
Aviary with the decoder graph as exported, and onnx-asr.

Every system transcribes the same clips with the same model files and thread count, interleaved
unit by unit as in `tools.bench.engines`. A random-weight Canary never emits end-of-text, so every
clip decodes to the cap: the benchmark runs on a copy of the model directory (links to its files)
whose `max_sequence_length` allows `tokens` tokens after the 10-token prompt, both for Aviary and
for onnx-asr, which read the same config. Pick `tokens` near what a real transcript of the clips
would hold (about 3-4 per second of English speech; 60 for the default 5-30 s clips).

Parity on a random-weight model is weak: the realsize canary-180m-flash repeats the prompt's last
token (`<|nodiarize|>`, a special token) at every step, so its transcripts hold no text token and
agree trivially. The benchmark reports the text tokens it compared; token equality with NeMo is
checked in the suite, on the trained canary-digits, for every combination of the two rewrites.
"""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aviary.engine.onnx import RuntimeOptions, load_onnx_engine
from aviary.types import SAMPLE_RATE, Audio, TranscribeOptions
from tools.bench.engines import Runs, _batches, measure, summary

if TYPE_CHECKING:
    from aviary.engine.base import Engine

PROMPT_TOKENS = 10
ENGLISH = [TranscribeOptions(language="en")]


def capped_copy(model: Path, work: Path, tokens: int) -> Path:
    """A model directory in `work` linking to `model`'s files, its config capped at `tokens` decoded tokens."""
    target = work / model.name
    target.mkdir()
    for item in model.iterdir():
        if item.name != "config.json" and item.suffix != ".nemo":
            (target / item.name).symlink_to(item.resolve())
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["max_sequence_length"] = PROMPT_TOKENS + tokens
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


def run(model: Path, clips: list[Audio], *, threads: int, batch: int, rounds: int, tokens: int) -> dict[str, Any]:
    """The whole Canary benchmark as a JSON-ready dict."""
    import onnx_asr
    import onnxruntime as ort

    audio_seconds = float(sum(len(c) for c in clips) / SAMPLE_RATE)
    with tempfile.TemporaryDirectory(prefix="aviary-bench-canary-") as work:
        capped = capped_copy(model, Path(work), tokens)
        split = load_onnx_engine(capped, "split", RuntimeOptions(device="cpu", intra_op_threads=threads))
        exported: Engine = load_onnx_engine(
            capped,
            "exported",
            RuntimeOptions(device="cpu", intra_op_threads=threads, split_decoder=False, cache_self_attention=False),
        )
        split_only = load_onnx_engine(
            capped, "split-only", RuntimeOptions(device="cpu", intra_op_threads=threads, cache_self_attention=False)
        )
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        reference = onnx_asr.load_model(
            "nemo-conformer-aed", capped, sess_options=session_options, providers=["CPUExecutionProvider"]
        )
        recognize = partial(reference.recognize, language="en", target_language="en", pnc=True)
        runs: Runs = {}
        for size in (1, batch):
            units = _batches(clips, size)
            runs[f"aviary b{size}"] = [partial(split.transcribe, u, ENGLISH * len(u)) for u in units]
            runs[f"aviary split-only b{size}"] = [partial(split_only.transcribe, u, ENGLISH * len(u)) for u in units]
            runs[f"aviary exported-decoder b{size}"] = [
                partial(exported.transcribe, u, ENGLISH * len(u)) for u in units
            ]
            runs[f"onnx-asr b{size}"] = [partial(recognize, u[0] if size == 1 else list[Any](u)) for u in units]
        results = measure(runs, audio_seconds, rounds)
        ours = split.transcribe(clips, ENGLISH * len(clips))
        theirs = exported.transcribe(clips, ENGLISH * len(clips))
        texts = [str(recognize(c)) for c in clips]

    def ratio(a: str, b: str) -> float:
        return round(results[a].speedup(results[b]), 3)

    ratios: dict[str, float] = {}
    for size in (1, batch):
        ratios[f"aviary b{size} / aviary exported-decoder b{size}"] = ratio(
            f"aviary b{size}", f"aviary exported-decoder b{size}"
        )
        ratios[f"aviary b{size} / aviary split-only b{size}"] = ratio(f"aviary b{size}", f"aviary split-only b{size}")
        ratios[f"aviary b{size} / onnx-asr b{size}"] = ratio(f"aviary b{size}", f"onnx-asr b{size}")
    return {
        **summary(results, audio_seconds, len(clips), threads, rounds),
        "tokens_per_clip": tokens,
        "ratios": ratios,
        "parity": {
            "identical_tokens_vs_exported_decoder": sum(
                a.tokens == b.tokens for a, b in zip(ours, theirs, strict=True)
            ),
            "identical_text_vs_onnx_asr": sum(a.text == b for a, b in zip(ours, texts, strict=True)),
            "text_tokens_compared": sum(len(a.tokens) for a in ours),
            "clips": len(clips),
        },
    }
