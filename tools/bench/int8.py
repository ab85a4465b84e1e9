"""An int8 encoder, quantized with onnxruntime's own tool (as the public `*.int8.onnx` exports are).

Dynamic quantization of the encoder's MatMul weights to int8; the decoder stays fp32. Reports
RTFx against fp32 in the same run, and the digit-word error rate of `parakeet-digits` in fp32 and
int8 on fresh held-out speech, so the accuracy cost is measured, not assumed.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import numpy as np

from aviary.engine.onnx import RuntimeOptions, load_onnx_engine
from aviary.types import TranscribeOptions
from tools.fixtures import speech

if TYPE_CHECKING:
    from pathlib import Path


def quantize_encoder(model: Path) -> Path:
    """Write `encoder-model.int8.onnx` next to the fp32 encoder (once); return it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = model / "encoder-model.int8.onnx"
    if not target.exists():
        staging = target.with_suffix(".tmp.onnx")
        quantize_dynamic(
            model / "encoder-model.onnx",
            staging,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            per_channel=False,
            use_external_data_format=False,
        )
        shutil.move(staging, target)
    return target


def digits_wer(model_dir: Path, work: Path, utterances: int = 120, seed: int = 31) -> dict[str, Any]:
    """parakeet-digits WER on fresh held-out speech, fp32 vs its int8-quantized encoder."""
    import jiwer

    copy = work / "parakeet-digits"
    if not copy.exists():
        shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("*.nemo"))
    quantize_encoder(copy)
    rng = np.random.default_rng(seed)
    specs = [speech.random_spec(rng, "en", heldout=True) for _ in range(utterances)]
    audio = [speech.synthesize(s) for s in specs]
    references = [s.text for s in specs]
    result: dict[str, Any] = {"utterances": utterances}
    for label, quantization in (("fp32", None), ("int8", "int8")):
        options = RuntimeOptions(device="cpu", intra_op_threads=2, quantization=quantization)
        engine = load_onnx_engine(copy, f"digits-{label}", options)
        texts = [t.text for t in engine.transcribe(audio, [TranscribeOptions()] * len(audio))]
        result[f"wer_{label}"] = round(float(jiwer.wer(references, texts)), 4)
    result["wer_points_int8_minus_fp32"] = round(100 * (result["wer_int8"] - result["wer_fp32"]), 2)
    return result
