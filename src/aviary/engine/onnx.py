"""The onnxruntime engine on the onnx-asr / NeMo-export model layout, with CUDA -> CPU fallback.

A model directory holds `config.json` (`model_type` `nemo-conformer-tdt` or `nemo-conformer-aed`,
`features_size`, `subsampling_factor`, ...), `vocab.txt` (`<piece> <id>` per line) and the ONNX
files (`encoder-model.onnx` plus `decoder_joint-model.onnx` or `decoder-model.onnx`; `*.int8.onnx`
variants; external weights in `*.onnx.data` beside them). NeMo's log-mel front end is onnx-asr's
`nemo128`/`nemo80` preprocessor graph. Decoding is ours (`engine.tdt`, `engine.aed`): onnx-asr
decodes one utterance at a time, and batching the decoder across utterances is where throughput is.
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import onnxruntime as ort

from aviary.errors import InferenceError, InvalidModelError, ModelNotFoundError
from aviary.types import SAMPLE_RATE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy.typing as npt

    from aviary.engine.base import ModelInfo
    from aviary.types import Audio, TranscribeOptions, Transcript

    Encode: TypeAlias = Callable[[list[Audio]], tuple[npt.NDArray[Any], npt.NDArray[Any]]]
    """An encoder run on a batch: outputs [B, T, ...], and [B] or [B, T]."""

logger = logging.getLogger(__name__)

ModelType = Literal["nemo-conformer-tdt", "nemo-conformer-aed"]
MODEL_FILES: dict[ModelType, tuple[str, ...]] = {
    "nemo-conformer-tdt": ("encoder-model", "decoder_joint-model"),
    "nemo-conformer-aed": ("encoder-model", "decoder-model"),
}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MEL_HOP_SAMPLES = 160
"""Samples per mel frame (10 ms): NeMo's front end for every Parakeet and Canary."""
CPU_ENCODER_SECONDS = 60.0
"""The CPU's default `RuntimeOptions.encoder_max_seconds`: activations live in RAM (Parakeet 0.6B's
encoder: 0.2 GB plus 12 MB per second of batched audio, 0.9 GB at 60 s)."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How sessions are created: device and CPU threads."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = 0
    """Threads inside one operator; 0 lets onnxruntime use every core."""
    inter_op_threads: int = 1
    quantization: str | None = None
    """Use `*.<quantization>.onnx` files (e.g. "int8") when present."""
    encoder_max_seconds: float | None = None
    """Most padded audio (items x the longest) per encoder run; a larger batch is encoded in parts and
    decoded as one. None: `CPU_ENCODER_SECONDS` on the CPU, the whole batch at once on CUDA."""
    position_seconds: float | None = 30.0
    """On the CPU, precompute the encoder's relative-position projections for inputs up to this long
    (`engine.positions`; longer inputs still work, their extra rows computed per run). None: off."""
    split_decoder: bool = True
    """On the CPU, run the parts of Canary's decoder that depend only on the utterance once per batch
    rather than at every step (`engine.invariants`). False: the decoder graph as exported."""
    cache_self_attention: bool = True
    """On the CPU, cache Canary's self-attention keys and values rather than re-project every earlier
    token at every step (`engine.kv_cache`)."""


@dataclass(frozen=True)
class ModelDir:
    """A validated model directory: its config, vocabulary and ONNX files."""

    path: Path
    model_type: ModelType
    config: dict[str, Any]
    vocab: dict[int, str]
    files: dict[str, Path]

    @property
    def features_size(self) -> int:
        """Mel features per frame (128 for every current Parakeet and Canary)."""
        return int(self.config.get("features_size", 80))

    @property
    def subsampling_factor(self) -> int:
        """Mel frames per encoder frame."""
        return int(self.config.get("subsampling_factor", 8))


def read_model_dir(path: Path, name: str, quantization: str | None = None) -> ModelDir:
    """Read and check a model directory in the onnx-asr layout.

    Raises:
        ModelNotFoundError: `path` is not a directory.
        InvalidModelError: a file is missing or malformed, or the model type is not one Aviary runs.
    """
    if not path.is_dir():
        raise ModelNotFoundError(name)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        lines = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise InvalidModelError(name, f"{Path(exc.filename).name} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidModelError(name, "config.json or vocab.txt is malformed") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in MODEL_FILES:
        raise InvalidModelError(name, f"model_type {model_type!r} is not one of {', '.join(MODEL_FILES)}")
    vocab: dict[int, str] = {}
    for line in lines:
        piece, _, number = line.rpartition(" ")
        if not piece or not number.isdigit():
            raise InvalidModelError(name, "vocab.txt lines must be '<piece> <id>'")
        vocab[int(number)] = piece
    files: dict[str, Path] = {}
    for stem in MODEL_FILES[model_type]:
        candidates = [path / f"{stem}.{quantization}.onnx"] if quantization else []
        found = next((c for c in [*candidates, path / f"{stem}.onnx"] if c.is_file()), None)
        if found is None:
            raise InvalidModelError(name, f"{stem}.onnx is missing")
        files[stem] = found
    if quantization and not any(f.name.endswith(f".{quantization}.onnx") for f in files.values()):
        logger.warning("%s has no *.%s.onnx files: running its full-precision graphs", name, quantization)
    return ModelDir(path, model_type, config, vocab, files)


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers."""
    return list(ort.get_available_providers())


class SessionFactory:
    """Creates onnxruntime sessions on the requested device, falling back to CPU once, with a log line."""

    def __init__(self, options: RuntimeOptions) -> None:
        """Decide the providers: CUDA first when asked for (or `auto` and available), then CPU."""
        self.options = options
        wants_cuda = options.device == "cuda" or (options.device == "auto" and CUDA in available_providers())
        self.fallback_reason: str | None = None
        if wants_cuda and CUDA not in available_providers():
            self.fallback_reason = "this onnxruntime build has no CUDA execution provider"
            logger.warning("CUDA requested but unavailable (%s); running on CPU", self.fallback_reason)
            wants_cuda = False
        self.device = "cuda" if wants_cuda else "cpu"

    def create_encoder(self, model_dir: ModelDir) -> ort.InferenceSession:
        """The encoder's session; on the CPU with its position projections tabled (`engine.positions`)."""
        path = model_dir.files["encoder-model"]
        seconds = self.options.position_seconds
        graph = None
        if self.device == "cpu" and seconds:
            from aviary.engine.positions import precompute_positions

            frames = math.ceil(seconds * SAMPLE_RATE / (MEL_HOP_SAMPLES * model_dir.subsampling_factor)) + 1
            graph = precompute_positions(path, frames)
        if graph is None:
            return self.create(path)
        return self.create(graph.model.SerializeToString(), weights_dir=graph.weights)

    def _session_options(self, *, cpu: bool, weights_dir: Path | None = None) -> ort.SessionOptions:
        options = ort.SessionOptions()
        if weights_dir is not None:
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(weights_dir))
        options.intra_op_num_threads = self.options.intra_op_threads
        options.inter_op_num_threads = self.options.inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # On the CPU, onnxruntime's memory pattern (one block planned per input shape, kept in the arena)
        # held twice the activations for the Parakeet 0.6B encoder, and more as chunk lengths varied:
        # 3.5 GB above the model after a batch of 16 x 10 s with it, 1.9 GB without, at the same speed.
        options.enable_mem_pattern = not cpu
        options.log_severity_level = 3  # onnxruntime's own warnings are noise for users
        return options

    def create(
        self, model: Path | bytes, *, cpu_only: bool = False, weights_dir: Path | None = None
    ) -> ort.InferenceSession:
        """A session for `model` (a path, or serialized bytes whose external weights are in `weights_dir`)."""
        source = str(model) if isinstance(model, Path) else model
        if self.device == "cuda" and not cpu_only:
            # Grow the arena only as needed, so memory returned after a job is not re-reserved in bulk.
            cuda: tuple[str, dict[str, Any]] = (CUDA, {"arena_extend_strategy": "kSameAsRequested"})
            try:
                options = self._session_options(cpu=False, weights_dir=weights_dir)
                session = ort.InferenceSession(source, options, providers=[cuda, CPU])
            except Exception as exc:  # noqa: BLE001 - any CUDA initialisation failure means "use the CPU"
                self._fall_back(f"CUDA failed to initialise ({type(exc).__name__})")
            else:
                if CUDA in session.get_providers():
                    return session
                self._fall_back("CUDA failed to initialise")
        return ort.InferenceSession(source, self._session_options(cpu=True, weights_dir=weights_dir), providers=[CPU])

    def _fall_back(self, reason: str) -> None:
        if self.fallback_reason is None:
            logger.warning("%s; running on CPU", reason)
        self.fallback_reason = reason
        self.device = "cpu"

    def run_options(self) -> ort.RunOptions | None:
        """Per-run options: on CUDA, shrink the memory arena after the run so the GPU memory goes back."""
        if self.device != "cuda":
            return None
        run = ort.RunOptions()
        run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "gpu:0")
        return run


class Preprocessor:
    """NeMo's log-mel features through onnx-asr's preprocessor graph (exactly NeMo's, batched with lengths)."""

    def __init__(self, features_size: int, factory: SessionFactory) -> None:
        """Load onnx-asr's `nemo<features_size>` graph on the CPU (it is cheap next to the encoder)."""
        from importlib.resources import files

        import onnx_asr.preprocessors

        graph = files(onnx_asr.preprocessors).joinpath("data").joinpath(f"nemo{features_size}.onnx")
        self._session = factory.create(graph.read_bytes(), cpu_only=True)

    def __call__(self, audio: list[Audio]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Pad a batch and compute features [B, F, T] with their lengths."""
        lengths = np.array([len(a) for a in audio], dtype=np.int64)
        batch = np.zeros((len(audio), int(lengths.max())), dtype=np.float32)
        for row, samples in enumerate(audio):
            batch[row, : len(samples)] = samples
        features, features_lens = self._session.run(
            ["features", "features_lens"], {"waveforms": batch, "waveforms_lens": lengths}
        )
        return check_float32(features), check_int64(features_lens)


def check_float32(value: object) -> npt.NDArray[np.float32]:
    """`value` as a float32 array, or an error naming what the session returned instead."""
    if isinstance(value, np.ndarray) and value.dtype == np.float32:
        return value
    msg = f"expected a float32 array from onnxruntime, got {type(value).__name__}"
    raise TypeError(msg)


def check_int64(value: object) -> npt.NDArray[np.int64]:
    """`value` as an int64 array, or an error naming what the session returned instead."""
    if isinstance(value, np.ndarray) and value.dtype == np.int64:
        return value
    msg = f"expected an int64 array from onnxruntime, got {type(value).__name__}"
    raise TypeError(msg)


class OnnxEngine(ABC):
    """The pipeline both ONNX families share: check options, features, encode and decode, wrap failures."""

    def __init__(self, name: str, model_dir: ModelDir, factory: SessionFactory, info: ModelInfo) -> None:
        """Hold the name, session factory, NeMo front end and what the model can do."""
        from aviary.engine.positions import longest_input

        self._name = name
        self._factory = factory
        self._preprocessor = Preprocessor(model_dir.features_size, factory)
        frames = longest_input(model_dir.files["encoder-model"])
        if frames is not None:  # the last frame may be a partial one
            info = replace(
                info, max_seconds=(frames - 1) * MEL_HOP_SAMPLES * model_dir.subsampling_factor / SAMPLE_RATE
            )
        self._info = info

    @property
    def info(self) -> ModelInfo:
        """What this model is and can do, on the device its sessions ended up on.

        A CUDA session that fails to initialise falls back to the CPU while the engine is being built
        (an image with onnxruntime-gpu run without a GPU), after the family has described itself.
        """
        return replace(self._info, device=self._factory.device, fallback=self._factory.fallback_reason)

    @property
    def _encoder_samples(self) -> int | None:
        limit = self._factory.options.encoder_max_seconds
        if limit is None and self._factory.device == "cpu":
            limit = CPU_ENCODER_SECONDS
        return None if limit is None else int(limit * SAMPLE_RATE)

    def transcribe(self, audio: Sequence[Audio], options: Sequence[TranscribeOptions]) -> list[Transcript]:
        """Transcribe a batch: one options entry and one transcript per utterance, in order.

        Raises:
            RequestError: an option the model cannot honour (checked before any work).
            InferenceError: onnxruntime failed (the cause is chained).
        """
        if len(audio) != len(options):
            msg = f"{len(audio)} utterances but {len(options)} options"
            raise ValueError(msg)
        for option in options:
            self._info.check(option)  # what a model can do does not depend on its device
        if not audio:
            return []
        try:
            return self._transcribe(list(audio), list(options))
        except Exception as exc:
            raise InferenceError(self._name) from exc

    @abstractmethod
    def _transcribe(self, audio: list[Audio], options: list[TranscribeOptions]) -> list[Transcript]:
        """The family's encode and decode for a non-empty, checked batch."""

    def encoder_parts(self, samples: Sequence[int]) -> list[list[int]]:
        """The encoder runs for a batch of utterances of `samples` samples: indices, each run's in order.

        One run of the whole batch when it fits under `encoder_max_seconds` padded (or there is no
        bound); otherwise longest first, each run as many as fit at its longest item's length.
        """
        limit = self._encoder_samples
        if not samples or limit is None or len(samples) * max(samples) <= limit:
            return [list(range(len(samples)))]
        parts: list[list[int]] = []
        for index in sorted(range(len(samples)), key=lambda i: -samples[i]):
            if parts and (len(parts[-1]) + 1) * samples[parts[-1][0]] <= limit:
                parts[-1].append(index)
            else:
                parts.append([index])
        return parts

    def _encode_in_parts(self, audio: list[Audio], encode: Encode) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """`encode` the batch in parts of at most `encoder_max_seconds` padded, merged back in order.

        Decoding steps cost about the same for 2 rows as for 16 (each reads the decoder's weights
        once), so a batch is decoded as one while its encoder runs stay within the memory bound:
        longest first, each part as many as fit under the bound at its longest item's length.
        Outputs are `[B, T, ...]` (padded with zeros along T, which decoding masks) and `[B]` or `[B, T]`.
        """
        parts = self.encoder_parts([len(a) for a in audio])
        if len(parts) == 1:
            return encode(audio)
        outputs = [encode([audio[i] for i in part]) for part in parts]
        frames = max(first.shape[1] for first, _ in outputs)
        merged = tuple(
            np.concatenate([_pad_time(output[k], frames) for output in outputs])[np.argsort(np.concatenate(parts))]
            for k in (0, 1)
        )
        return merged[0], merged[1]

    def release_memory(self) -> None:  # noqa: B027 - a deliberate no-op that subclasses may extend
        """Nothing to do: on CUDA every encoder run already shrinks the memory arena."""

    def close(self) -> None:
        """Drop the sessions (the engine is unusable afterwards)."""
        self.__dict__.clear()


def _pad_time(values: npt.NDArray[Any], frames: int) -> npt.NDArray[Any]:
    """`values` ([B] untouched, or [B, T, ...]) zero-padded along T to `frames`."""
    if values.ndim < 2 or values.shape[1] == frames:  # noqa: PLR2004 - axis 1 is time
        return values
    widths = [(0, 0)] * values.ndim
    widths[1] = (0, frames - values.shape[1])
    return np.pad(values, widths)


def load_onnx_engine(path: Path, name: str, options: RuntimeOptions, languages: tuple[str, ...] = ()) -> OnnxEngine:
    """Load the model in `path` (onnx-asr layout) as a TDT or AED engine.

    `languages` names what a TDT model is documented to speak (Canary's come from its vocabulary).

    Raises:
        ModelNotFoundError: `path` is not a directory.
        InvalidModelError: the directory is not a model Aviary runs.
    """
    model_dir = read_model_dir(path, name, options.quantization)
    factory = SessionFactory(options)
    if model_dir.model_type == "nemo-conformer-tdt":
        from aviary.engine.tdt import TdtEngine

        return TdtEngine(name, model_dir, factory, languages)
    from aviary.engine.aed import AedEngine

    return AedEngine(name, model_dir, factory)
