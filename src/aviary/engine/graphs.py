"""ONNX graphs loaded for rewriting, with external weights found where they really are.

Published exports keep their weights beside the graph (`encoder-model.onnx.data`), and Hugging
Face's cache keeps a snapshot's files as symbolic links into its `blobs/` folder. onnx refuses to
read weights through a symbolic link, and onnxruntime, given a graph as bytes and the folder of
its weights, refuses weights that resolve outside that folder. `load_graph` reads a graph without
its weights and points each external location at the file it resolves to, so the rewritten graph
finds them in `Graph.weights`.

`Graph.array` reads a tensor's values, external ones straight from their file: onnx's own reader
also refuses a weights file with more than one hard link (a guard against crafted archives), and
models are hard-linked by deduplicating stores and `cp -al` copies, where onnxruntime reads them
as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy.typing as npt
    import onnx


@dataclass(frozen=True)
class Graph:
    """A graph whose external weights, if any, are files in `weights` (onnxruntime's external folder)."""

    model: onnx.ModelProto
    weights: Path

    def array(self, tensor: onnx.TensorProto) -> npt.NDArray[Any]:
        """`tensor`'s values (one of this graph's), external data read from its file in `weights`.

        Raises:
            ValueError: the tensor's external data is not where its record says (a short file, say).
            OSError: the file cannot be read.
        """
        import onnx
        from onnx import helper, numpy_helper

        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            return numpy_helper.to_array(tensor)
        record = {e.key: e.value for e in tensor.external_data}
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
        count = int(np.prod(tensor.dims, dtype=np.int64))
        size = count * dtype.itemsize
        if "location" not in record or dtype.kind not in "biuf" or int(record.get("length", size)) != size:
            msg = f"{tensor.name}: unsupported external data"
            raise ValueError(msg)
        offset = int(record.get("offset", 0))
        values = np.fromfile(self.weights / record["location"], dtype=dtype, count=count, offset=offset)
        if values.size != count:
            msg = f"{tensor.name}: {record['location']} holds {values.size} of its {count} values"
            raise ValueError(msg)
        return values.reshape(tuple(tensor.dims)).astype(dtype.newbyteorder("="), copy=False)


def load_graph(path: Path) -> Graph | None:
    """The graph at `path` without its weights loaded, its external locations resolved.

    None when a location leaves the graph's folder (absolute, or through `..`) or when the weights
    resolve into more than one folder: such a graph is only run as it is, from its path.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    folder = path.parent
    targets: list[tuple[onnx.StringStringEntryProto, Path]] = []
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entry = next((e for e in tensor.external_data if e.key == "location"), None)
        if entry is None:
            return None
        location = PurePath(entry.value)
        if location.is_absolute() or ".." in location.parts:
            return None
        targets.append((entry, (folder / location).resolve()))
    folders = {target.parent for _, target in targets}
    if len(folders) > 1:
        return None
    for entry, target in targets:
        entry.value = target.name
    return Graph(model, folders.pop() if folders else folder)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """The graph's initializers and the values of its Constant nodes."""
    yield from graph.initializer
    for node in graph.node:
        if node.op_type == "Constant":
            yield from (a.t for a in node.attribute if a.HasField("t"))
