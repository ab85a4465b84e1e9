"""Tabled position projections compute the exported encoder's function, for inputs in and beyond the table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from aviary.engine.onnx import RuntimeOptions, SessionFactory, load_onnx_engine, read_model_dir
from aviary.engine.positions import precompute_positions
from aviary.types import TranscribeOptions
from tests.support.fixtures import MODELS, PARAKEETS, clip, golden

if TYPE_CHECKING:
    from pathlib import Path

ENCODERS = sorted(p.name for p in MODELS.iterdir() if (p / "encoder-model.onnx").is_file())
TABLE_FRAMES = 6
ROUNDING = 1e-5
"""Absolute tolerance on encoder outputs of order 1: float32 rounding through every layer, summed in
another order (seen: 1.06e-6 on one element of 16,800 on one CPU). A wrong table is off by 0.1 or more."""


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def projections_of_the_encodings(model: onnx.ModelProto) -> int:
    """MatMuls that take the whole positional-encoding slice (NeMo's `linear_pos`), as exported."""
    slices = {n.output[0] for n in model.graph.node if n.op_type == "Slice" and "pos_enc" in n.name}
    return sum(1 for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in slices)


@pytest.mark.parametrize("name", ENCODERS)
def test_the_rewritten_encoder_computes_the_exported_one(name: str) -> None:
    path = MODELS / name / "encoder-model.onnx"
    exported, tabled = onnx.load(str(path)), precompute_positions(path, TABLE_FRAMES)
    assert tabled is not None
    rewritten = tabled.model
    layers = projections_of_the_encodings(exported)
    assert layers > 0
    assert projections_of_the_encodings(rewritten) == 0
    tables = [i for i in rewritten.graph.initializer if i.name.endswith("/table")]
    assert len(tables) == layers
    assert all(list(t.dims)[:2] == [1, 2 * TABLE_FRAMES - 1] for t in tables)

    before, after = session(path), session(rewritten)
    features, lengths = (i.name for i in before.get_inputs())
    rng = np.random.default_rng(3)
    # Encoder frames are 8 mel frames: inputs shorter than the table, at its edge and beyond it.
    for mel in (8, 8 * TABLE_FRAMES - 8, 8 * TABLE_FRAMES, 8 * TABLE_FRAMES + 8, 400):
        batch = rng.standard_normal((3, before.get_inputs()[0].shape[1], mel)).astype(np.float32)
        feeds = {features: batch, lengths: np.array([mel, max(1, mel // 2), max(1, mel // 5)], dtype=np.int64)}
        expected, got = before.run(None, feeds), after.run(None, feeds)
        for want, have in zip(expected, got, strict=True):
            assert want.shape == have.shape
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=ROUNDING)


def test_a_graph_without_nemos_position_encodings_is_left_as_exported() -> None:
    assert precompute_positions(MODELS / "parakeet-digits" / "decoder_joint-model.onnx", TABLE_FRAMES) is None


def parakeet_cases() -> list[tuple[str, dict[str, Any]]]:
    return [(name, case) for name in PARAKEETS for case in golden(name)["cases"][:4]]


@pytest.mark.parametrize(("name", "case"), parakeet_cases(), ids=lambda v: v if isinstance(v, str) else v["clip"])
def test_an_engine_with_a_table_shorter_than_its_input_still_gives_nemos_tokens(
    name: str, case: dict[str, Any]
) -> None:
    # A 0.3 s table: every clip's positions run past it, so both the tabled and the computed rows count.
    options = RuntimeOptions(device="cpu", intra_op_threads=1, position_seconds=0.3)
    engine = load_onnx_engine(MODELS / name, name, options)
    assert list(engine.transcribe([clip(case["clip"])], [TranscribeOptions()])[0].tokens) == case["tokens"]


def test_the_factory_tables_positions_of_external_weights_on_the_cpu_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Published exports keep their weights in `encoder-model.onnx.data`: the rewritten graph, loaded
    # from memory, must still find them beside the file it came from.
    source = MODELS / "parakeet-digits"
    for item in source.iterdir():
        if item.name != "encoder-model.onnx":
            (tmp_path / item.name).write_bytes(item.read_bytes())
    onnx.save_model(
        onnx.load(str(source / "encoder-model.onnx")),
        str(tmp_path / "encoder-model.onnx"),
        save_as_external_data=True,
        location="encoder-model.onnx.data",
        size_threshold=0,
    )
    model_dir = read_model_dir(tmp_path, "external")
    feeds = {"audio_signal": np.ones((2, 128, 160), dtype=np.float32), "length": np.array([160, 90], dtype=np.int64)}
    with caplog.at_level("DEBUG", logger="aviary.engine.positions"):
        tabled = SessionFactory(RuntimeOptions(device="cpu", position_seconds=0.5)).create_encoder(model_dir)
    assert "Tabled 4 position projections" in caplog.text
    caplog.clear()
    with caplog.at_level("DEBUG", logger="aviary.engine.positions"):
        exported = SessionFactory(RuntimeOptions(device="cpu", position_seconds=None)).create_encoder(model_dir)
    assert "Tabled" not in caplog.text
    for have, want in zip(tabled.run(None, feeds), exported.run(None, feeds), strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=ROUNDING)


def test_each_model_says_how_long_an_input_its_position_table_takes() -> None:
    from aviary.config import Settings

    options = RuntimeOptions(device="cpu", intra_op_threads=1)
    parakeet = load_onnx_engine(MODELS / "parakeet-digits", "digits", options).info
    canary = load_onnx_engine(MODELS / "canary-digits", "canary", options).info
    assert parakeet.max_seconds == pytest.approx(1023 * 0.08)  # pos_emb_max_len 1024 frames of 80 ms
    assert canary.max_seconds == pytest.approx(737 * 0.08)
    assert Settings(chunk_seconds=150).chunking(parakeet).max_seconds == parakeet.max_seconds
    assert Settings(chunk_seconds=30).chunking(parakeet).max_seconds == 30
    assert Settings(chunk_seconds=150).chunking(canary).overlap_seconds == 0  # no word times to resolve it by
