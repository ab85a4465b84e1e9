"""The long synthetic recordings of tests.support.longaudio: deterministic, spans exact, pauses silent, MP3 whole."""

from __future__ import annotations

import io
from itertools import pairwise

import av
import numpy as np
import pytest

from tests.support.fixtures import MODELS
from tests.support.longaudio import SAMPLE_RATE, Recording, encode_mp3, long_recording, wer

ONE_SAMPLE = 1 / SAMPLE_RATE


def samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def spoken(recording: Recording) -> np.ndarray[tuple[int], np.dtype[np.bool_]]:
    """Which samples lie inside an utterance's span."""
    mask = np.zeros(recording.audio.shape[0], dtype=np.bool_)
    for u in recording.utterances:
        mask[samples(u.start) : samples(u.end) + 1] = True
    return mask


def test_a_seed_makes_the_same_recording_and_another_seed_another() -> None:
    first, again, other = long_recording(40.0, seed=3), long_recording(40.0, seed=3), long_recording(40.0, seed=4)
    assert np.array_equal(first.audio, again.audio)
    assert first.utterances == again.utterances
    assert first.text != other.text


def test_spans_are_ordered_inside_the_recording_and_apart_by_a_pause() -> None:
    recording = long_recording(60.0, seed=1)
    assert recording.audio.dtype == np.float32
    assert recording.audio.shape == (60 * SAMPLE_RATE,)
    assert recording.seconds == 60.0
    assert len(recording.utterances) >= 8
    assert recording.text == " ".join(u.text for u in recording.utterances)
    assert recording.utterances[0].start >= 0.4 - ONE_SAMPLE
    assert recording.utterances[-1].end < recording.seconds
    for u in recording.utterances:
        assert 0 < u.start < u.end
        assert samples(u.start) == pytest.approx(u.start * SAMPLE_RATE)  # whole samples
        assert 1 <= len(u.text.split()) <= 10
    for before, after in pairwise(recording.utterances):
        assert 0.4 - ONE_SAMPLE <= after.start - before.end - ONE_SAMPLE <= 3.0 + ONE_SAMPLE


def test_pauses_are_silence_and_utterances_are_speech() -> None:
    recording = long_recording(60.0, seed=2)
    mask = spoken(recording)
    pauses, speech = recording.audio[~mask], recording.audio[mask]
    assert np.sqrt(np.mean(pauses**2)) < 10 ** (-60 / 20)
    assert np.max(np.abs(pauses)) < 0.01
    assert np.sqrt(np.mean(speech**2)) > 0.02


def test_unbroken_windows_have_one_utterance_after_another() -> None:
    windows = ((10.0, 20.0), (50.0, 15.0))
    recording = long_recording(90.0, seed=5, unbroken=windows)
    plain = long_recording(90.0, seed=5)
    assert recording.text.startswith(plain.utterances[0].text)  # the same speech, laid out otherwise
    mask = spoken(recording)
    for start, length in windows:
        assert mask[samples(start) : samples(start + length)].all()
        inside = [u for u in recording.utterances if u.end >= start and u.start <= start + length]
        assert inside[0].start <= start
        assert inside[-1].end >= start + length
        for before, after in pairwise(inside):
            assert samples(after.start) - samples(before.end) == 1
    gaps = [after.start - before.end for before, after in pairwise(recording.utterances)]
    assert sum(gap > 0.4 for gap in gaps) >= 3  # pauses elsewhere


@pytest.mark.parametrize("window", [(-1.0, 5.0), (20.0, 0.0), (25.0, 10.0)])
def test_windows_outside_the_recording_are_refused(window: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="unbroken window"):
        long_recording(30.0, unbroken=(window,))


def test_the_mp3_decodes_to_the_recording() -> None:
    recording = long_recording(30.0, seed=6)
    with av.open(io.BytesIO(encode_mp3(recording)), mode="r") as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.rate, stream.channels) == ("mp3float", SAMPLE_RATE, 1)
        decoded = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(stream)])
    assert abs(decoded.shape[0] / SAMPLE_RATE - recording.seconds) < 0.1
    n = min(decoded.shape[0], recording.audio.shape[0])
    error = decoded[:n] - recording.audio[:n]
    assert np.mean(error**2) < 0.05 * np.mean(recording.audio**2)  # aligned, and better than 13 dB SNR


def test_wer() -> None:
    assert wer("", "") == 0.0
    assert wer("one two", "one two") == 0.0
    assert wer("one two three four", "one two three") == 0.25
    assert wer("one two", "one five two six") == 1.0
    assert wer("one two", "") == 1.0
    assert wer("", "one two") == 2.0
    assert wer(" one  two ", "one two") == 0.0
    assert isinstance(wer("one", "one"), float)


def test_the_digits_model_hears_what_the_spans_say() -> None:
    from aviary.engine.onnx import RuntimeOptions, load_onnx_engine
    from aviary.types import TranscribeOptions

    engine = load_onnx_engine(MODELS / "parakeet-digits", "digits", RuntimeOptions(device="cpu", intra_op_threads=1))
    recording = long_recording(30.0, seed=7)
    context = samples(0.2)
    clips = [recording.audio[samples(u.start) - context : samples(u.end) + context] for u in recording.utterances]
    heard = engine.transcribe(clips, [TranscribeOptions()] * len(clips))
    assert wer(recording.text, " ".join(t.text for t in heard)) < 0.1
    for u, transcript in zip(recording.utterances, heard, strict=True):
        for word in transcript.words:  # word times fall inside the span, give or take three 80 ms frames
            assert word.start >= context / SAMPLE_RATE - 0.24
            assert word.end <= context / SAMPLE_RATE + u.end - u.start + 0.24
