"""NeMo's own models and `transcribe()` as an engine: the reference implementation.

NeMo made the goldens the ONNX engines are held to, and it runs what has no ONNX export: any
`.nemo` file and hub models such as `nvidia/parakeet-tdt-0.6b-v2`. So this engine adds nothing to
NeMo's inference; it feeds in-memory audio to NeMo's batched greedy `transcribe()` (minimum-duration
padding off, as for the goldens and the ONNX engines) and reshapes the hypotheses into Transcripts of
the ONNX engines' shape. Word times are NeMo's; word confidence is NeMo's `max_prob` measure with
`min` aggregation, turned back into the token's softmax probability (see `_probability`) so it means
what the ONNX engine's does. torch and NeMo (the optional `nemo` extra) are imported only on load.
"""

from __future__ import annotations

import copy
import gc
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aviary.engine.base import ModelInfo
from aviary.engine.timestamps import segments_from_words
from aviary.errors import InferenceError, InvalidModelError, ModelNotFoundError, ModelUnavailableError
from aviary.types import SAMPLE_RATE, Segment, TranscribeOptions, Transcript, Word

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aviary.types import Audio

logger = logging.getLogger(__name__)

CONFIDENCE = {
    "preserve_word_confidence": True,  # implies token and frame confidence
    "exclude_blank": True,
    "aggregation": "min",
    "method_cfg": {"name": "max_prob", "alpha": 1.0},
}
LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2})\|>")
_Prompt = tuple[str, str, bool]  # Canary's source language, target language and pnc


class NemoEngine:
    """A NeMo ASR model: Parakeet (TDT / RNN-T, with word times) or Canary (AED, multitask)."""

    def __init__(
        self,
        name: str,
        model: Any,  # noqa: ANN401 - a NeMo ASRModel
        device: str,
        languages: tuple[str, ...] = (),
        fallback: str | None = None,
    ) -> None:
        """Wrap a restored model already on `device` (`fallback`: why not on CUDA, when it was asked for).

        Sets greedy decoding with timestamps and confidence.
        """
        from nemo.collections.asr.models import EncDecMultiTaskModel, EncDecRNNTModel

        self._name = name
        self._model: Any = model
        self._lock = threading.Lock()  # transcribe() flips model state (dither, eval, decoding) while it runs
        if isinstance(model, EncDecMultiTaskModel):
            from nemo.collections.asr.models.aed_multitask_models import MultiTaskTranscriptionConfig

            self._config = _without_min_padding(MultiTaskTranscriptionConfig)
            if model.cfg.decoding.strategy not in {"greedy", "greedy_batch"}:
                model.change_decoding_strategy(_decoding(model, strategy="greedy_batch"))
            self._info = ModelInfo(
                name, "nemo", "aed", device, _languages(model), translation=True, timestamps=False, fallback=fallback
            )
        elif isinstance(model, EncDecRNNTModel):
            from nemo.collections.asr.parts.mixins.transcription import TranscribeConfig

            self._config = _without_min_padding(TranscribeConfig)
            decoding = _decoding(model, strategy="greedy_batch", compute_timestamps=True, confidence_cfg=CONFIDENCE)
            model.change_decoding_strategy(decoding, verbose=False)
            self._vocabulary = int(model.decoding.blank_id) + 1  # tokens plus blank: what max_prob normalises by
            self._info = ModelInfo(name, "nemo", "tdt", device, languages, fallback=fallback)
        else:
            raise InvalidModelError(name, f"a {type(model).__name__} is neither a TDT/RNN-T nor a Canary model")
        model.eval()

    @property
    def info(self) -> ModelInfo:
        """What this model is and can do."""
        return self._info

    def transcribe(self, audio: Sequence[Audio], options: Sequence[TranscribeOptions]) -> list[Transcript]:
        """Transcribe a batch; Canary runs one NeMo call per distinct (languages, pnc) group."""
        for option in options:
            self._info.check(option)
        import torch

        # NeMo fails on empty audio, where there is nothing to say: only the rest goes to the model.
        rows = [row for row, samples in enumerate(audio) if len(samples)]
        arrays = [np.ascontiguousarray(audio[row], dtype=np.float32) for row in rows]
        run = self._transcribe_aed if self._info.family == "aed" else self._transcribe_tdt
        try:
            with self._lock, torch.inference_mode():
                spoken = iter(run(arrays, [options[row] for row in rows]) if rows else [])
        except Exception as exc:
            raise InferenceError(self._name) from exc
        silent = self._info.timestamps
        return [
            next(spoken)
            if len(samples)
            else Transcript("", 0.0, self._info.written_language(option), timestamps=silent)
            for samples, option in zip(audio, options, strict=True)
        ]

    def release_memory(self) -> None:
        """Collect garbage and hand cached CUDA memory back to the driver.

        NeMo's batched greedy TDT/RNN-T decoding keeps CUDA-graph state sized by the largest batch it has
        seen and reuses it (measured on an H100 with parakeet-tdt-0.6b-v2: +231 MiB after a batch of 32,
        then the same level after every job). It is left in place: dropping it between jobs
        (`reset_cuda_graphs_state`) leaked ~99 MiB per job in the same measurement.
        """
        gc.collect()
        if self._info.device == "cuda":
            import torch

            torch.cuda.empty_cache()
            torch.cuda.ipc_collect()  # type: ignore[no-untyped-call]  # torch leaves it unannotated

    def close(self) -> None:
        """Drop the model and release its memory."""
        with self._lock:
            self._model = None
        self.release_memory()

    def _run(self, audio: list[Audio], **config: Any) -> list[Any]:  # noqa: ANN401 - NeMo's config fields
        if self._model is None:
            msg = "the engine is closed"
            raise RuntimeError(msg)
        settings = self._config(batch_size=len(audio), return_hypotheses=True, num_workers=0, verbose=False, **config)
        hyps = self._model.transcribe(audio, override_config=settings)
        if not isinstance(hyps, list) or len(hyps) != len(audio):
            msg = f"NeMo returned {type(hyps).__name__} for {len(audio)} utterances"
            raise TypeError(msg)
        return hyps

    def _transcribe_tdt(self, audio: list[Audio], options: Sequence[TranscribeOptions]) -> list[Transcript]:
        results: list[Transcript] = []
        for samples, option, hyp in zip(audio, options, self._run(audio, timestamps=True), strict=True):
            stamps = hyp.timestamp if isinstance(hyp.timestamp, dict) else {}
            spans = stamps.get("word", [])
            confidences = [float(c) for c in hyp.word_confidence or ()]
            if len(confidences) != len(spans):  # NeMo split words differently: fall back to the weakest token
                confidences = [min((float(c) for c in hyp.token_confidence or ()), default=1.0)] * len(spans)
            words = [
                Word(
                    word=str(span["word"]),
                    start=round(float(span["start"]), 3),
                    end=round(float(span["end"]), 3),
                    confidence=round(self._probability(confidence), 4),
                )
                for span, confidence in zip(spans, confidences, strict=True)
            ]
            blank = self._vocabulary - 1
            results.append(
                Transcript(
                    text=str(hyp.text),
                    duration=round(len(samples) / SAMPLE_RATE, 3),
                    language=self._info.written_language(option),
                    words=tuple(words),
                    segments=tuple(segments_from_words(words)),
                    tokens=tuple(t for t in _ids(hyp.y_sequence) if t < blank),
                )
            )
        return results

    def _probability(self, confidence: float) -> float:
        """Undo max_prob's normalisation `(p * V - 1) / (V - 1)`, giving the token's softmax probability p."""
        return min(1.0, max(0.0, (confidence * (self._vocabulary - 1) + 1) / self._vocabulary))

    def _transcribe_aed(self, audio: list[Audio], options: Sequence[TranscribeOptions]) -> list[Transcript]:
        groups: dict[_Prompt, list[int]] = {}
        for row, option in enumerate(options):
            source = option.language or "en"
            target = option.target_language or "en" if option.task == "translate" else source
            groups.setdefault((source, target, option.pnc), []).append(row)
        hyps: list[Any] = [None] * len(audio)
        for (source, target, pnc), rows in groups.items():
            # "yes"/"no": canary2's slot validation rejects a bool. `task`: the first Canary's prompt
            # (nvidia/canary-1b) has a slot for it and no default; canary2 infers it from the languages.
            # enable_chunking=False: long audio is split upstream (engine.longform), and NeMo would
            # otherwise warn on every batched call.
            task = "translate" if source != target else "transcribe"
            prompt = {"source_lang": source, "target_lang": target, "task": task, "pnc": "yes" if pnc else "no"}
            batch = self._run([audio[r] for r in rows], prompt=prompt, enable_chunking=False)
            for row, hyp in zip(rows, batch, strict=True):
                hyps[row] = hyp
        results: list[Transcript] = []
        for samples, option, hyp in zip(audio, options, hyps, strict=True):
            ids = _ids(hyp.y_sequence)
            pieces = self._model.tokenizer.ids_to_tokens(ids) if ids else []
            text = str(hyp.text).strip()
            duration = round(len(samples) / SAMPLE_RATE, 3)
            results.append(
                Transcript(
                    text=text,
                    duration=duration,
                    language=self._info.written_language(option),
                    segments=(Segment(text, 0.0, duration),) if text else (),
                    tokens=tuple(i for i, p in zip(ids, pieces, strict=True) if not _is_special(str(p))),
                    timestamps=False,
                )
            )
        return results


def load_nemo_engine(
    source: str | Path,
    name: str,
    *,
    device: Literal["auto", "cpu", "cuda"],
    languages: tuple[str, ...] = (),
    threads: int = 0,
) -> NemoEngine:
    """Load a `.nemo` file, or a hub model such as `nvidia/parakeet-tdt-0.6b-v2`, as a NeMo engine.

    Args:
        source: a `.nemo` file (or NeMo's extracted model directory), or a Hugging Face repository id.
        name: the name the model is known by (in errors and `info`).
        device: "cuda" or "auto" use CUDA when torch has it, and fall back to the CPU (with a warning).
        languages: what a TDT model is documented to speak (Canary's come from its tokenizer).
        threads: torch's CPU threads (0: torch's default, every core). torch has one pool per process,
            so this sets it for every NeMo model the process runs.

    Returns:
        The engine; `info.device` says where it runs.

    Raises:
        ModelNotFoundError: no such file, or no such hub repository.
        ModelUnavailableError: the hub model is not cached and cannot be downloaded now.
        InvalidModelError: NeMo cannot load the file, or it is not a TDT/RNN-T or Canary model.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    path = Path(source)
    hub = isinstance(source, str) and _looks_like_repo(source) and not path.exists()
    if not hub and not path.exists():
        raise ModelNotFoundError(name)
    if hub:
        path = _download(str(source), name)
    model = _restore(path, name)
    placed, fallback = _place(model, device)
    return NemoEngine(name, model, placed, languages, fallback)


def _download(repo: str, name: str) -> Path:
    """The hub model's `.nemo` file (or extracted directory) in the local cache, downloaded if need be."""
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
    from nemo.collections.asr.models import ASRModel

    try:
        return Path(ASRModel.from_pretrained(repo, return_model_file=True))
    except (RepositoryNotFoundError, HFValidationError) as exc:
        raise ModelNotFoundError(name) from exc
    except Exception as exc:
        reason = f"downloading it from the Hugging Face Hub failed ({type(exc).__name__})"
        raise ModelUnavailableError(name, reason, engine="nemo") from exc


def _restore(path: Path, name: str) -> Any:  # noqa: ANN401 - a NeMo ASRModel
    """Restore the model on the CPU; it moves to the GPU afterwards, so a CUDA failure can fall back."""
    from nemo.collections.asr.models import ASRModel
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    connector = SaveRestoreConnector()
    if path.is_dir():  # hub repositories without a single .nemo file are NeMo's extracted layout
        connector.model_extracted_dir = str(path)
    try:
        return ASRModel.restore_from(str(path), map_location="cpu", save_restore_connector=connector)
    except Exception as exc:
        raise InvalidModelError(name, f"NeMo cannot load it as an ASR model ({type(exc).__name__})") from exc


def _place(model: Any, device: Literal["auto", "cpu", "cuda"]) -> tuple[str, str | None]:  # noqa: ANN401
    """Move the model to CUDA when asked for (or `auto` and present).

    Returns where it ended up, and why not on CUDA when CUDA was asked for.
    """
    import torch

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu", None
    if not torch.cuda.is_available():
        reason = "torch sees no CUDA device"
        logger.warning("CUDA requested but unavailable (%s); running on CPU", reason)
        return "cpu", reason
    try:
        model.to("cuda")
    except Exception as exc:  # noqa: BLE001 - any CUDA failure (driver, memory) means "use the CPU"
        reason = f"CUDA failed ({type(exc).__name__})"
        logger.warning("%s; running on CPU", reason)
        model.to("cpu")
        return "cpu", reason
    return "cuda", None


def _decoding(model: Any, **changes: Any) -> Any:  # noqa: ANN401 - NeMo's DictConfig
    """A copy of the model's decoding config with `changes` applied."""
    from omegaconf import open_dict

    config = copy.deepcopy(model.cfg.decoding)
    with open_dict(config):
        for key, value in changes.items():
            config[key] = value
    return config


def _without_min_padding(base: type[Any]) -> type[Any]:
    """`base` (a NeMo transcribe config) with `pad_min_duration` 0: short audio is seen as it is."""

    @dataclass
    class _Config(base):  # type: ignore[misc]  # subclassing Any
        pad_min_duration: float = 0.0

    return _Config


def _languages(model: Any) -> tuple[str, ...]:  # noqa: ANN401 - a NeMo EncDecMultiTaskModel
    """The `<|xx|>` language tokens in a Canary tokenizer, as ISO 639-1 codes."""
    tokenizer = model.tokenizer
    vocab = tokenizer.vocab
    pieces = [*(vocab if isinstance(vocab, list) else vocab.keys()), *getattr(tokenizer, "special_token_to_id", {})]
    return tuple(sorted({m[1] for m in map(LANGUAGE_TOKEN.fullmatch, map(str, pieces)) if m}))


def _looks_like_repo(source: str) -> bool:
    """`owner/name`, as Hugging Face repository ids are; not a path to a `.nemo` file."""
    owner, _, repo = source.partition("/")
    return bool(owner) and bool(repo) and "/" not in repo and not source.endswith(".nemo") and owner not in {".", ".."}


def _is_special(piece: str) -> bool:
    return piece.startswith("<|") and piece.endswith("|>")


def _ids(sequence: Any) -> list[int]:  # noqa: ANN401 - a tensor or a list
    values = sequence.tolist() if hasattr(sequence, "tolist") else sequence
    return [int(v) for v in values]
