"""Engine throughput, side by side in one run: Aviary vs onnx-asr vs the encoder-only bound (vs NeMo).

Every system transcribes the same clips with the same model files and the same thread count. The
machine's speed drifts by 10-30% within minutes, so systems are interleaved finely: a system is a
list of units (a clip at batch 1, a batch otherwise), and each round runs unit 1 of every system
with that many units, then unit 2, ..., the order rotating; a system's figure is its median round,
and a ratio between two systems is the median of their per-round ratios (both measured within the
same seconds). RTFx = seconds of audio per wall-clock second. The encoder-only bound runs Aviary's own
encoder session alone on precomputed features, each batch in the engine's own encoder runs (a batch
over `encoder_max_seconds` of padded audio is encoded in parts): no end-to-end system can beat it. A 0.6B model is
~2.5 GB of weights that onnxruntime also prepacks, so systems share sessions where they can, and
NeMo runs in a second phase (against Aviary again) after onnx-asr's copy is freed.
"""

from __future__ import annotations

import copy
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from aviary.engine.onnx import Preprocessor, RuntimeOptions, SessionFactory, load_onnx_engine, read_model_dir
from aviary.engine.tdt_decoder import load_step_decoder
from aviary.types import SAMPLE_RATE, Audio, TranscribeOptions

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from aviary.engine.tdt import TdtEngine

Runs = dict[str, "list[Callable[[], object]]"]
"""Each system's units: one call per clip (batch 1) or per batch."""
PLAIN = [TranscribeOptions()]


@dataclass(frozen=True)
class Result:
    """One system's wall time per round; its RTFx at the median round."""

    name: str
    rounds: tuple[float, ...]
    audio_seconds: float

    @property
    def rtfx(self) -> float:
        """Seconds of audio per wall-clock second, at the median round."""
        return self.audio_seconds / statistics.median(self.rounds)

    def speedup(self, other: Result) -> float:
        """How much faster this system ran than `other`: the median of their per-round ratios."""
        return statistics.median(b / a for a, b in zip(self.rounds, other.rounds, strict=True))


def _batches(clips: list[Audio], size: int) -> list[list[Audio]]:
    return [clips[i : i + size] for i in range(0, len(clips), size)]


def measure(runs: Runs, audio_seconds: float, rounds: int) -> dict[str, Result]:
    """Time every system once per round, unit by unit interleaved, after one warm-up pass each."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, units in runs.items():
        start = time.perf_counter()
        for unit in units:
            unit()
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    groups: dict[int, list[str]] = {}
    for name, units in runs.items():
        groups.setdefault(len(units), []).append(name)
    for number in range(rounds):
        spent = dict.fromkeys(runs, 0.0)
        for count, names in groups.items():
            for index in range(count):
                shift = (number + index) % len(names)
                for name in names[shift:] + names[:shift]:
                    start = time.perf_counter()
                    runs[name][index]()
                    spent[name] += time.perf_counter() - start
        for name, seconds in spent.items():
            times[name].append(seconds)
            print(f"round {number + 1} {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return {n: Result(n, tuple(t), audio_seconds) for n, t in times.items()}


def _encode(session: Any, runs: list[tuple[Any, Any]]) -> None:  # noqa: ANN401 - an onnxruntime session
    for features, lengths in runs:
        session.run(None, {"audio_signal": features, "length": lengths})


def aviary_engine(model: Path, threads: int, quantization: str | None = None) -> TdtEngine:
    """Aviary's TDT engine on the CPU with `threads` threads."""
    options = RuntimeOptions(device="cpu", intra_op_threads=threads, quantization=quantization)
    return cast("TdtEngine", load_onnx_engine(model, "bench", options))


def onnx_systems(model: Path, clips: list[Audio], aviary: TdtEngine, threads: int, batch: int) -> tuple[Runs, Any]:
    """Encoder-only bound, Aviary (NumPy decoder; decoder graph in onnxruntime) and onnx-asr, at batch 1 and `batch`."""
    import onnx_asr
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    reference = onnx_asr.load_model(
        "nemo-conformer-tdt", model, sess_options=session_options, providers=["CPUExecutionProvider"]
    )
    factory = SessionFactory(RuntimeOptions(device="cpu", intra_op_threads=threads))
    encoder = aviary._encoder  # noqa: SLF001 - the bound must run the very session Aviary runs
    # The same encoder as exported, without Aviary's tabled position projections (engine.positions).
    exported = factory.create(read_model_dir(model, "bench").files["encoder-model"])
    preprocessor = Preprocessor(128, factory)

    # The bound encodes each batch in the engine's own runs (at most `encoder_max_seconds` padded).
    def features_of(size: int) -> list[list[tuple[Any, Any]]]:
        """Per batch of `size` clips, the features of each of its encoder runs."""
        return [
            [preprocessor([b[k] for k in part]) for part in aviary.encoder_parts(list(map(len, b)))]
            for b in _batches(clips, size)
        ]

    features = {size: features_of(size) for size in (1, batch)}
    graph = copy.copy(aviary)  # shares the encoder session; only the step decoder differs
    decoder_path = read_model_dir(model, "bench").files["decoder_joint-model"]
    graph._decoder = load_step_decoder(decoder_path, factory, numpy=False)  # noqa: SLF001

    def encoder_only(size: int, session: Any = encoder) -> list[Callable[[], object]]:  # noqa: ANN401
        """One unit per batch of `size`: the batch's encoder runs."""
        return [partial(_encode, session, runs) for runs in features[size]]

    runs: Runs = {
        "encoder-only b1": encoder_only(1),
        "exported encoder b1": encoder_only(1, exported),
        "aviary b1": [partial(aviary.transcribe, [c], PLAIN) for c in clips],
        "aviary graph-decoder b1": [partial(graph.transcribe, [c], PLAIN) for c in clips],
        "onnx-asr b1": [partial(reference.recognize, c) for c in clips],
        f"encoder-only b{batch}": encoder_only(batch),
        f"aviary b{batch}": [partial(aviary.transcribe, b, PLAIN * len(b)) for b in _batches(clips, batch)],
        f"onnx-asr b{batch}": [partial(reference.recognize, list[Any](b)) for b in _batches(clips, batch)],
    }
    return runs, reference


def parity(aviary: TdtEngine, reference: Any, clips: list[Audio]) -> dict[str, Any]:  # noqa: ANN401
    """Whether Aviary's text equals onnx-asr's on every clip, and the tokens per second it emits."""
    ours = aviary.transcribe(clips, PLAIN * len(clips))
    theirs = [str(reference.recognize(c)) for c in clips]
    return {
        "clips": len(clips),
        "identical_text": sum(a.text == b for a, b in zip(ours, theirs, strict=True)),
        "tokens_per_second_of_audio": round(sum(len(t.tokens) for t in ours) / sum(t.duration for t in ours), 2),
    }


def run(
    model: Path, clips: list[Audio], *, threads: int, batch: int, rounds: int, int8: bool, nemo: bool
) -> dict[str, Any]:
    """The whole engine benchmark as a JSON-ready dict."""
    audio_seconds = float(sum(len(c) for c in clips) / SAMPLE_RATE)
    aviary = aviary_engine(model, threads)
    runs, reference = onnx_systems(model, clips, aviary, threads, batch)
    if int8:
        from tools.bench.int8 import quantize_encoder

        quantize_encoder(model)
        quantized = aviary_engine(model, threads, "int8")
        runs["aviary int8 b1"] = [partial(quantized.transcribe, [c], PLAIN) for c in clips]
    results = measure(runs, audio_seconds, rounds)
    report: dict[str, Any] = {"parity": parity(aviary, reference, clips)}
    del runs, reference
    gc.collect()
    if nemo:
        results |= nemo_phase(
            model, clips, aviary, threads=threads, batch=batch, audio_seconds=audio_seconds, rounds=rounds
        )

    def ratio(a: str, b: str) -> float:
        return round(results[a].speedup(results[b]), 3)

    b = f"b{batch}"
    ratios = {
        "aviary b1 / encoder-only b1": ratio("aviary b1", "encoder-only b1"),
        "aviary b1 / exported encoder b1": ratio("aviary b1", "exported encoder b1"),
        "encoder-only b1 / exported encoder b1": ratio("encoder-only b1", "exported encoder b1"),
        f"aviary {b} / encoder-only {b}": ratio(f"aviary {b}", f"encoder-only {b}"),
        "onnx-asr b1 / encoder-only b1": ratio("onnx-asr b1", "encoder-only b1"),
        f"onnx-asr {b} / encoder-only {b}": ratio(f"onnx-asr {b}", f"encoder-only {b}"),
        "aviary b1 / onnx-asr b1": ratio("aviary b1", "onnx-asr b1"),
        f"aviary {b} / onnx-asr {b}": ratio(f"aviary {b}", f"onnx-asr {b}"),
        "aviary graph-decoder b1 / aviary b1": ratio("aviary graph-decoder b1", "aviary b1"),
    }
    if int8:
        ratios["aviary int8 b1 / aviary b1"] = ratio("aviary int8 b1", "aviary b1")
    if nemo:
        ratios["aviary b1 / nemo b1 (phase 2)"] = ratio("aviary b1 (phase 2)", "nemo b1")
        ratios[f"aviary {b} / nemo {b} (phase 2)"] = ratio(f"aviary {b} (phase 2)", f"nemo {b}")
    return {**summary(results, audio_seconds, len(clips), threads, rounds), "ratios": ratios, **report}


def run_nemo(model: Path, clips: list[Audio], *, threads: int, batch: int, rounds: int) -> dict[str, Any]:
    """Only Aviary against NeMo's own batched transcribe, at batch 1 and `batch` (one model copy each)."""
    audio_seconds = float(sum(len(c) for c in clips) / SAMPLE_RATE)
    aviary = aviary_engine(model, threads)
    results = nemo_phase(model, clips, aviary, threads=threads, batch=batch, audio_seconds=audio_seconds, rounds=rounds)
    rtfx = {r.name: round(r.rtfx, 2) for r in results.values()}
    return {
        "audio_seconds": round(audio_seconds, 1),
        "clips": len(clips),
        "threads": threads,
        "rounds": rounds,
        "rtfx": rtfx,
        "ratios": {
            "aviary b1 / nemo b1": round(results["aviary b1 (phase 2)"].speedup(results["nemo b1"]), 3),
            f"aviary b{batch} / nemo b{batch}": round(
                results[f"aviary b{batch} (phase 2)"].speedup(results[f"nemo b{batch}"]), 3
            ),
            f"aviary b1 / nemo best of b1, b{batch}": round(
                rtfx["aviary b1 (phase 2)"] / max(rtfx["nemo b1"], rtfx[f"nemo b{batch}"]), 3
            ),
        },
        "peak_rss_mb": round(_peak_rss_mb(), 0),
    }


def nemo_phase(
    model: Path, clips: list[Audio], aviary: TdtEngine, *, threads: int, batch: int, audio_seconds: float, rounds: int
) -> dict[str, Result]:
    """NeMo's own batched transcribe against Aviary at the same batch size, interleaved."""
    import torch

    from aviary.engine.nemo import load_nemo_engine

    torch.set_num_threads(threads)  # NeMo gets the same cores as everyone else
    reference = load_nemo_engine(model / "model.nemo", "bench", device="cpu")
    batches = _batches(clips, batch)
    runs: Runs = {
        "aviary b1 (phase 2)": [partial(aviary.transcribe, [c], PLAIN) for c in clips],
        "nemo b1": [partial(reference.transcribe, [c], PLAIN) for c in clips],
        f"aviary b{batch} (phase 2)": [partial(aviary.transcribe, b, PLAIN * len(b)) for b in batches],
        f"nemo b{batch}": [partial(reference.transcribe, b, PLAIN * len(b)) for b in batches],
    }
    return measure(runs, audio_seconds, rounds)


def summary(results: dict[str, Result], audio_seconds: float, clips: int, threads: int, rounds: int) -> dict[str, Any]:
    """What every engine report starts with: the run's size and each system's RTFx, and its peak memory."""
    return {
        "audio_seconds": round(audio_seconds, 1),
        "clips": clips,
        "threads": threads,
        "rounds": rounds,
        "rtfx": {r.name: round(r.rtfx, 2) for r in results.values()},
        "peak_rss_mb": round(_peak_rss_mb(), 0),
    }


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
