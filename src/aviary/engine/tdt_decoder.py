"""The two ways to score TDT decoding steps: NeMo's decoder+joint graph in onnxruntime, or in NumPy.

NeMo exports the prediction network (embedding + LSTM layers + projection) and the joint (encoder
projection, ReLU, output layer) as one `decoder_joint` graph, and onnx-asr runs all of it at every
step. `NumpyDecoder` reads that graph's weights and computes the same function in NumPy, with two
cuts of work: the prediction network runs only for rows that just emitted a token (a blank does
not change its state), and the encoder projection of every frame is one matrix product per batch.

Why our own code here: greedy decoding at batch 1 is a chain of matrix-vector products, bound by
reading the weights (the real-size parakeet's LSTM is 26 MB). Measured on 2 CPU cores, real-size
parakeet-tdt-0.6b-v2, one step at batch 1: onnxruntime's fused graph 1.03 ms, its LSTM alone
0.79 ms (with 2 threads; 1.5 ms with one), where NumPy's BLAS does the LSTM's products in 0.29 ms;
decoding 4 clips (805 tokens): 0.50-0.70 s here against 0.88-1.18 s for the graph. onnxruntime is the
bottleneck there, so the prediction network and joint are ours, checked at load time against the
graph itself (`_Network.read` runs both on random inputs and declines on any difference). Graphs
of another layout (other exporters, quantized decoders) and CUDA sessions use `FusedDecoder`, the
graph as exported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from aviary.engine.graphs import Graph, load_graph
from aviary.engine.onnx import check_float32

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt
    import onnx
    import onnxruntime as ort

    from aviary.engine.onnx import SessionFactory

logger = logging.getLogger(__name__)

ENC_OUTPUT = "/joint/enc/Add_output_0"  # the joint's encoder projection in NeMo's export
PRED_OUTPUT = "/joint/pred/Add_output_0"  # the prediction projection's output
LSTM_DEFAULTS = {"direction": b"forward", "input_forget": 0, "layout": 0}


class StepRun(Protocol):
    """The decoding state of one batch; rows are indices into the batch given to `StepDecoder.start`."""

    def scores(self, rows: npt.NDArray[np.int64], times: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Joint outputs [n, vocabulary + blank + durations] for `rows` at frames `times`."""
        ...

    def emit(self, spoken: npt.NDArray[np.bool_], tokens: npt.NDArray[np.int64]) -> None:
        """The rows of the last `scores` call selected by `spoken` emitted `tokens`: advance their state."""


class StepDecoder(Protocol):
    """Scores decoding steps. Shared by every thread: each batch's state lives in the `StepRun` it starts."""

    def start(self, encoded: npt.NDArray[np.float32], blank: int) -> StepRun:
        """Begin a batch: encoder frames [B, T, D]; every row starts from the blank token."""
        ...


def _state_shapes(session: ort.InferenceSession) -> tuple[list[int], list[int]]:
    shapes = {i.name: i.shape for i in session.get_inputs()}
    return shapes["input_states_1"], shapes["input_states_2"]


class FusedDecoder:
    """NeMo's `decoder_joint` graph as exported, run for every scored row at every step."""

    def __init__(self, session: ort.InferenceSession) -> None:
        """Wrap the fused session."""
        self._session = session
        self._shapes = _state_shapes(session)

    def start(self, encoded: npt.NDArray[np.float32], blank: int) -> StepRun:
        """Begin a batch."""
        return _FusedRun(self._session, self._shapes, encoded, blank)


class _FusedRun:
    def __init__(
        self,
        session: ort.InferenceSession,
        shapes: tuple[list[int], list[int]],
        encoded: npt.NDArray[np.float32],
        blank: int,
    ) -> None:
        batch = encoded.shape[0]
        self._session = session
        self._encoded = encoded
        self._h = np.zeros((shapes[0][0], batch, shapes[0][2]), dtype=np.float32)
        self._c = np.zeros((shapes[1][0], batch, shapes[1][2]), dtype=np.float32)
        self._last = np.full(batch, blank, dtype=np.int64)
        self._rows: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._pending: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None

    def scores(self, rows: npt.NDArray[np.int64], times: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Run the whole graph for `rows`, keeping the would-be states until `emit`."""
        outputs, _, h, c = self._session.run(
            ["outputs", "prednet_lengths", "output_states_1", "output_states_2"],
            {
                "encoder_outputs": self._encoded[rows, times][:, :, None],
                "targets": self._last[rows].astype(np.int32)[:, None],
                "target_length": np.ones(len(rows), dtype=np.int32),
                "input_states_1": self._h[:, rows],
                "input_states_2": self._c[:, rows],
            },
        )
        self._rows, self._pending = rows, (check_float32(h), check_float32(c))
        return check_float32(outputs).reshape(len(rows), -1)

    def emit(self, spoken: npt.NDArray[np.bool_], tokens: npt.NDArray[np.int64]) -> None:
        """Commit the states computed in `scores` for the rows that emitted."""
        if self._pending is None:
            return
        rows = self._rows[spoken]
        self._h[:, rows], self._c[:, rows] = self._pending[0][:, spoken], self._pending[1][:, spoken]
        self._last[rows] = tokens


Linear = tuple["npt.NDArray[np.float32]", "npt.NDArray[np.float32]"]
"""(weight [in, out], bias [out]) of `x @ weight + bias`."""


@dataclass(frozen=True)
class _Network:
    """The weights of NeMo's prediction network and joint, as NumPy computes them."""

    table: npt.NDArray[np.float32]
    """The first LSTM layer's input gates for every token: embedding @ W + biases, one row per token."""
    recurrent: npt.NDArray[np.float32]
    """The first layer's hidden -> gates matrix."""
    layers: tuple[Linear, ...]
    """Per further LSTM layer: ([input; hidden] -> gates i, o, f, c in ONNX's order, summed biases)."""
    pred: Linear
    enc: Linear
    out: Linear

    @property
    def hidden(self) -> int:
        """LSTM state size."""
        return int(self.recurrent.shape[0])

    @property
    def depth(self) -> int:
        """LSTM layers."""
        return len(self.layers) + 1

    @classmethod
    def read(cls, path: Path) -> _Network | None:
        """The weights of the graph at `path` when it is NeMo's layout and NumPy reproduces it, else None."""
        from google.protobuf.message import DecodeError

        try:
            graph = load_graph(path)
            if graph is None:
                return None
            weights = {i.name: graph.array(i) for i in graph.model.graph.initializer}
        except (OSError, DecodeError, ValueError):
            return None
        model = graph.model
        for node in model.graph.node:  # the exporter turns equal weights into Identity nodes of one initializer
            if node.op_type == "Identity" and node.input[0] in weights:
                weights[node.output[0]] = weights[node.input[0]]
        if any(w.dtype != np.float32 for w in weights.values() if w.dtype.kind == "f"):
            return None
        producers = {out: node for node in model.graph.node for out in node.output}
        try:
            embedding = next(
                weights[n.input[0]] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in weights
            )
            (first, first_bias), *layers = (_lstm(n, weights) for n in model.graph.node if n.op_type == "LSTM")
            out_add = producers["outputs"]
            out_matmul = producers[next(i for i in out_add.input if i not in weights)]
            if producers[next(i for i in out_matmul.input if i not in weights)].op_type != "Relu":
                return None
            size = embedding.shape[1]
            network = cls(
                # The first layer's input is one of the vocabulary's embeddings: precompute its products.
                table=embedding @ first[:size] + first_bias,
                recurrent=np.ascontiguousarray(first[size:]),
                layers=tuple(layers),
                pred=_linear(producers[PRED_OUTPUT], producers, weights),
                enc=_linear(producers[ENC_OUTPUT], producers, weights),
                out=_linear(out_add, producers, weights),
            )
        except (KeyError, StopIteration, ValueError):
            return None
        return network if network.reproduces(graph) else None

    def reproduces(self, graph: Graph, batch: int = 3) -> bool:
        """Whether NumPy's outputs equal onnxruntime's for the graph on random inputs (float tolerance)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(graph.weights))
        session = ort.InferenceSession(graph.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        h = rng.standard_normal((self.depth, batch, self.hidden)).astype(np.float32)
        c = rng.standard_normal(h.shape).astype(np.float32)
        frames = rng.standard_normal((batch, self.enc[0].shape[0])).astype(np.float32)
        tokens = rng.integers(0, len(self.table), batch)
        try:
            logits, _, h_out, c_out = session.run(
                ["outputs", "prednet_lengths", "output_states_1", "output_states_2"],
                {
                    "encoder_outputs": frames[:, :, None],
                    "targets": tokens.astype(np.int32)[:, None],
                    "target_length": np.ones(batch, dtype=np.int32),
                    "input_states_1": h,
                    "input_states_2": c,
                },
            )
        except Exception:  # noqa: BLE001 - a graph that does not take NeMo's inputs is simply not NeMo's layout
            return False
        pred, h_ours, c_ours = self.predict(tokens, h, c)
        ours = self.joint(frames @ self.enc[0] + self.enc[1], pred)
        expected = np.asarray(logits).reshape(batch, -1)
        return (
            ours.shape == expected.shape
            and np.allclose(ours, expected, rtol=1e-4, atol=1e-4)
            and np.allclose(h_ours, h_out, rtol=1e-4, atol=1e-5)
            and np.allclose(c_ours, c_out, rtol=1e-4, atol=1e-5)
        )

    def predict(
        self, tokens: npt.NDArray[np.int64], h: npt.NDArray[np.float32], c: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """One prediction-network step: (prediction projection, new h, new c) for `tokens` from states h, c."""
        h_new, c_new = np.empty_like(h), np.empty_like(c)
        gates = h[0] @ self.recurrent
        gates += self.table[tokens]
        x = self._cell(gates, c[0], h_new[0], c_new[0])
        for layer, (weight, bias) in enumerate(self.layers, start=1):
            gates = np.concatenate((x, h[layer]), axis=1) @ weight
            gates += bias
            x = self._cell(gates, c[layer], h_new[layer], c_new[layer])
        pred = x @ self.pred[0]
        pred += self.pred[1]
        return pred, h_new, c_new

    def _cell(
        self,
        gates: npt.NDArray[np.float32],
        c: npt.NDArray[np.float32],
        h_out: npt.NDArray[np.float32],
        c_out: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.float32]:
        """ONNX's LSTM cell from its gates (input, output, forget, cell): writes the new states, returns h."""
        size = self.hidden
        sig = 1.0 / (1.0 + np.exp(-gates[:, : 3 * size]))
        np.multiply(sig[:, 2 * size :], c, out=c_out)
        c_out += sig[:, :size] * np.tanh(gates[:, 3 * size :])
        np.multiply(sig[:, size : 2 * size], np.tanh(c_out), out=h_out)
        return h_out

    def joint(self, projected: npt.NDArray[np.float32], pred: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Joint outputs from projected encoder frames and prediction projections (row by row)."""
        hidden = projected + pred
        np.maximum(hidden, 0.0, out=hidden)
        logits = hidden @ self.out[0]
        logits += self.out[1]
        return check_float32(logits)


def _lstm(node: onnx.NodeProto, weights: dict[str, npt.NDArray[np.float32]]) -> Linear:
    """A one-direction ONNX LSTM with default activations as one matrix over [input; hidden]."""
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    extra = set(attributes) - {"hidden_size", *LSTM_DEFAULTS}
    if extra or any(attributes.get(k, v) != v for k, v in LSTM_DEFAULTS.items()):
        raise ValueError(node.name)
    inputs = [*node.input, *[""] * (8 - len(node.input))]
    if inputs[4] or inputs[7]:  # sequence lengths, peepholes
        raise ValueError(node.name)
    w, r = weights[inputs[1]][0], weights[inputs[2]][0]
    bias = weights[inputs[3]][0] if inputs[3] else np.zeros(2 * w.shape[0], dtype=np.float32)
    combined = np.ascontiguousarray(np.concatenate((w, r), axis=1).T)
    return combined, (bias[: w.shape[0]] + bias[w.shape[0] :]).astype(np.float32)


def _linear(
    add: onnx.NodeProto, producers: dict[str, onnx.NodeProto], weights: dict[str, npt.NDArray[np.float32]]
) -> Linear:
    """(weight, bias) of a `MatMul -> Add` pair ending at `add`; KeyError/StopIteration when it is not one."""
    if add.op_type != "Add":
        raise KeyError(add.name)
    bias = next(i for i in add.input if i in weights)
    matmul = producers[next(i for i in add.input if i not in weights)]
    if matmul.op_type != "MatMul":
        raise KeyError(matmul.name)
    return np.ascontiguousarray(weights[next(i for i in matmul.input if i in weights)]), weights[bias]


class NumpyDecoder:
    """NeMo's `decoder_joint` in NumPy: the LSTM only on emission, the encoder projection once per batch."""

    def __init__(self, network: _Network) -> None:
        """Wrap weights read (and checked) by `_Network.read`."""
        self._net = network

    @classmethod
    def load(cls, path: Path) -> NumpyDecoder | None:
        """The decoder for the graph at `path`, or None when NumPy does not reproduce that graph."""
        network = _Network.read(path)
        return cls(network) if network is not None else None

    def start(self, encoded: npt.NDArray[np.float32], blank: int) -> StepRun:
        """Project every frame once, and run the prediction network on the start (blank) token."""
        return _NumpyRun(self._net, encoded, blank)


class _NumpyRun:
    def __init__(self, network: _Network, encoded: npt.NDArray[np.float32], blank: int) -> None:
        batch = encoded.shape[0]
        self._net = network
        self._projected = encoded @ network.enc[0] + network.enc[1]
        zeros = np.zeros((network.depth, batch, network.hidden), dtype=np.float32)
        self._pred, self._h, self._c = network.predict(np.full(batch, blank, dtype=np.int64), zeros, zeros)
        self._rows: npt.NDArray[np.int64] = np.arange(batch)

    def scores(self, rows: npt.NDArray[np.int64], times: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The joint for `rows` at frames `times`."""
        self._rows = rows
        return self._net.joint(self._projected[rows, times], self._pred[rows])

    def emit(self, spoken: npt.NDArray[np.bool_], tokens: npt.NDArray[np.int64]) -> None:
        """Run the prediction network for the rows that emitted, from their states."""
        rows = self._rows[spoken]
        if rows.size:
            self._pred[rows], self._h[:, rows], self._c[:, rows] = self._net.predict(
                tokens, self._h[:, rows], self._c[:, rows]
            )


def load_step_decoder(path: Path, factory: SessionFactory, *, numpy: bool = True) -> StepDecoder:
    """NumPy's decoder on the CPU when the graph allows it (the default), else the graph in onnxruntime."""
    if numpy and factory.device == "cpu":
        decoder = NumpyDecoder.load(path)
        if decoder is not None:
            return decoder
        logger.info("%s is not NeMo's decoder+joint layout; running it as exported", path.name)
    return FusedDecoder(factory.create(path))
