"""Canary (AED) on onnxruntime: NeMo's features, the encoder, and batched greedy decoding with a KV cache.

The canary2 prompt (`▁ <|startofcontext|> <|startoftranscript|> <|emo:undefined|> <|src|> <|tgt|>
<|pnc|>|<|nopnc|> <|noitn|> <|notimestamp|> <|nodiarize|>`) is built per utterance, so one batch
may mix languages and tasks. The decoder runs once on the prompts, then one token per step for the
rows still generating; rows that reach end-of-text leave the batch (their cache slices are dropped),
so a long answer never makes the short ones pay. Text is every token but the `<|...|>` specials.
On the CPU the decoder's cross-attention keys and values are computed once per batch
(`engine.invariants`) and its self-attention ones once per token (`engine.kv_cache`), where the
exported graph recomputes both at every step.
Canary gives no word times here (canary-1b-v2 aligns with a separate CTC model that is not part of
the ONNX export): transcripts carry one segment spanning the audio, and no words.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from aviary.engine.base import ModelInfo
from aviary.engine.onnx import OnnxEngine, check_float32, check_int64
from aviary.engine.timestamps import detokenize
from aviary.errors import InvalidModelError
from aviary.types import SAMPLE_RATE, Segment, Transcript

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt
    import onnxruntime as ort

    from aviary.engine.kv_cache import Cache
    from aviary.engine.onnx import ModelDir, SessionFactory
    from aviary.types import Audio, TranscribeOptions

logger = logging.getLogger(__name__)

UTTERANCE_INPUTS = ("encoder_embeddings", "encoder_mask")
"""The decoder's inputs that are the same at every step of an utterance."""
LANGUAGE_TOKEN = re.compile(r"<\|[a-z]{2}\|>")
PROMPT_SPECIALS = (
    "<|startofcontext|>",
    "<|startoftranscript|>",
    "<|emo:undefined|>",
    "<|pnc|>",
    "<|nopnc|>",
    "<|noitn|>",
    "<|notimestamp|>",
    "<|nodiarize|>",
    "<|endoftext|>",
)


class AedEngine(OnnxEngine):
    """A Canary model in onnx-asr's layout (`encoder-model.onnx`, `decoder-model.onnx`)."""

    def __init__(self, name: str, model_dir: ModelDir, factory: SessionFactory) -> None:
        """Create the sessions and read the prompt tokens and languages from the vocabulary."""
        vocab = model_dir.vocab
        # Later ids win, as in onnx-asr: aggregate tokenizers repeat ordinary pieces, never the specials.
        self._ids = {piece: i for i, piece in sorted(vocab.items())}
        missing = [t for t in (*PROMPT_SPECIALS, "\u2581") if t not in self._ids]
        if missing:
            raise InvalidModelError(name, f"vocab.txt lacks the Canary prompt tokens {', '.join(missing)}")
        languages = tuple(sorted(p[2:4] for p in self._ids if LANGUAGE_TOKEN.fullmatch(p)))
        info = ModelInfo(name, "onnx", "aed", factory.device, languages=languages, translation=True, timestamps=False)
        super().__init__(name, model_dir, factory, info)
        self._vocab = vocab
        self._eos = self._ids["<|endoftext|>"]
        self._special = np.array([p.startswith("<|") and p.endswith("|>") for _, p in sorted(vocab.items())])
        self._max_length = int(model_dir.config.get("max_sequence_length", 1024))
        self._encoder = factory.create_encoder(model_dir)
        self._once, self._decoder, self._caches = self._decoder_sessions(model_dir.files["decoder-model"], factory)
        self._step_inputs = {i.name for i in self._decoder.get_inputs()}
        mems = next(i for i in self._decoder.get_inputs() if i.name == "decoder_mems").shape
        self._mems_shape = (int(mems[0]), int(mems[3]))

    @staticmethod
    def _decoder_sessions(
        path: Path, factory: SessionFactory
    ) -> tuple[ort.InferenceSession | None, ort.InferenceSession, list[Cache]]:
        """(the per-batch part or None, the per-step part, its self-attention caches) of the decoder.

        On the CPU, `engine.invariants` splits off the per-utterance part and `engine.kv_cache` adds the
        caches, each where the graph allows it; otherwise the graph as exported.
        """
        if factory.device != "cpu":
            return None, factory.create(path), []
        from aviary.engine.graphs import load_graph
        from aviary.engine.invariants import rows_independent, split_invariant
        from aviary.engine.kv_cache import cache_self_attention

        options = factory.options
        once = None
        split = split_invariant(path, UTTERANCE_INPUTS) if options.split_decoder else None
        if split is not None:
            once = factory.create(split.once.SerializeToString(), weights_dir=split.weights)
            if not rows_independent(once):
                once, split = None, None
        graph = (split.step, split.weights) if split is not None else None
        if graph is None and options.cache_self_attention:
            loaded = load_graph(path)
            graph = (loaded.model, loaded.weights) if loaded is not None else None
        caches = cache_self_attention(graph[0]) if graph is not None and options.cache_self_attention else []
        if graph is None or (once is None and not caches):
            return None, factory.create(path), []
        return once, factory.create(graph[0].SerializeToString(), weights_dir=graph[1]), caches

    def _transcribe(self, audio: list[Audio], options: list[TranscribeOptions]) -> list[Transcript]:
        prompts = np.array([self._prompt(o) for o in options], dtype=np.int64)
        embeddings, mask = self._encode(audio)
        tokens = self._decode(embeddings, mask, prompts)
        results: list[Transcript] = []
        for samples, option, ids in zip(audio, options, tokens, strict=True):
            text_ids = [i for i in ids if not self._special[i]]
            text = detokenize(self._vocab[i] for i in text_ids)
            duration = round(len(samples) / SAMPLE_RATE, 3)
            segments = (Segment(text, 0.0, duration),) if text else ()
            results.append(
                Transcript(
                    text=text,
                    duration=duration,
                    language=self.info.written_language(option),
                    segments=segments,
                    tokens=tuple(text_ids),
                    timestamps=False,
                )
            )
        return results

    def _prompt(self, options: TranscribeOptions) -> list[int]:
        source = options.language or "en"
        target = options.target_language or "en" if options.task == "translate" else source
        return [
            self._ids["\u2581"],
            self._ids["<|startofcontext|>"],
            self._ids["<|startoftranscript|>"],
            self._ids["<|emo:undefined|>"],
            self._ids[f"<|{source}|>"],
            self._ids[f"<|{target}|>"],
            self._ids["<|pnc|>" if options.pnc else "<|nopnc|>"],
            self._ids["<|noitn|>"],
            self._ids["<|notimestamp|>"],
            self._ids["<|nodiarize|>"],
        ]

    def _encode(self, audio: list[Audio]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        return self._encode_in_parts(audio, self._encode_once)

    def _encode_once(self, audio: list[Audio]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        features, features_lens = self._preprocessor(audio)
        embeddings, mask = self._encoder.run(
            ["encoder_embeddings", "encoder_mask"],
            {"audio_signal": features, "length": features_lens},
            self._factory.run_options(),
        )
        return check_float32(embeddings), check_int64(mask)

    def _decode(
        self, embeddings: npt.NDArray[np.float32], mask: npt.NDArray[np.int64], prompts: npt.NDArray[np.int64]
    ) -> list[list[int]]:
        batch = prompts.shape[0]
        fixed = self._utterance_feeds(embeddings, mask)
        tokens: list[list[int]] = [[] for _ in range(batch)]
        rows = np.arange(batch)  # original row of each row still in the batch
        mems = np.zeros((self._mems_shape[0], batch, 0, self._mems_shape[1]), dtype=np.float32)
        caches = {c.input: np.zeros((batch, 0, c.width), dtype=np.float32) for c in self._caches}
        step_ids = prompts
        length = prompts.shape[1]
        while rows.size and length < self._max_length:
            logits, mems, caches = self._step(step_ids, fixed, mems, caches)
            chosen = logits[:, -1].argmax(axis=-1)
            going = chosen != self._eos
            for row, token in zip(rows[going].tolist(), chosen[going].tolist(), strict=True):
                tokens[row].append(token)
            if not going.all():
                rows, mems = rows[going], mems[:, going]
                fixed = {name: values[going] for name, values in fixed.items()}
                caches = {name: values[going] for name, values in caches.items()}
            step_ids = chosen[going][:, None].astype(np.int64)
            length += 1
        return tokens

    def _utterance_feeds(
        self, embeddings: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]
    ) -> dict[str, npt.NDArray[Any]]:
        """The decoder's inputs that stay the same at every step, each with one row per utterance."""
        feeds: dict[str, npt.NDArray[Any]] = {"encoder_embeddings": embeddings, "encoder_mask": mask}
        if self._once is not None:
            cuts = [o.name for o in self._once.get_outputs()]
            outputs = self._once.run(cuts, {i.name: feeds[i.name] for i in self._once.get_inputs()})
            feeds = {name: values for name, values in feeds.items() if name in self._step_inputs}
            feeds.update(zip(cuts, outputs, strict=True))
        return feeds

    def _step(
        self,
        input_ids: npt.NDArray[np.int64],
        fixed: dict[str, npt.NDArray[Any]],
        mems: npt.NDArray[np.float32],
        caches: dict[str, npt.NDArray[np.float32]],
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]:
        """One decoding step: logits, the grown layer inputs, and the grown self-attention caches."""
        logits, states, *grown = self._decoder.run(
            ["logits", "decoder_hidden_states", *(c.output for c in self._caches)],
            {"input_ids": input_ids, "decoder_mems": mems, **fixed, **caches},
        )
        new_caches = {c.input: check_float32(v) for c, v in zip(self._caches, grown, strict=True)}
        return check_float32(logits), check_float32(states), new_caches
