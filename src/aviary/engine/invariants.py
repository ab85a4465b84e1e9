"""A decoder graph split into what depends only on the utterance, run once, and what each step adds.

Canary's exported decoder (NeMo's transformer decoder, in onnx-asr's layout) takes the encoder's
output and mask at every step and, in every layer, projects the whole encoder output to the
cross-attention keys and values again: 2 x T x d x d per layer and step, for a result that is the
same at every step of an utterance. `split_invariant` cuts the graph in two: `once`, every node
that depends only on the given inputs (the projections, their reshapes and scaling, the mask's
broadcast), run once per batch; and `step`, the rest, which takes `once`'s outputs as inputs.
Nodes that depend on nothing (constants) go to whichever part uses them. The arithmetic is the
exported graph's, node for node.

Measured on the random-weight canary-180m-flash (4 decoder layers, d = 1024), CPU, 2 threads, 8
clips of 5-30 s, 60 tokens each (`tools.bench canary`): the engine runs 1.92x faster end to end
at batch 1 and 3.31x at batch 8 than with the decoder as exported (the per-step projections grow
with the batch and the audio's length); tokens identical. On CUDA the cut tensors would travel
to the device at every step unless bound there, so the split is for the CPU only (unmeasured on a GPU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aviary.engine.graphs import load_graph

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

    import numpy.typing as npt
    import onnx
    import onnxruntime as ort

logger = logging.getLogger(__name__)

CHECK_ROWS = 2
CHECK_FRAMES = 5
"""Rows, and size of any other open dimension, of the random inputs `rows_independent` checks with."""
INTEGERS = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class SplitGraph:
    """A graph cut in two: `once` computes `cuts` from the invariant inputs; `step` takes them as inputs."""

    once: onnx.ModelProto
    step: onnx.ModelProto
    cuts: tuple[str, ...]
    weights: Path
    """The folder of both parts' external weights (`engine.graphs`)."""


def split_invariant(path: Path, invariant: Collection[str]) -> SplitGraph | None:
    """The graph at `path` split at the nodes that depend only on the inputs named in `invariant`.

    External weights stay where they are (both parts refer to them in `weights`, `engine.graphs`).
    None when nothing but constants depends on those inputs alone, when a graph output would come
    from `once`, or when the cut tensors' types are unknown: the caller runs the graph unchanged.
    """
    from onnx import helper

    loaded = load_graph(path)
    if loaded is None:
        return None
    model = loaded.model
    graph = model.graph
    constant = {i.name for i in graph.initializer} | {""}  # "" is an omitted optional input
    depends = set(invariant)
    const_nodes: list[onnx.NodeProto] = []
    once_nodes: list[onnx.NodeProto] = []
    step_nodes: list[onnx.NodeProto] = []
    for node in graph.node:  # in topological order, as ONNX requires
        if all(i in constant for i in node.input):
            const_nodes.append(node)
            constant.update(node.output)
        elif all(i in constant or i in depends for i in node.input):
            once_nodes.append(node)
            depends.update(node.output)
        else:
            step_nodes.append(node)
    produced_once = {o for node in once_nodes for o in node.output}
    step_reads = {i for node in step_nodes for i in node.input}
    cuts = tuple(o for node in once_nodes for o in node.output if o in step_reads)
    if not cuts or any(o.name in produced_once for o in graph.output):
        return None
    types = _value_types(model, cuts)
    if types is None:
        return None
    inputs = {i.name: i for i in graph.input}
    initializers = {i.name: i for i in graph.initializer}

    def part(
        name: str,
        nodes: list[onnx.NodeProto],
        extra_inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
    ) -> onnx.ModelProto:
        reads = {i for node in nodes for i in node.input}
        needed = _constant_closure(const_nodes, reads)
        reads |= {i for node in needed for i in node.input}
        body = helper.make_graph(
            [*needed, *nodes],
            name,
            [inputs[n] for n in inputs if n in reads] + extra_inputs,
            outputs,
            [initializers[n] for n in initializers if n in reads],
        )
        return helper.make_model(body, opset_imports=model.opset_import, ir_version=model.ir_version)

    once = part(f"{graph.name}/once", once_nodes, [], [types[c] for c in cuts])
    step = part(f"{graph.name}/step", step_nodes, [types[c] for c in cuts], list(graph.output))
    logger.debug(
        "Split %s: %d nodes once per batch, %d per step, %d tensors between",
        path.name,
        len(once_nodes),
        len(step_nodes),
        len(cuts),
    )
    return SplitGraph(once, step, cuts, loaded.weights)


def _constant_closure(const_nodes: list[onnx.NodeProto], reads: set[str]) -> list[onnx.NodeProto]:
    """The constant nodes that `reads` needs, with the constant nodes they read, in graph order."""
    wanted = set(reads)
    needed: list[onnx.NodeProto] = []
    for node in reversed(const_nodes):
        if any(o in wanted for o in node.output):
            needed.append(node)
            wanted.update(node.input)
    return needed[::-1]


def _value_types(model: onnx.ModelProto, names: tuple[str, ...]) -> dict[str, onnx.ValueInfoProto] | None:
    """Element types of the tensors `names`, by ONNX's shape inference (shapes left open); None if unknown."""
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    if any(not known.get(name) for name in names):
        return None
    return {name: helper.make_tensor_value_info(name, known[name], None) for name in names}


def rows_independent(once: ort.InferenceSession) -> bool:
    """Whether every output of `once` has the batch on its first axis: each row computed from its own.

    The caller keeps a batch's `once` outputs and drops finished rows from them along axis 0; this
    runs `once` on random rows and on the last alone, and compares.
    """
    rng = np.random.default_rng(0)
    feeds: dict[str, npt.NDArray[np.generic]] = {}
    for value in once.get_inputs():
        shape = [CHECK_ROWS] + [dim if isinstance(dim, int) else CHECK_FRAMES for dim in value.shape[1:]]
        if value.type == "tensor(float)":
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
        elif value.type in INTEGERS:  # masks (valid frames first) or ids: 0 and 1 suit both
            integers = rng.integers(0, 2, shape)
            integers[..., 0] = 1
            feeds[value.name] = integers.astype(INTEGERS[value.type])
        else:
            return False
    rows = once.run(None, feeds)
    last = once.run(None, {name: values[-1:] for name, values in feeds.items()})
    return all(
        a.ndim > 0
        and a.shape[0] == CHECK_ROWS
        and b.shape[0] == 1
        and np.allclose(a[-1:], b, rtol=1e-5, atol=1e-6, equal_nan=True)
        for a, b in zip(rows, last, strict=True)
    )
