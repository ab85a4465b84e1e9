"""How close the CPU engine's parts run to what this machine can do at all (issue #3's targets).

Two limits, measured side by side in interleaved rounds on the same cores:

- **The encoder against the machine's fp32 matrix-multiply rate.** The encoder's floating-point
  work is counted from its graph (every MatMul and Conv, shapes inferred for a 10 s input); its
  achieved rate (work / time) is set beside NumPy's BLAS on a 2048^3 product, the fastest fp32
  work these cores do. An encoder near that rate cannot be made much faster without doing less
  arithmetic (Aviary's position tables already skip the `linear_pos` products) or doing it in
  lower precision, which changes the tokens.
- **A greedy decoding step against memory bandwidth.** One emitted token runs the prediction
  network and the joint at batch 1: matrix-vector products that read every weight once. Its time
  is set beside the bytes it reads and a 256 MB matrix-vector product (this machine's DRAM read
  rate). Steps depend on the token before, so they cannot overlap each other.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import chdir
from typing import TYPE_CHECKING, Any

import numpy as np

from aviary.engine.onnx import read_model_dir
from aviary.types import SAMPLE_RATE
from tools.bench.engines import aviary_engine

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

SECONDS = 10.0


def encoder_gflop(path: Path, seconds: float = SECONDS) -> dict[str, float]:
    """GFLOP of the exported encoder's MatMuls and Convs for `seconds` of audio, `linear_pos` apart."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path), load_external_data=False)
    frames = int(seconds * SAMPLE_RATE) // 160 + 1
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_value = 1
        if len(dims) == 3:  # noqa: PLR2004 - [batch, features, frames]
            dims[2].dim_value = frames
    with chdir(path.parent):  # the inference opens the external weights by their relative names
        model = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in model.graph.initializer}
    for value in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    work = {"total": 0.0, "linear_pos": 0.0}
    for node in model.graph.node:
        if node.op_type not in {"MatMul", "Gemm", "Conv"}:
            continue
        out, a, b = (shapes[name] for name in (node.output[0], node.input[0], node.input[1]))
        inner = float(np.prod(b[1:])) if node.op_type == "Conv" else float(a[-1])
        flops = 2.0 * float(np.prod(out)) * inner / 1e9
        work["total"] += flops
        if "linear_pos" in node.name:
            work["linear_pos"] += flops
    return work


def _best(run: Any, repeats: int = 3) -> float:  # noqa: ANN401 - any callable
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def run(model: Path, *, threads: int, rounds: int) -> dict[str, Any]:
    """Measure both limits for the model at `model` (the real-size random-weight Parakeet)."""
    engine = aviary_engine(model, threads)
    work = encoder_gflop(read_model_dir(model, "bench").files["encoder-model"])
    tabled = work["total"] - work["linear_pos"]  # what Aviary's encoder session computes
    rng = np.random.default_rng(0)
    features, lengths = engine._preprocessor([rng.standard_normal(int(SECONDS * SAMPLE_RATE)).astype(np.float32)])  # noqa: SLF001
    encoder = engine._encoder  # noqa: SLF001 - the session the engine runs
    a, b = (rng.standard_normal((2048, 2048)).astype(np.float32) for _ in range(2))
    net = engine._decoder._net  # type: ignore[attr-defined]  # noqa: SLF001 - the NumPy decoder's weights
    step_bytes = sum(
        w.nbytes for w in (net.recurrent, *(m for layer in net.layers for m in layer), *net.pred, *net.out)
    )
    hidden = np.zeros((net.depth, 1, net.hidden), dtype=np.float32)
    projected = rng.standard_normal((1, net.enc[0].shape[1])).astype(np.float32)
    token = np.zeros(1, dtype=np.int64)

    def steps(count: int = 200) -> None:
        for _ in range(count):
            pred, _, _ = net.predict(token, hidden, hidden)
            net.joint(projected, pred)

    big: npt.NDArray[np.float32] = rng.standard_normal((16384, 4096)).astype(np.float32)  # 256 MB
    vector = rng.standard_normal(4096).astype(np.float32)
    inputs = {"audio_signal": features, "length": lengths}
    encoder.run(None, inputs)
    samples: dict[str, list[float]] = {"encoder": [], "sgemm": [], "step": [], "dram": []}
    for _ in range(rounds):
        samples["encoder"].append(tabled / _best(lambda: encoder.run(None, inputs)))
        samples["sgemm"].append(2 * 2048**3 / 1e9 / _best(lambda: a @ b))
        samples["step"].append(_best(steps) / 200)
        samples["dram"].append(big.nbytes / 1e9 / _best(lambda: big @ vector))
    per_round = [e / s for e, s in zip(samples["encoder"], samples["sgemm"], strict=True)]
    step_seconds = statistics.median(samples["step"])
    return {
        "model": str(model),
        "threads": threads,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "encoder_gflop_10s": round(work["total"], 1),
        "encoder_gflop_10s_tabled": round(tabled, 1),
        "encoder_gflops": round(statistics.median(samples["encoder"]), 1),
        "sgemm_gflops": round(statistics.median(samples["sgemm"]), 1),
        "encoder_vs_sgemm_per_round": [round(r, 3) for r in per_round],
        "encoder_vs_sgemm": round(statistics.median(per_round), 3),
        "decoder_step_ms": round(step_seconds * 1e3, 3),
        "decoder_step_mb": round(step_bytes / 1e6, 1),
        "decoder_step_gbs": round(step_bytes / 1e9 / step_seconds, 1),
        "dram_read_gbs": round(statistics.median(samples["dram"]), 1),
    }
