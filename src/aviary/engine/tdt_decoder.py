"""The two ways to score TDT decoding steps: NeMo's fused decoder+joint graph, or the graph split in two.

NeMo exports the prediction network (embedding + LSTM) and the joint (encoder and prediction
projections, ReLU, output layer) as one `decoder_joint` graph, and onnx-asr runs all of it at every
step, blank or not. But the prediction network only changes when a token is emitted, and the
joint's encoder projection is the same matrix for every frame. `SplitDecoder` therefore cuts NeMo's
graph at the prediction projection's output: the prediction network runs in onnxruntime only for
rows that just emitted a token, the encoder projection of all frames is one matrix product per
batch, and each step's joint is two small NumPy operations. Same weights, same function, a fraction
of the work on blank steps (most steps). Graphs that are not NeMo's exact layout (other exporters,
quantized decoders) use `FusedDecoder`, the graph as exported.

Measured on the real-size parakeet-tdt-0.6b-v2 (2 CPU threads, BENCHMARKS.md), the split path was
*slower* at batch 1 (28.8 s vs 21.2 s for 8 clips end to end). Decoding alone, 3 clips: fused 1.0 s,
split 3.4 s, split with the prediction session's thread spinning off 1.1 s: onnxruntime's spinning
intra-op threads fight NumPy's BLAS for the 2 cores at every step, and without that fight the split
only matches the fused graph (per-step overhead, not the LSTM, dominates). So the fused graph is
the default and the split is opt-in (`split=True`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from aviary.engine.onnx import check_float32

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt
    import onnx
    import onnxruntime as ort

    from aviary.engine.onnx import SessionFactory

PRED_OUTPUT = "/joint/pred/Add_output_0"  # the prediction projection's output in NeMo's export


class StepDecoder(Protocol):
    """Scores decoding steps for a batch; rows are indices into the batch given to `start`."""

    def start(self, encoded: npt.NDArray[np.float32], blank: int) -> None:
        """Begin a batch: encoder frames [B, T, D]; every row starts from the blank token."""

    def scores(self, rows: npt.NDArray[np.int64], times: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Joint outputs [n, vocabulary + blank + durations] for `rows` at frames `times`."""
        ...

    def emit(self, spoken: npt.NDArray[np.bool_], tokens: npt.NDArray[np.int64]) -> None:
        """The rows of the last `scores` call selected by `spoken` emitted `tokens`: advance their state."""


class _States:
    """The LSTM states of every row of a batch, and the rows of the last scoring call."""

    def __init__(self, shapes: tuple[list[int], list[int]], batch: int) -> None:
        self.h = np.zeros((shapes[0][0], batch, shapes[0][2]), dtype=np.float32)
        self.c = np.zeros((shapes[1][0], batch, shapes[1][2]), dtype=np.float32)
        self.rows: npt.NDArray[np.int64] = np.arange(batch)


def _state_shapes(session: ort.InferenceSession) -> tuple[list[int], list[int]]:
    shapes = {i.name: i.shape for i in session.get_inputs()}
    return shapes["input_states_1"], shapes["input_states_2"]


def _prediction(
    session: ort.InferenceSession, tokens: npt.NDArray[np.int64], h: npt.NDArray[np.float32], c: npt.NDArray[np.float32]
) -> list[npt.NDArray[np.float32]]:
    """Run a graph that takes (targets, states) and return its float outputs in order."""
    feeds: dict[str, object] = {
        "targets": tokens.astype(np.int32)[:, None],
        "target_length": np.ones(len(tokens), dtype=np.int32),
        "input_states_1": h,
        "input_states_2": c,
    }
    names = {i.name for i in session.get_inputs()}
    outputs = session.run(None, {k: v for k, v in feeds.items() if k in names})
    return [check_float32(o) for o in outputs if isinstance(o, np.ndarray) and o.dtype == np.float32]


class FusedDecoder:
    """NeMo's `decoder_joint` graph as exported, run for every scored row at every step."""

    def __init__(self, session: ort.InferenceSession) -> None:
        """Wrap the fused session."""
        self._session = session
        self._shapes = _state_shapes(session)
        self._encoded = np.zeros((0, 0, 0), dtype=np.float32)
        self._states = _States(self._shapes, 0)
        self._last = np.zeros(0, dtype=np.int64)
        self._pending: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None

    def start(self, encoded: npt.NDArray[np.float32], blank: int) -> None:
        """Begin a batch."""
        self._encoded = encoded
        self._states = _States(self._shapes, encoded.shape[0])
        self._last = np.full(encoded.shape[0], blank, dtype=np.int64)

    def scores(self, rows: npt.NDArray[np.int64], times: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Run the whole graph for `rows`, keeping the would-be states until `emit`."""
        outputs, _, h, c = self._session.run(
            ["outputs", "prednet_lengths", "output_states_1", "output_states_2"],
            {
                "encoder_outputs": self._encoded[rows, times][:, :, None],
                "targets": self._last[rows].astype(np.int32)[:, None],
                "target_length": np.ones(len(rows), dtype=np.int32),
                "input_states_1": self._states.h[:, rows],
                "input_states_2": self._states.c[:, rows],
            },
        )
        self._states.rows, self._pending = rows, (check_float32(h), check_float32(c))
        logits = check_float32(outputs)
        return logits.reshape(len(rows), -1)

    def emit(self, spoken: npt.NDArray[np.bool_], tokens: npt.NDArray[np.int64]) -> None:
        """Commit the states computed in `scores` for the rows that emitted."""
        if self._pending is None:
            return
        rows = self._states.rows[spoken]
        self._states.h[:, rows], self._states.c[:, rows] = self._pending[0][:, spoken], self._pending[1][:, spoken]
        self._last[rows] = tokens


class SplitDecoder:
    """NeMo's `decoder_joint` cut in two: prediction network in onnxruntime, joint in NumPy."""

    def __init__(
        self,
        prediction: ort.InferenceSession,
        enc: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
        out: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    ) -> None:
        """The prediction sub-graph, and the joint's (weight, bias) of the encoder and output layers."""
        self._prediction = prediction
        self._shapes = _state_shapes(prediction)
        self._enc, self._out = enc, out
        self._projected = np.zeros((0, 0, 0), dtype=np.float32)
        self._pred = np.zeros((0, 0), dtype=np.float32)
        self._states = _States(self._shapes, 0)

    @classmethod
    def load(cls, path: Path, factory: SessionFactory) -> SplitDecoder | None:
        """Split the graph at `path`, or None when it is not NeMo's fused decoder+joint layout."""
        import onnx
        from onnx import numpy_helper

        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))  # the extractor needs inner shapes
        weights = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
        for node in model.graph.node:  # the exporter turns equal weights into Identity nodes of one initializer
            if node.op_type == "Identity" and node.input[0] in weights:
                weights[node.output[0]] = weights[node.input[0]]
        producers = {out: node for node in model.graph.node for out in node.output}
        try:
            enc = _linear(producers["/joint/enc/Add_output_0"], producers, weights)
            out_add = producers["outputs"]
            out = _linear(out_add, producers, weights)
            out_matmul = producers[next(i for i in out_add.input if i not in weights)]
            activation = producers[next(i for i in out_matmul.input if i not in weights)]
            if activation.op_type != "Relu" or PRED_OUTPUT not in producers:
                return None
            sub = onnx.utils.Extractor(model).extract_model(
                ["targets", "input_states_1", "input_states_2"], [PRED_OUTPUT, "output_states_1", "output_states_2"]
            )
        except (KeyError, StopIteration, ValueError):
            return None
        return cls(factory.create(sub.SerializeToString(), cpu_only=True), enc, out)

    def start(self, encoded: npt.NDArray[np.float32], blank: int) -> None:
        """Project every frame once, and run the prediction network on the start (blank) token."""
        self._projected = encoded @ self._enc[0] + self._enc[1]
        self._states = _States(self._shapes, encoded.shape[0])
        pred, h, c = _prediction(
            self._prediction, np.full(encoded.shape[0], blank, dtype=np.int64), self._states.h, self._states.c
        )
        self._pred = pred.reshape(encoded.shape[0], -1)
        self._states.h, self._states.c = h, c

    def scores(self, rows: npt.NDArray[np.int64], times: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The joint for `rows` at `times`: ReLU(encoder projection + prediction projection) @ output layer."""
        self._states.rows = rows
        hidden = np.maximum(self._projected[rows, times] + self._pred[rows], 0.0)
        return check_float32(hidden @ self._out[0] + self._out[1])

    def emit(self, spoken: npt.NDArray[np.bool_], tokens: npt.NDArray[np.int64]) -> None:
        """Run the prediction network for the rows that emitted, from their states."""
        rows = self._states.rows[spoken]
        if not rows.size:
            return
        pred, h, c = _prediction(self._prediction, tokens, self._states.h[:, rows], self._states.c[:, rows])
        self._pred[rows] = pred.reshape(len(rows), -1)
        self._states.h[:, rows], self._states.c[:, rows] = h, c


def _linear(
    add: onnx.NodeProto, producers: dict[str, onnx.NodeProto], weights: dict[str, npt.NDArray[np.float32]]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(weight, bias) of a `MatMul -> Add` pair ending at `add`; KeyError/StopIteration when it is not one."""
    if add.op_type != "Add":
        raise KeyError(add.name)
    bias = next(i for i in add.input if i in weights)
    matmul = producers[next(i for i in add.input if i not in weights)]
    if matmul.op_type != "MatMul":
        raise KeyError(matmul.name)
    return weights[next(i for i in matmul.input if i in weights)], weights[bias]


def load_step_decoder(path: Path, factory: SessionFactory, *, split: bool = False) -> StepDecoder:
    """The split decoder when asked for and the graph allows it, else the fused graph (the default)."""
    if split and (decoder := SplitDecoder.load(path, factory)) is not None:
        return decoder
    return FusedDecoder(factory.create(path))
