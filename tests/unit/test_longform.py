"""Long-form planning and merging: cuts in pauses, overlaps resolved by word times, silence skipped."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pytest

from aviary.engine import longform
from aviary.engine.base import ModelInfo
from aviary.engine.batcher import Batcher
from aviary.engine.vad import FRAME, SileroVad
from aviary.types import SAMPLE_RATE, Segment, TranscribeOptions, Transcript, Word
from tests.support.longaudio import long_recording

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import numpy.typing as npt

    from aviary.types import Audio

OPTIONS = TranscribeOptions()
WORD, GAP = 0.3, 0.05  # seconds: a burst "word", and the silence between two


class AlwaysSpeech:
    """A VAD that hears speech everywhere: no pause, so every cut is a fixed window."""

    class _Scorer:
        def __init__(self) -> None:
            self.pending = 0

        def feed(self, samples: Audio) -> npt.NDArray[np.float32]:
            self.pending += len(samples)
            whole, self.pending = divmod(self.pending, FRAME)
            return np.ones(whole, dtype=np.float32)

        def flush(self) -> npt.NDArray[np.float32]:
            extra, self.pending = int(self.pending > 0), 0
            return np.ones(extra, dtype=np.float32)

    def stream(self) -> AlwaysSpeech._Scorer:
        return AlwaysSpeech._Scorer()


@dataclass
class BurstEngine:
    """Hears every run of one non-zero value as a word `w<value*1000>`, cut ones too (as their audible part)."""

    timestamps: bool = True

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("bursts", "onnx", "tdt", "cpu", timestamps=self.timestamps)

    def transcribe(self, audio: Sequence[Audio], options: Sequence[TranscribeOptions]) -> list[Transcript]:
        del options
        return [self._one(a) for a in audio]

    def _one(self, audio: Audio) -> Transcript:
        edges = np.flatnonzero(np.diff(np.concatenate([[0.0], audio, [0.0]])) != 0)
        words = []
        for start, end in itertools.pairwise(edges):
            if audio[start] != 0:
                words.append(Word(f"w{round(float(audio[start]) * 1000)}", start / SAMPLE_RATE, end / SAMPLE_RATE, 1.0))
        text = " ".join(w.word for w in words)
        seconds = len(audio) / SAMPLE_RATE
        if not self.timestamps:
            return Transcript(text, seconds, timestamps=False)
        segments = (Segment(text, words[0].start, words[-1].end, tuple(words)),) if words else ()
        return Transcript(text, seconds, words=tuple(words), segments=segments)

    def release_memory(self) -> None:
        pass

    def close(self) -> None:
        pass


def bursts(count: int) -> tuple[Audio, list[Word]]:
    """`count` words of WORD seconds, each its own value, GAP apart (far below any pause)."""
    step = int((WORD + GAP) * SAMPLE_RATE)
    audio = np.zeros(count * step, dtype=np.float32)
    truth = []
    for i in range(count):
        start = i * step
        value = np.float32((i + 1) / 1000)
        audio[start : start + int(WORD * SAMPLE_RATE)] = value
        truth.append(Word(f"w{i + 1}", start / SAMPLE_RATE, (start + int(WORD * SAMPLE_RATE)) / SAMPLE_RATE, 1.0))
    return audio, truth


def blocks(audio: Audio, size: int = 123_457) -> list[Audio]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def run(audio: Audio, chunking: longform.Chunking, engine: BurstEngine | None = None) -> Transcript:
    batcher = Batcher(engine or BurstEngine(), max_batch=4)
    try:
        planner = longform.Planner(chunking, AlwaysSpeech())
        parts: list[Transcript] = []
        seam = None
        for span, piece in planner.plan(blocks(audio)):
            heard = batcher.submit(piece, OPTIONS).result(10)
            parts.append(longform.place(heard, span, seam))
            seam = longform.seam(heard, span, seam)
        return longform.join(parts, planner.seconds)
    finally:
        batcher.close()


@pytest.mark.parametrize("max_seconds", [5.0, 7.3, 30.0])
def test_a_word_cut_by_a_fixed_window_appears_exactly_once_at_its_time(max_seconds: float) -> None:
    audio, truth = bursts(400)  # 140 s with no pause at all
    merged = run(audio, longform.Chunking(max_seconds=max_seconds, overlap_seconds=2.0))
    assert [w.word for w in merged.words] == [w.word for w in truth]
    assert merged.text == " ".join(w.word for w in truth)
    for got, want in zip(merged.words, truth, strict=True):
        assert got.start == pytest.approx(want.start, abs=1e-6)
        assert got.end == pytest.approx(want.end, abs=1e-6)
    assert [w.word for s in merged.segments for w in s.words] == [w.word for w in truth]
    assert merged.duration == pytest.approx(len(audio) / SAMPLE_RATE)


@dataclass
class SkewedEngine(BurstEngine):
    """Times each word `skew` seconds late in the second half of its input and early in the first (or
    the other way round, with a negative skew): at an overlap's seam the two windows disagree on
    the words they share, as two real decodings of different context do."""

    skew: float = 0.12

    def _one(self, audio: Audio) -> Transcript:
        heard = super()._one(audio)
        half = len(audio) / SAMPLE_RATE / 2
        words = tuple(
            Word(w.word, w.start + s, w.end + s, w.confidence)
            for w in heard.words
            for s in [self.skew if (w.start + w.end) / 2 >= half else -self.skew]
        )
        segments = (Segment(heard.text, words[0].start, words[-1].end, words),) if words else ()
        return Transcript(heard.text, heard.duration, words=words, segments=segments)


@pytest.mark.parametrize("skew", [0.12, -0.12])
@pytest.mark.parametrize("max_seconds", [7.3, 10.0])
def test_words_timed_differently_by_two_windows_still_appear_exactly_once(max_seconds: float, skew: float) -> None:
    """Late in the window before and early in the one after, a word at the seam has its middle on
    the wrong side for both (it would be lost); early then late, on the right side for both
    (it would be doubled)."""
    audio, truth = bursts(400)
    merged = run(audio, longform.Chunking(max_seconds=max_seconds, overlap_seconds=2.0), SkewedEngine(skew=skew))
    assert [w.word for w in merged.words] == [w.word for w in truth]
    assert merged.text == " ".join(w.word for w in truth)


def test_windows_overlap_and_own_the_timeline_once() -> None:
    audio, _ = bursts(200)
    planner = longform.Planner(longform.Chunking(max_seconds=10.0, overlap_seconds=2.0), AlwaysSpeech())
    spans = [span for span, _ in planner.plan(blocks(audio))]
    assert all(s.end - s.start <= 10 * SAMPLE_RATE for s in spans)
    assert spans[0].keep_start == 0
    assert spans[-1].keep_end == longform.OPEN_END
    for before, after in itertools.pairwise(spans):
        assert before.end - after.start == 2 * SAMPLE_RATE  # the overlap
        assert before.keep_end == after.keep_start == after.start + SAMPLE_RATE  # split in its middle


def test_without_word_times_the_windows_do_not_overlap() -> None:
    audio, truth = bursts(100)
    engine = BurstEngine(timestamps=False)
    merged = run(audio, longform.Chunking(max_seconds=6.0, overlap_seconds=0.0), engine)
    heard = merged.text.split()
    assert not merged.timestamps
    assert len(heard) >= len(truth)  # a cut word is heard on both sides, nothing is lost
    assert {w.word for w in truth} <= set(heard)
    assert len(merged.segments) == -(-len(audio) // (6 * SAMPLE_RATE))


def test_cuts_fall_in_pauses_and_every_utterance_is_transcribed_whole() -> None:
    recording = long_recording(420, seed=5, unbroken=((150.0, 60.0),))
    planner = longform.Planner(longform.Chunking(max_seconds=30.0))
    spans = [span for span, _ in planner.plan(blocks(recording.audio, 160_000))]
    assert planner.samples == len(recording.audio)
    assert all(s.seconds <= 30.0 for s in spans)
    keeps = [(s.keep_start, s.keep_end) for s in spans]
    assert keeps[0][0] == 0
    assert keeps[-1][1] == longform.OPEN_END
    assert all(a[1] == b[0] for a, b in itertools.pairwise(keeps))  # owned once, no gap
    paused = 0
    for span in spans[:-1]:
        cut = span.keep_end / SAMPLE_RATE
        inside = [u for u in recording.utterances if u.start < cut < u.end]
        if not (150.0 <= cut <= 210.0):  # outside the unbroken minute, every cut is in a pause
            assert not inside, (cut, inside)
            paused += 1
    assert paused >= 5
    for utterance in recording.utterances:  # each one inside the audio of the chunk that owns its middle
        middle = (utterance.start + utterance.end) / 2 * SAMPLE_RATE
        owner = next(s for s in spans if s.keep_start <= middle < s.keep_end)
        if not (150.0 <= middle / SAMPLE_RATE <= 210.0):
            assert owner.start <= utterance.start * SAMPLE_RATE
            assert utterance.end * SAMPLE_RATE <= owner.end


def test_silence_is_skipped_fast_and_gives_an_empty_transcript() -> None:
    rng = np.random.default_rng(0)
    silence = (rng.standard_normal(600 * SAMPLE_RATE) * 10 ** (-65 / 20)).astype(np.float32)
    calls: list[int] = []

    def submit(audio: Audio) -> object:
        calls.append(len(audio))
        raise AssertionError

    started = time.perf_counter()
    transcript = longform.transcribe_stream(blocks(silence, 160_000), submit)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    assert (transcript.text, transcript.words, transcript.segments, calls) == ("", (), (), [])
    assert transcript.duration == pytest.approx(600.0)
    assert elapsed < 60  # a generous bound: scoring ten minutes takes about a second


def test_short_audio_goes_to_the_model_whole_whatever_vad_says() -> None:
    tone = np.full(5 * SAMPLE_RATE, 0.2, dtype=np.float32)  # no speech to Silero
    planner = longform.Planner(longform.Chunking(max_seconds=30.0))
    chunks = list(planner.plan(blocks(tone, 7000)))
    assert len(chunks) == 1
    span, audio = chunks[0]
    assert (span.start, span.end, span.keep_start, span.keep_end) == (0, len(tone), 0, longform.OPEN_END)
    np.testing.assert_array_equal(audio, tone)


def test_a_word_timed_past_the_end_of_the_last_chunk_is_kept() -> None:
    transcript = Transcript("a b", 1.0, words=(Word("a", 0.1, 0.4, 1.0), Word("b", 0.9, 1.3, 1.0)))
    transcript = Transcript("a b", 1.0, words=transcript.words, segments=(Segment("a b", 0.1, 1.3, transcript.words),))
    placed = longform.place(transcript, longform.Span(32_000, 48_000, 30_000, longform.OPEN_END))
    assert placed.text == "a b"
    assert [w.word for w in placed.words] == ["a", "b"]
    assert [w.start for w in placed.words] == pytest.approx([2.1, 2.9])


def test_no_time_in_the_joined_transcript_runs_past_the_end_of_the_audio() -> None:
    words = (Word("a", 0.1, 0.4, 1.0), Word("b", 0.9, 1.3, 0.5))
    segments = (Segment("a", 0.1, 0.4, words[:1]), Segment("b", 0.9, 1.3, words[1:]))
    last = longform.place(
        Transcript("a b", 1.0, None, words, segments), longform.Span(32_000, 48_000, 32_000, longform.OPEN_END)
    )
    first = Transcript(
        "x", 2.0, None, (Word("x", 0.5, 0.9, 1.0),), (Segment("x", 0.5, 0.9, (Word("x", 0.5, 0.9, 1.0),)),)
    )
    for parts in ([first, last], [last]):
        joined = longform.join(parts, 3.1)
        assert joined.words[-1] == Word("b", 2.9, 3.1, 0.5)
        assert (joined.segments[-1].start, joined.segments[-1].end) == pytest.approx((2.9, 3.1))
        assert joined.segments[-1].words == (Word("b", 2.9, 3.1, 0.5),)
        assert joined.words[-2].end == pytest.approx(2.4)  # times inside the audio are untouched
    assert longform.join([last], 3.3).words[-1].end == pytest.approx(3.3)


def test_at_a_seam_the_word_before_ends_where_the_next_one_starts() -> None:
    before = (Word("a", 1.0, 1.4, 1.0), Word("b", 1.5, 2.06, 0.9))
    after = (Word("c", 2.0, 2.3, 1.0), Word("d", 2.4, 2.6, 1.0))
    first = Transcript("a b", 2.1, None, before, (Segment("a b", 1.0, 2.06, before),))
    second = Transcript("c d", 3.0, None, after, (Segment("c d", 2.0, 2.6, after),))
    joined = longform.join([first, second], 3.0)
    ended = Word("b", 1.5, 2.0, 0.9)
    assert joined.words == (before[0], ended, *after)
    assert joined.segments == (Segment("a b", 1.0, 2.0, (before[0], ended)), second.segments[0])
    later = tuple(Word(w.word, w.start + 0.1, w.end + 0.1, w.confidence) for w in after)
    apart = longform.join([first, Transcript("c d", 3.0, None, later, (Segment("c d", 2.1, 2.7, later),))], 3.0)
    assert apart.words == (*before, *later)  # nothing to resolve


def test_each_chunk_is_handed_on_as_soon_as_it_is_done_not_once_many_wait() -> None:
    """Streaming events and progress bars follow the transcription, however many chunks may wait at once."""
    recording = long_recording(150, seed=3)
    read = 0

    def stream() -> Iterator[Audio]:
        nonlocal read
        for block in blocks(recording.audio, SAMPLE_RATE):
            read += 1
            yield block

    def done_at_once(piece: Audio) -> Future[Transcript]:
        future: Future[Transcript] = Future()
        future.set_result(Transcript("x", len(piece) / SAMPLE_RATE, timestamps=False))
        return future

    seen: list[int] = []
    longform.transcribe_stream(stream(), done_at_once, ahead=32, on_part=lambda _: seen.append(read))
    assert len(seen) >= 4  # 150 s in chunks of at most 30 s
    assert seen[0] <= 70, seen  # the first chunk's words came out while the rest was still being read
    assert seen == sorted(seen)


@pytest.mark.parametrize("extra", [0, 1])
def test_audio_exactly_one_chunk_long_is_one_chunk(extra: int) -> None:
    audio, _ = bursts(45)  # 15.75 s
    planner = longform.Planner(longform.Chunking(max_seconds=14.0), AlwaysSpeech())
    window = 14 * SAMPLE_RATE
    spans = [span for span, _ in planner.plan(blocks(audio[: window + extra], 4_000))]  # the last block full
    if extra:  # one sample more than a window: cut
        assert len(spans) == 2
    else:  # exactly one window: given whole
        assert spans == [longform.Span(0, window, 0, longform.OPEN_END)]


def test_checkpointed_parts_come_back_equal() -> None:
    audio, _ = bursts(30)
    transcript = BurstEngine().transcribe([audio], [OPTIONS])[0]
    placed = longform.place(transcript, longform.Span(16_000, 16_000 + len(audio), 0, 16_000 + len(audio) // 2))
    assert longform.load(longform.dump(placed)) == placed
    assert 0 < len(placed.words) < 30


def test_the_vad_stream_scores_a_stream_as_one_array() -> None:
    recording = long_recording(60, seed=2)
    vad = SileroVad()
    whole = vad.probabilities(recording.audio)
    stream = vad.stream()
    pieces = [stream.feed(block) for block in blocks(recording.audio, 12_345)]
    pieces.append(stream.flush())
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    assert len(whole) == -(-len(recording.audio) // FRAME)
    frames = np.arange(len(whole)) * FRAME / SAMPLE_RATE
    speech = np.zeros(len(whole), dtype=bool)
    for u in recording.utterances:
        speech |= (frames >= u.start + 0.1) & (frames + FRAME / SAMPLE_RATE <= u.end - 0.1)
    silence = np.ones(len(whole), dtype=bool)
    for u in recording.utterances:
        silence &= (frames + FRAME / SAMPLE_RATE < u.start - 0.1) | (frames > u.end + 0.3)
    assert (whole[speech] >= 0.5).mean() > 0.9
    assert (whole[silence] < 0.35).mean() > 0.97


@pytest.mark.parametrize("dbfs", [-30, -45, -55])
def test_quiet_speech_is_cut_and_trimmed_as_loud_speech_is(dbfs: int) -> None:
    """Silero alone hears quiet speech later or not at all: the planner levels what it scores."""
    recording = long_recording(150, seed=4)
    loud = recording.audio * np.float32(1.0 / np.abs(recording.audio).max())
    chunking = longform.Chunking(max_seconds=30.0)
    spans = [
        [(span.start, span.end) for span, _ in longform.Planner(chunking).plan(blocks(audio, 160_000))]
        for audio in (loud, loud * np.float32(10 ** (dbfs / 20)))
    ]
    assert len(spans[1]) == len(spans[0]) >= 4
    for (start, end), (quiet_start, quiet_end) in zip(*spans, strict=True):
        assert abs(quiet_start - start) <= 3 * FRAME  # within 0.1 s
        assert abs(quiet_end - end) <= 3 * FRAME
