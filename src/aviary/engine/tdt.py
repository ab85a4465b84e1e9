"""Parakeet-TDT on onnxruntime: NeMo's features, the exported encoder, and batched greedy TDT decoding.

onnx-asr decodes one utterance at a time with batch-1 decoder calls. Here every step runs the
exported decoder+joint once for all utterances that still have frames left, each at its own frame
(with its own prediction-network state), following NeMo's greedy TDT rule: emit the argmax token,
jump ahead by the argmax duration, and after a blank of duration 0, or after `max_tokens_per_step`
tokens on one frame, move on by one frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aviary.engine.base import ModelInfo
from aviary.engine.onnx import OnnxEngine, check_float32, check_int64
from aviary.engine.tdt_decoder import load_step_decoder
from aviary.engine.timestamps import TimedToken, detokenize, segments_from_words, words_from_tokens
from aviary.types import SAMPLE_RATE, Transcript

if TYPE_CHECKING:
    import numpy.typing as npt

    from aviary.engine.onnx import ModelDir, SessionFactory
    from aviary.types import Audio, TranscribeOptions

MEL_HOP_SECONDS = 0.01


@dataclass
class _Emissions:
    """Tokens emitted by a decoding run, as parallel arrays (row, token, frame, duration, confidence)."""

    rows: list[npt.NDArray[np.int64]]
    tokens: list[npt.NDArray[np.int64]]
    frames: list[npt.NDArray[np.int64]]
    durations: list[npt.NDArray[np.int64]]
    confidences: list[npt.NDArray[np.float32]]


class TdtEngine(OnnxEngine):
    """A Parakeet-TDT model in onnx-asr's layout (`encoder-model.onnx`, `decoder_joint-model.onnx`)."""

    def __init__(
        self,
        name: str,
        model_dir: ModelDir,
        factory: SessionFactory,
        languages: tuple[str, ...] = (),
        *,
        numpy_decoder: bool = True,
    ) -> None:
        """Create the sessions; `languages`: what the model speaks (empty: any); `numpy_decoder`: see tdt_decoder."""
        super().__init__(name, model_dir, factory, ModelInfo(name, "onnx", "tdt", factory.device, languages=languages))
        self._encoder = factory.create_encoder(model_dir)
        self._decoder = load_step_decoder(model_dir.files["decoder_joint-model"], factory, numpy=numpy_decoder)
        self._vocab = model_dir.vocab
        self._blank = next((i for i, p in self._vocab.items() if p == "<blk>"), len(self._vocab) - 1)
        self._n_classes = max(self._vocab) + 1  # vocabulary plus blank; durations follow in the joint output
        self._max_symbols = int(model_dir.config.get("max_tokens_per_step", 10))
        self._frame_seconds = MEL_HOP_SECONDS * model_dir.subsampling_factor

    def _transcribe(self, audio: list[Audio], options: list[TranscribeOptions]) -> list[Transcript]:
        encoded, lengths = self._encode(audio)
        emissions = self._decode(encoded, lengths)
        return self._transcripts(
            emissions, [len(a) / SAMPLE_RATE for a in audio], [self.info.written_language(o) for o in options]
        )

    def _encode(self, audio: list[Audio]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        return self._encode_in_parts(audio, self._encode_once)

    def _encode_once(self, audio: list[Audio]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        features, features_lens = self._preprocessor(audio)
        outputs, lengths = self._encoder.run(
            ["outputs", "encoded_lengths"],
            {"audio_signal": features, "length": features_lens},
            self._factory.run_options(),
        )
        # [B, D, T] -> [B, T, D], contiguous so each step gathers whole frames.
        return np.ascontiguousarray(check_float32(outputs).transpose(0, 2, 1)), check_int64(lengths)

    def _decode(self, encoded: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64]) -> _Emissions:
        batch = encoded.shape[0]
        lengths = np.minimum(lengths, encoded.shape[1])
        time = np.zeros(batch, dtype=np.int64)
        emitted = np.zeros(batch, dtype=np.int64)
        run = self._decoder.start(encoded, self._blank)  # this call's own state: engines are shared by threads
        out = _Emissions([], [], [], [], [])
        active = np.flatnonzero(time < lengths)
        while active.size:
            logits = run.scores(active, time[active])
            token = logits[:, : self._n_classes].argmax(axis=-1)
            duration = logits[:, self._n_classes :].argmax(axis=-1).astype(np.int64)
            spoken = token != self._blank
            rows = active[spoken]
            if rows.size:
                run.emit(spoken, token[spoken])
                emitted[rows] += 1
                out.rows.append(rows)
                out.tokens.append(token[spoken].astype(np.int64))
                out.frames.append(time[rows].copy())
                out.durations.append(duration[spoken])
                out.confidences.append(_probability(logits[spoken, : self._n_classes], token[spoken]))
            stuck = (duration == 0) & (~spoken | (emitted[active] >= self._max_symbols))
            step = np.where(stuck, 1, duration)
            time[active] += step
            emitted[active[step > 0]] = 0
            active = active[time[active] < lengths[active]]
        return out

    def _transcripts(
        self, emissions: _Emissions, durations: list[float], languages: list[str | None]
    ) -> list[Transcript]:
        per_row: list[list[TimedToken]] = [[] for _ in durations]
        ids: list[list[int]] = [[] for _ in durations]
        if emissions.rows:
            rows = np.concatenate(emissions.rows)
            order = np.argsort(rows, kind="stable")  # per row, tokens stay in emission order
            tokens = np.concatenate(emissions.tokens)[order]
            starts = np.concatenate(emissions.frames)[order]
            ends = starts + np.concatenate(emissions.durations)[order]
            confidences = np.concatenate(emissions.confidences)[order]
            for row, token, start, end, confidence in zip(
                rows[order].tolist(), tokens.tolist(), starts.tolist(), ends.tolist(), confidences.tolist(), strict=True
            ):
                ids[row].append(token)
                per_row[row].append(TimedToken(self._vocab[token], start, end, confidence))
        results: list[Transcript] = []
        for timed, row_ids, duration, language in zip(per_row, ids, durations, languages, strict=True):
            words = words_from_tokens(timed, self._frame_seconds)
            results.append(
                Transcript(
                    text=detokenize(t.piece for t in timed),
                    duration=round(duration, 3),
                    language=language,
                    words=tuple(words),
                    segments=tuple(segments_from_words(words)),
                    tokens=tuple(row_ids),
                )
            )
        return results


def _probability(logits: npt.NDArray[np.float32], chosen: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Softmax probability of each row's chosen class."""
    top = logits.max(axis=-1)
    total = np.exp(logits - top[:, None]).sum(axis=-1)
    chosen_logits: npt.NDArray[np.float32] = logits[np.arange(len(chosen)), chosen]
    probability: npt.NDArray[np.float32] = (np.exp(chosen_logits - top) / total).astype(np.float32)
    return probability
