"""Canary's decoder with its self-attention keys and values cached, instead of re-projected at every step.

NeMo's transformer decoder caches each layer's *input* for the tokens so far (`decoder_mems`), and
at every step each layer layer-norms all of them again and projects them to keys and values: the
step grows with the output's length, and onnxruntime's profile of canary-180m-flash (8 rows of 30 s,
40 steps, the cross-attention already split off by `engine.invariants`) put half of the step in those
two products. Layer norm and the projections work row by row, so they commute with the
concatenation along tokens: `cache_self_attention` rewrites each layer to project only the new
tokens (the query's own layer norm output, same weights) and concatenate the result to a cache the
caller passes in, returning the grown cache as a new output. The arithmetic per row is the
exported graph's; `decoder_mems` stays (the token positions are read from its length).

Measured with `tools.bench canary` (random-weight canary-180m-flash, 2 threads, 8 clips of 5-30 s,
60 tokens each, after the split): 1.16x end to end at batch 1, 1.26x at batch 8; tokens identical.
The gain grows with the output's length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

SWAP_LAST = [0, 2, 1]
"""The Transpose around NeMo's concatenation of cached and new layer inputs ([B, T, d] <-> [B, d, T])."""


@dataclass(frozen=True)
class Cache:
    """One cached projection: fed as `input` ([batch, tokens so far, width]), returned grown as `output`."""

    input: str
    output: str
    width: int


@dataclass
class _Index:
    """Who produces and who reads each tensor of a graph, and which tensors are constants."""

    initializers: dict[str, onnx.TensorProto]
    constant: set[str]
    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]

    @classmethod
    def of(cls, graph: onnx.GraphProto) -> _Index:
        initializers = {i.name: i for i in graph.initializer}
        constant = set(initializers) | {""}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            if all(i in constant for i in node.input):
                constant.update(node.output)
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        return cls(initializers, constant, {o: n for n in graph.node for o in n.output}, consumers)

    def made_by(self, name: str, op: str, perm: list[int] | None = None) -> onnx.NodeProto | None:
        """The node of type `op` (a Transpose: with permutation `perm`) that produces `name`, if that is what does."""
        node = self.producer.get(name)
        if node is None or node.op_type != op or (perm is not None and _attribute(node, "perm") != perm):
            return None
        return node


def cache_self_attention(model: onnx.ModelProto, mems: str = "decoder_mems") -> list[Cache]:
    """Rewrite `model` in place to cache its self-attention projections; the caches added (none: unchanged).

    A layer is rewritten when its key/value layer norm reads `Transpose(Concat(Transpose(Gather(mems)),
    Transpose(h)))` (NeMo's cached inputs and the new ones `h`, along tokens), another layer norm with
    the same weights reads `h`, and every consumer of the key/value layer norm is a MatMul by a
    constant [d, d'] weight, optionally followed by an Add of a constant bias.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    index = _Index.of(graph)
    removed: set[int] = set()
    added: dict[int, list[onnx.NodeProto]] = {}  # new nodes, placed where the projection they replace was
    caches: list[Cache] = []
    for norm in [n for n in graph.node if n.op_type == "LayerNormalization"]:
        query_norm = _query_norm(norm, index, mems)
        projections = _projections(norm, index)
        if query_norm is None or projections is None:
            continue
        for matmul, add in projections:
            final = (add or matmul).output[0]
            new, product = f"{final}/new", f"{final}/product"
            nodes = [helper.make_node("MatMul", [query_norm, matmul.input[1]], [product if add else new])]
            if add is not None:
                nodes.append(
                    helper.make_node("Add", [product if i == matmul.output[0] else i for i in add.input], [new])
                )
            nodes.append(helper.make_node("Concat", [f"{final}/cache", new], [final], axis=1))
            removed.update(id(n) for n in (matmul, add) if n is not None)
            added[id(add or matmul)] = nodes
            caches.append(Cache(f"{final}/cache", final, int(index.initializers[matmul.input[1]].dims[1])))
    if not caches:
        return []
    rebuilt = [n for node in graph.node for n in added.get(id(node), [] if id(node) in removed else [node])]
    del graph.node[:]
    graph.node.extend(rebuilt)
    for cache in caches:
        graph.input.append(
            helper.make_tensor_value_info(cache.input, TensorProto.FLOAT, ["batch", "cached", cache.width])
        )
        graph.output.append(
            helper.make_tensor_value_info(cache.output, TensorProto.FLOAT, ["batch", "tokens", cache.width])
        )
    _drop_dead_nodes(graph)
    _sort(graph)
    logger.debug("Cached %d self-attention projections", len(caches))
    return caches


def _attribute(node: onnx.NodeProto, name: str) -> object:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _query_norm(norm: onnx.NodeProto, index: _Index, mems: str) -> str | None:
    """The output of the query's layer norm when `norm` normalizes NeMo's cached-plus-new layer inputs."""
    outer = index.made_by(norm.input[0], "Transpose", SWAP_LAST)
    concat = index.made_by(outer.input[0], "Concat") if outer is not None else None
    if concat is None or len(concat.input) != 2 or _attribute(concat, "axis") not in (2, -1):  # noqa: PLR2004
        return None
    cached, new = (index.made_by(name, "Transpose", SWAP_LAST) for name in concat.input)
    gather = index.made_by(cached.input[0], "Gather") if cached is not None else None
    if new is None or gather is None or gather.input[0] != mems:
        return None
    return next(
        (
            n.output[0]
            for n in index.consumers.get(new.input[0], [])
            if n.op_type == "LayerNormalization" and n.input[1:] == norm.input[1:] and n.attribute == norm.attribute
        ),
        None,
    )


def _projections(norm: onnx.NodeProto, index: _Index) -> list[tuple[onnx.NodeProto, onnx.NodeProto | None]] | None:
    """(MatMul, bias Add or None) for every consumer of `norm`, or None if one is anything else."""
    found: list[tuple[onnx.NodeProto, onnx.NodeProto | None]] = []
    for matmul in index.consumers.get(norm.output[0], []):
        weight = index.initializers.get(matmul.input[1]) if matmul.op_type == "MatMul" else None
        if weight is None or matmul.input[0] != norm.output[0] or len(weight.dims) != 2:  # noqa: PLR2004
            return None
        after = index.consumers.get(matmul.output[0], [])
        add = after[0] if len(after) == 1 and after[0].op_type == "Add" else None
        if add is not None and not all(i in index.constant for i in add.input if i != matmul.output[0]):
            add = None
        found.append((matmul, add))
    return found or None


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs is read by another node or is a graph output."""
    while True:
        read = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
        live = [n for n in graph.node if any(o in read for o in n.output)]
        if len(live) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(live)


def _sort(graph: onnx.GraphProto) -> None:
    """Order the nodes so that each comes after the producers of its inputs (stable otherwise)."""
    produced = {o for node in graph.node for o in node.output}
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        waiting = []
        for node in pending:
            if all(i in ready or i not in produced for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            msg = "the rewritten graph has a cycle"
            raise ValueError(msg)
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)
