"""Canary's decoder rewritten (cached self-attention keys and values; the per-utterance part split off,
`test_invariants.py`) computes the exported decoder's function."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from aviary.engine.aed import UTTERANCE_INPUTS
from aviary.engine.invariants import split_invariant
from aviary.engine.kv_cache import cache_self_attention
from aviary.engine.onnx import RuntimeOptions, load_onnx_engine
from tests.support.fixtures import MODELS, canary_options, clip, golden

DECODER = MODELS / "canary-digits" / "decoder-model.onnx"
REWRITES = ["split-cached", "cached", "split", "exported"]


def session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def self_attention_projections(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "MatMul" and "first_sub_layer/" in n.name)


def test_every_layer_gets_a_key_and_a_value_cache() -> None:
    exported, cached = onnx.load(str(DECODER)), onnx.load(str(DECODER))
    caches = cache_self_attention(cached)
    layers = sum(1 for n in exported.graph.node if n.op_type == "LayerNormalization" and "layer_norm_1_1" in n.name)
    assert layers > 0
    assert len(caches) == 2 * layers
    assert {c.input for c in caches} <= {i.name for i in cached.graph.input}
    assert {c.output for c in caches} <= {o.name for o in cached.graph.output}
    # The key/value layer norm over every token so far is gone; its projections read the new rows only.
    assert sum(1 for n in cached.graph.node if "layer_norm_1_1" in n.name) == 0
    onnx.checker.check_model(cached)


@pytest.mark.parametrize(("split", "cache"), [(True, True), (False, True), (True, False)], ids=REWRITES[:3])
def test_rewritten_steps_equal_the_exported_decoder_as_rows_leave_the_batch(split: bool, cache: bool) -> None:  # noqa: FBT001
    exported = session(str(DECODER))
    parts = split_invariant(DECODER, UTTERANCE_INPUTS) if split else None
    step = parts.step if parts is not None else onnx.load(str(DECODER))
    caches = cache_self_attention(step) if cache else []
    cached = session(step)
    inputs = {i.name: i.shape for i in exported.get_inputs()}
    layers, width = inputs["decoder_mems"][0], inputs["decoder_mems"][3]
    vocabulary = exported.get_outputs()[0].shape[2]
    rng = np.random.default_rng(11)
    rows, frames = 3, 13
    embeddings = rng.standard_normal((rows, frames, inputs["encoder_embeddings"][2])).astype(np.float32)
    mask = np.ones((rows, frames), dtype=np.int64)
    mask[1, 9:] = 0
    utterance: dict[str, np.ndarray] = {"encoder_embeddings": embeddings, "encoder_mask": mask}
    if parts is not None:
        utterance = dict(zip(parts.cuts, session(parts.once).run(list(parts.cuts), utterance), strict=True))
    state = {c.input: np.zeros((rows, 0, c.width), dtype=np.float32) for c in caches}
    ids = rng.integers(0, vocabulary, (rows, 7))  # a prompt, then one token per step
    mems_exported = mems_cached = np.zeros((layers, rows, 0, width), dtype=np.float32)
    for step_number in range(6):
        want_logits, mems_exported = exported.run(
            None,
            {"input_ids": ids, "encoder_embeddings": embeddings, "encoder_mask": mask, "decoder_mems": mems_exported},
        )
        outputs = cached.run(
            ["logits", "decoder_hidden_states", *(c.output for c in caches)],
            {"input_ids": ids, "decoder_mems": mems_cached, **utterance, **state},
        )
        have_logits, mems_cached = outputs[0], outputs[1]
        state = {c.input: grown for c, grown in zip(caches, outputs[2:], strict=True)}
        np.testing.assert_allclose(have_logits, want_logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mems_cached, mems_exported, rtol=1e-5, atol=1e-5)
        assert all(v.shape[1] == mems_cached.shape[2] for v in state.values())  # one cached row per token
        if step_number == 2:  # the first row finishes: every per-row input loses it along axis 0
            keep = np.array([False, True, True])
            embeddings, mask = embeddings[keep], mask[keep]
            utterance = {name: values[keep] for name, values in utterance.items()}
            state = {name: values[keep] for name, values in state.items()}
            mems_exported, mems_cached = mems_exported[:, keep], mems_cached[:, keep]
        ids = rng.integers(0, vocabulary, (len(embeddings), 1))


@pytest.mark.parametrize(
    ("split", "cache"),
    [(True, True), (False, True), (True, False), (False, False)],
    ids=REWRITES,
)
def test_the_engine_keeps_nemos_tokens_with_either_rewrite(split: bool, cache: bool) -> None:  # noqa: FBT001
    cases = golden("canary-digits")["cases"]
    options = RuntimeOptions(device="cpu", intra_op_threads=1, split_decoder=split, cache_self_attention=cache)
    engine = load_onnx_engine(MODELS / "canary-digits", "canary", options)
    assert bool(engine._caches) is cache  # type: ignore[attr-defined]  # noqa: SLF001 - which decoder it runs
    assert (engine._once is not None) is split  # type: ignore[attr-defined]  # noqa: SLF001
    # One batch of every case: rows finish at different steps and leave the caches.
    results = engine.transcribe([clip(c["clip"]) for c in cases], [canary_options(c) for c in cases])
    assert [list(r.tokens) for r in results] == [c["tokens"] for c in cases]


def test_graphs_without_nemos_cached_layer_inputs_are_left_unchanged() -> None:
    joint = onnx.load(str(MODELS / "parakeet-digits" / "decoder_joint-model.onnx"))
    before = joint.SerializeToString()
    assert cache_self_attention(joint) == []
    assert joint.SerializeToString() == before
    decoder = onnx.load(str(DECODER))
    before = decoder.SerializeToString()
    assert cache_self_attention(decoder, mems="some_other_input") == []  # the Gather must read the layer inputs
    assert decoder.SerializeToString() == before
