"""FastConformer's relative-position projections, computed once per model instead of on every run.

Every relative-position attention layer of NeMo's FastConformer encoder (Parakeet, Canary) projects
the sinusoidal encodings of the input's 2T-1 relative positions with its `linear_pos` weight, on
every run: a (2T-1) x d x d product per layer, twice the rows of the query projection, and the same
rows for every input of T frames. A row's product depends only on its position, so
`precompute_positions` rewrites the exported graph: each layer slices its rows from a table of
products computed here once, over the positions of inputs up to `frames` frames, and multiplies
only rows beyond the table (none, for inputs within it). The result is the same product, row for
row (float rounding aside: the table is computed by NumPy's BLAS, the rest by onnxruntime's).

Measured on the random-weight Parakeet 0.6B (24 layers, d = 1024), CPU, 2 threads, one 10 s input,
25 interleaved pairs: the encoder runs 1.07x faster (median; `linear_pos` was 6-8% of its kernel
time in onnxruntime's profile), for 74 MB of tables at 30 s (24 layers x 753 rows x 4 KB). At
batch 16 the projection is shared by the batch, so the gain there is about a sixth as large.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from aviary.engine.graphs import Graph, load_graph

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt
    import onnx

logger = logging.getLogger(__name__)


def precompute_positions(path: Path, frames: int) -> Graph | None:
    """The encoder graph at `path` rewritten to slice `linear_pos` products from precomputed tables.

    The tables cover the relative positions of inputs of up to `frames` encoder frames; longer
    inputs multiply the rows beyond them as before. External weights stay where they are (the
    returned graph refers to them in its `weights` folder, `engine.graphs`). None when the graph is not
    NeMo's relative-position layout (a Slice of a constant [1, R, d] encoding table, consumed by
    MatMuls with float32 [d, d'] weights), so the caller runs it unchanged.
    """
    from onnx import helper, numpy_helper

    loaded = load_graph(path)
    if loaded is None:
        return None
    model = loaded.model
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute}

    def array(name: str) -> npt.NDArray[np.float32] | None:
        tensor = initializers[name] if name in initializers else constants.get(name)
        values = None if tensor is None else loaded.array(tensor)
        return values if values is not None and values.dtype == np.float32 else None

    found = _encoding_slice(graph, initializers, constants, loaded)
    if found is None:
        return None
    slice_node, projections = found
    encodings = array(slice_node.input[0])
    if encodings is None:
        return None
    rows = encodings.shape[1]
    # The table's rows: positions frames-1 .. -(frames-1) around the middle row (position 0 in
    # NeMo's table). Which rows are tabled only decides speed: the slicing below is exact for any.
    low = max(0, (rows + 1) // 2 - frames)
    high = min(rows, (rows + 1) // 2 + frames - 1)
    covered = encodings[0, low:high]

    prefix = slice_node.output[0] + "/tabled"
    start, end, axes = slice_node.input[1], slice_node.input[2], slice_node.input[3]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([low], dtype=np.int64), f"{prefix}/low"),
            numpy_helper.from_array(np.array([high], dtype=np.int64), f"{prefix}/high"),
        ]
    )
    # The rows [start, end) the original graph projects, split into those before the table
    # [start, min(low, end)), in it [max(start, low), min(end, high)) and after it [max(high, start), end).
    # Slice reads negative indices from the end, so the table's own indices are clamped at 0.
    index_nodes = [
        helper.make_node("Min", [f"{prefix}/low", end], [f"{prefix}/before_end"]),
        helper.make_node("Max", [f"{prefix}/high", start], [f"{prefix}/after_start"]),
        helper.make_node("Slice", [slice_node.input[0], start, f"{prefix}/before_end", axes], [f"{prefix}/before"]),
        helper.make_node("Slice", [slice_node.input[0], f"{prefix}/after_start", end, axes], [f"{prefix}/after"]),
        helper.make_node("Max", [start, f"{prefix}/low"], [f"{prefix}/in_start"]),
        helper.make_node("Sub", [f"{prefix}/in_start", f"{prefix}/low"], [f"{prefix}/table_start"]),
        helper.make_node("Min", [end, f"{prefix}/high"], [f"{prefix}/in_end"]),
        helper.make_node("Sub", [f"{prefix}/in_end", f"{prefix}/low"], [f"{prefix}/table_end_raw"]),
        helper.make_node("Max", [f"{prefix}/table_end_raw", f"{prefix}/table_start"], [f"{prefix}/table_end"]),
    ]
    replacements = {slice_node.output[0]: [slice_node, *index_nodes]}  # by each replaced node's output
    for node in projections:
        weight = array(node.input[1])
        if weight is None:
            return None
        table = f"{node.name or node.output[0]}/table"
        graph.initializer.append(numpy_helper.from_array((covered @ weight)[np.newaxis].astype(np.float32), table))
        out = node.output[0]
        replacement = [
            helper.make_node("MatMul", [f"{prefix}/before", node.input[1]], [f"{out}/before"]),
            helper.make_node("Slice", [table, f"{prefix}/table_start", f"{prefix}/table_end", axes], [f"{out}/in"]),
            helper.make_node("MatMul", [f"{prefix}/after", node.input[1]], [f"{out}/after"]),
            helper.make_node("Concat", [f"{out}/before", f"{out}/in", f"{out}/after"], [out], axis=1),
        ]
        replacements[out] = replacement
    # One rebuild, each replacement where its node was: the graph stays in topological order.
    nodes = [replacements.get(n.output[0], [n]) for n in graph.node]
    del graph.node[:]
    graph.node.extend(n for group in nodes for n in group)
    logger.debug("Tabled %d position projections of %s for %d frames", len(projections), path.name, frames)
    return Graph(model, loaded.weights)


def longest_input(path: Path) -> int | None:
    """The most encoder frames an input of the graph at `path` may have; None when it has no encoding table.

    NeMo exports its relative positional encodings as a table of 2 x `pos_emb_max_len` - 1 rows, and
    an input of T frames slices 2T - 1 of them. Beyond that, onnxruntime clamps the slice and the
    encoder attends with wrong positions (the transcript degrades without an error) until the shapes
    no longer broadcast (an error). NeMo itself grows the table in torch; the export cannot.
    """
    loaded = load_graph(path)
    if loaded is None:
        return None
    graph = loaded.model.graph
    initializers = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute}
    found = _encoding_slice(graph, initializers, constants, loaded)
    if found is None:
        return None
    name = found[0].input[0]
    table = initializers[name] if name in initializers else constants[name]
    return (int(table.dims[1]) + 1) // 2


def _encoding_slice(
    graph: onnx.GraphProto,
    initializers: dict[str, onnx.TensorProto],
    constants: dict[str, onnx.TensorProto],
    loaded: Graph,
) -> tuple[onnx.NodeProto, list[onnx.NodeProto]] | None:
    """The Slice of the positional-encoding table along its rows, and the projections of its output."""

    def constant(name: str) -> list[int] | None:
        tensor = initializers[name] if name in initializers else constants.get(name)
        return None if tensor is None else [int(v) for v in loaded.array(tensor).ravel()]

    for node in graph.node:
        if node.op_type != "Slice" or len(node.input) < 4:  # noqa: PLR2004 - data, starts, ends, axes[, steps]
            continue
        table = initializers[node.input[0]] if node.input[0] in initializers else constants.get(node.input[0])
        if table is None or len(table.dims) != 3 or table.dims[0] != 1:  # noqa: PLR2004 - [1, positions, d]
            continue
        steps = constant(node.input[4]) if len(node.input) > 4 and node.input[4] else [1]  # noqa: PLR2004
        if constant(node.input[3]) != [1] or steps != [1]:
            continue
        projections = [
            n
            for n in graph.node
            if n.op_type == "MatMul"
            and n.input[0] == node.output[0]
            and n.input[1] in initializers
            and len(initializers[n.input[1]].dims) == 2  # noqa: PLR2004 - a [d, d'] weight
            and initializers[n.input[1]].dims[0] == table.dims[2]
            and initializers[n.input[1]].data_type == table.data_type
        ]
        if projections:
            return node, projections
    return None
