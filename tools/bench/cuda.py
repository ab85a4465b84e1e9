"""The NeMo engine on a CUDA device: goldens, GPU memory after every job, and throughput.

A device check, run where a GPU is (`python -m tools.bench cuda --clips FILE`); it needs torch with
CUDA and the `nemo` extra, not espeak-ng: the benchmark clips come in a `.npz` written beforehand
by `python -m tools.bench clips --out FILE` on a machine that has it.

1. Goldens: every fixture model's `.nemo` on CUDA, token-for-token against the goldens (NeMo on
   the CPU made them; the GPU's arithmetic differs in rounding, so matches are counted, not assumed).
2. Memory: the real-size random-weight parakeet-tdt-0.6b-v2 (built in memory with the fixtures'
   seed), GPU memory as the driver sees it (NVML) and torch's reserved pool after load, after every
   job and `release_memory()`: it must return to the post-load level.
3. Throughput: RTFx of NeMo's batched `transcribe` on CUDA at batch 1 and batch `--batch`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aviary.types import SAMPLE_RATE, Audio, TranscribeOptions

if TYPE_CHECKING:
    from collections.abc import Callable

MIB = 1024 * 1024


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def goldens_on_cuda() -> dict[str, Any]:
    """Per fixture model: cases whose tokens equal the golden, and the device NeMo ran on."""
    from aviary.engine.nemo import load_nemo_engine
    from aviary.errors import InvalidModelError
    from tests.support.fixtures import MODELS, canary_options, clip, golden

    report: dict[str, Any] = {}
    for name in ("parakeet-tdt-tiny", "parakeet-digits", "canary-digits"):
        try:
            engine = load_nemo_engine(MODELS / name / "model.nemo", name, device="cuda")
        except InvalidModelError as exc:  # e.g. a torch older than the one that saved the fixture
            report[name] = {"error": f"{exc} <- {exc.__cause__!r}"[:300]}
            _log(f"goldens {name}: {report[name]}")
            continue
        cases = golden(name)["cases"]
        matches = 0
        for first in range(0, len(cases), 4):  # the goldens' batch size
            batch = cases[first : first + 4]
            options = [canary_options(c) if "source_lang" in c else TranscribeOptions() for c in batch]
            results = engine.transcribe([clip(c["clip"]) for c in batch], options)
            matches += sum(list(r.tokens) == c["tokens"] for r, c in zip(results, batch, strict=True))
        report[name] = {"device": engine.info.device, "cases": len(cases), "tokens_equal": matches}
        engine.close()
        _log(f"goldens {name}: {report[name]}")
    return report


class GpuMemory:
    """GPU memory in use as the driver reports it (all processes), and torch's own pool."""

    def __init__(self) -> None:
        """Open NVML on device 0."""
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.card = str(pynvml.nvmlDeviceGetName(self._handle))

    def read(self) -> dict[str, float]:
        """Used (driver) and reserved/allocated (torch) in MiB."""
        import torch

        used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used
        return {
            "driver_used_mib": round(used / MIB, 1),
            "torch_reserved_mib": round(torch.cuda.memory_reserved() / MIB, 1),
            "torch_allocated_mib": round(torch.cuda.memory_allocated() / MIB, 1),
        }


def realsize_engine(work: Path) -> Any:  # noqa: ANN401 - a NemoEngine
    """The benchmark's parakeet-tdt-0.6b-v2 (random weights, the fixtures' seed) as a NeMo engine on CUDA."""
    from aviary.engine.nemo import NemoEngine
    from tools.fixtures import tdt
    from tools.fixtures.realsize import REALSIZE_SEED, synthetic_corpus

    tokenizer = tdt.train_tokenizer(synthetic_corpus(), tdt.PARAKEET_0_6B.vocab_size, work / "tokenizer")
    model = tdt.build_model(tdt.PARAKEET_0_6B, tokenizer, REALSIZE_SEED)
    model.to("cuda")
    return NemoEngine("parakeet-tdt-0.6b-v2 (random)", model, "cuda")


def memory_and_speed(clips: list[Audio], batch: int, rounds: int) -> dict[str, Any]:
    """GPU memory after load and after each job; RTFx at batch 1 and `batch`."""
    import torch

    memory = GpuMemory()
    with tempfile.TemporaryDirectory() as work:
        engine = realsize_engine(Path(work))
    plain = TranscribeOptions()
    torch.cuda.synchronize()
    engine.release_memory()
    after_load = memory.read()
    _log(f"after load: {after_load}")
    jobs: list[dict[str, Any]] = []
    batched = [clips[i % len(clips)] for i in range(batch)]
    for label, audio in [("b1 longest clip", [max(clips, key=len)]), (f"b{batch}", batched)] * 2:
        engine.transcribe(audio, [plain] * len(audio))
        torch.cuda.synchronize()
        during = memory.read()
        engine.release_memory()
        after = memory.read()
        jobs.append({"job": label, "before_release": during, "after_release": after})
        _log(f"job {label}: {during} -> {after}")
    seconds = {1: sum(len(c) for c in clips) / SAMPLE_RATE, batch: sum(len(c) for c in batched) / SAMPLE_RATE}
    runs: dict[int, Callable[[], object]] = {
        1: lambda: [engine.transcribe([c], [plain]) for c in clips],
        batch: lambda: engine.transcribe(batched, [plain] * batch),
    }
    rtfx: dict[str, float] = {}
    for size, run in runs.items():
        run()  # warm-up
        times = []
        for _ in range(rounds):
            torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        rtfx[f"nemo cuda b{size}"] = round(seconds[size] / statistics.median(times), 1)
        _log(f"b{size}: {times}")
    engine.release_memory()
    final = memory.read()
    return {
        "card": memory.card,
        "torch": torch.__version__,
        "after_load": after_load,
        "jobs": jobs,
        "after_benchmark": final,
        "returned_to_post_load": all(
            j["after_release"]["torch_reserved_mib"] <= after_load["torch_reserved_mib"] + 1 for j in jobs
        ),
        "rtfx": rtfx,
    }


def run(clips_file: Path, batch: int, rounds: int) -> dict[str, Any]:
    """The whole device check as a JSON-ready dict."""
    with np.load(clips_file) as saved:
        clips = [saved[k].astype(np.float32) / 32768.0 for k in sorted(saved.files, key=lambda k: int(k[1:]))]
    return {
        "goldens": goldens_on_cuda(),
        "realsize": memory_and_speed(clips, batch, rounds),
        "audio_seconds": round(sum(len(c) for c in clips) / SAMPLE_RATE, 1),
    }


def save_clips(count: int, out: Path) -> None:
    """The benchmark clips as int16 in a compressed `.npz` (for machines without espeak-ng)."""
    from tools.bench.clips import benchmark_clips

    clips = benchmark_clips(count)
    arrays = {f"c{i}": np.round(np.clip(c, -1.0, 1.0) * 32767).astype(np.int16) for i, c in enumerate(clips)}
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]  # numpy's stub wants a str-keyed dict of arrays
