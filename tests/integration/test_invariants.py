"""Canary's decoder split into its per-utterance and per-step parts computes the exported decoder's function."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from aviary.engine.aed import UTTERANCE_INPUTS
from aviary.engine.invariants import rows_independent, split_invariant
from aviary.engine.onnx import RuntimeOptions, load_onnx_engine
from tests.support.fixtures import MODELS, canary_options, clip, golden

if TYPE_CHECKING:
    from pathlib import Path

DECODER = MODELS / "canary-digits" / "decoder-model.onnx"


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def cross_projections(model: onnx.ModelProto) -> int:
    """MatMuls of the encoder's output by a weight: NeMo's cross-attention keys and values, one pair per layer."""
    return sum(1 for n in model.graph.node if n.op_type == "MatMul" and n.input[0] == "encoder_embeddings")


def test_the_projections_of_the_encoder_output_move_to_the_per_utterance_part() -> None:
    exported = onnx.load(str(DECODER))
    split = split_invariant(DECODER, UTTERANCE_INPUTS)
    assert split is not None
    layers = cross_projections(exported) // 2
    assert layers > 0
    assert cross_projections(split.once) == 2 * layers
    assert cross_projections(split.step) == 0
    assert {i.name for i in split.once.graph.input} == set(UTTERANCE_INPUTS)
    step_inputs = {i.name for i in split.step.graph.input}
    assert {"input_ids", "decoder_mems", *split.cuts} <= step_inputs
    assert "encoder_embeddings" not in step_inputs
    assert [o.name for o in split.once.graph.output] == list(split.cuts)
    assert [o.name for o in split.step.graph.output] == [o.name for o in exported.graph.output]


def test_the_engine_splits_its_decoder_and_keeps_nemos_tokens(caplog: pytest.LogCaptureFixture) -> None:
    cases = golden("canary-digits")["cases"]
    audio, options = [clip(c["clip"]) for c in cases], [canary_options(c) for c in cases]
    with caplog.at_level("DEBUG", logger="aviary.engine.invariants"):
        split = load_onnx_engine(MODELS / "canary-digits", "split", RuntimeOptions(device="cpu", intra_op_threads=1))
    assert "Split decoder-model.onnx" in caplog.text
    caplog.clear()
    with caplog.at_level("DEBUG", logger="aviary.engine.invariants"):
        exported = load_onnx_engine(
            MODELS / "canary-digits", "exported", RuntimeOptions(device="cpu", intra_op_threads=1, split_decoder=False)
        )
    assert "Split" not in caplog.text
    # One batch of every case: rows finish at different steps, so the per-utterance tensors lose rows.
    for model in (split, exported):
        assert [list(r.tokens) for r in model.transcribe(audio, options)] == [c["tokens"] for c in cases]


def test_a_decoder_with_external_weights_is_split_and_finds_them(tmp_path: Path) -> None:
    source = MODELS / "canary-digits"
    for item in source.iterdir():
        if item.name != "decoder-model.onnx":
            (tmp_path / item.name).write_bytes(item.read_bytes())
    onnx.save_model(
        onnx.load(str(DECODER)),
        str(tmp_path / "decoder-model.onnx"),
        save_as_external_data=True,
        location="decoder-model.onnx.data",
        size_threshold=0,
    )
    model = load_onnx_engine(tmp_path, "external", RuntimeOptions(device="cpu", intra_op_threads=1))
    assert model._once is not None  # type: ignore[attr-defined]  # noqa: SLF001 - which decoder the engine runs
    for case in golden("canary-digits")["cases"][:3]:
        assert list(model.transcribe([clip(case["clip"])], [canary_options(case)])[0].tokens) == case["tokens"]


def graph(nodes: list[onnx.NodeProto], outputs: list[str], **weights: Any) -> onnx.ModelProto:  # noqa: ANN401
    """A float graph of inputs `x` [batch, frames, 4] and `y` [batch, 4] with the given nodes and weights."""
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", 4]),
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
    ]
    body = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in weights.items()],
    )
    return helper.make_model(body, opset_imports=[helper.make_opsetid("", 17)])


def saved(tmp_path: Path, model: onnx.ModelProto) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path))
    return path


def test_graphs_without_a_per_utterance_part_are_left_whole(tmp_path: Path) -> None:
    assert split_invariant(MODELS / "parakeet-digits" / "decoder_joint-model.onnx", UTTERANCE_INPUTS) is None
    mixed = graph(
        [helper.make_node("Add", ["x", "y3"], ["z"]), helper.make_node("Unsqueeze", ["y", "one"], ["y3"])], ["z"]
    )
    mixed.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "one"))
    assert split_invariant(saved(tmp_path, mixed), ["nothing"]) is None
    # A graph output computed from the invariant input alone would have to come from the once part.
    direct = graph([helper.make_node("MatMul", ["x", "w"], ["z"])], ["z"], w=np.eye(4))
    assert split_invariant(saved(tmp_path, direct), ["x"]) is None


def test_a_split_graph_on_ordinary_nodes_computes_the_same(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["projected"]),
        helper.make_node("Transpose", ["projected"], ["keys"], perm=[0, 2, 1]),
        helper.make_node("Unsqueeze", ["y", "one"], ["query"]),
        helper.make_node("MatMul", ["query", "keys"], ["z"]),
    ]
    model = graph(nodes, ["z"], w=np.arange(16).reshape(4, 4) / 10)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "one"))
    split = split_invariant(saved(tmp_path, model), ["x"])
    assert split is not None
    assert split.cuts == ("keys",)
    once, step = session(split.once), session(split.step)
    assert rows_independent(once)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((3, 5, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    (keys,) = once.run(None, {"x": x})
    np.testing.assert_allclose(
        step.run(None, {"y": y, "keys": keys})[0], session(model).run(None, {"x": x, "y": y})[0], rtol=1e-6
    )


@pytest.mark.parametrize(
    ("node", "independent"),
    [
        (helper.make_node("Transpose", ["x"], ["z"], perm=[0, 2, 1]), True),
        (helper.make_node("Transpose", ["x"], ["z"], perm=[1, 0, 2]), False),  # the batch moved off axis 0
        (helper.make_node("ReduceSum", ["x", "zero"], ["z"], keepdims=1), False),  # rows mixed together
        (helper.make_node("ReduceSum", ["x", "zero"], ["z"], keepdims=0), False),
    ],
    ids=["frames-swapped", "batch-moved", "rows-summed", "batch-dropped"],
)
def test_rows_independent_tells_batch_first_outputs_from_mixed_ones(node: onnx.NodeProto, independent: bool) -> None:  # noqa: FBT001
    once = graph([node], ["z"])
    once.graph.initializer.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"))
    del once.graph.input[1]  # only x
    assert rows_independent(session(once)) is independent
