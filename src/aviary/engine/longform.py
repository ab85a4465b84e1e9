"""Audio of any length: cut at pauses into chunks a model can take, transcribe them, merge.

`Planner` reads the decoder's stream, scores it with Silero VAD (`aviary.engine.vad`) and, whenever
`max_seconds` of audio are buffered, cuts a chunk: in the longest pause found in the last two
thirds of the window, or, where nobody paused, at the window's end with `overlap_seconds` of
audio shared with the next chunk. Each chunk carries the span of the timeline whose words it owns
(`Span.keep_*`): a pause cut gives both sides their own audio; an overlap is split in its middle,
and a word belongs to the chunk that holds its midpoint, so a word cut by a window edge appears
once, from the chunk that heard it whole (near the middle, where the two chunks time a word
differently, the later chunk takes the words whose middles come after the earlier one's last:
`place`). Chunks without speech are not transcribed, and the
silence at a chunk's edges is trimmed (keeping `pad_seconds`), so silence costs almost nothing.
Audio no longer than one chunk is never cut, trimmed or skipped: the model hears all of it, as it
would without long-form, so a VAD miss cannot empty a short request.

Memory is the buffer (one window plus one decoded block) and the chunks in flight, never the file.
`place` moves a chunk's transcript onto the recording's clock and drops the words it does not
own; `join` makes one transcript of the placed chunks. `transcribe_stream` runs the whole path
for the sync API and the CLI; jobs (`aviary.jobs.workflows`) run the same pieces, one
checkpointed step per chunk.
"""

from __future__ import annotations

import contextlib
import difflib
from collections import deque
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import numpy as np

from aviary.audio.pyav import MediaInfo
from aviary.engine.vad import FRAME, shared_vad
from aviary.types import SAMPLE_RATE, Segment, Transcript, Word

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
    from concurrent.futures import Future
    from contextlib import AbstractContextManager
    from pathlib import Path

    import numpy.typing as npt

    from aviary.audio import IsolatedDecoder
    from aviary.engine.batcher import Batcher
    from aviary.engine.vad import Vad
    from aviary.types import Audio, TranscribeOptions


OPEN_END: Final = 1 << 62
"""`Span.keep_end` of the last chunk: it owns every word after its start (a model may time the last
word a frame past the audio's end)."""
TAIL_SECONDS: Final = 3.0
"""How much of a chunk's end its `Seam` holds: more than any overlap resolves (half of 2 s by default)."""
PAIR_SECONDS: Final = 0.4
"""How far apart two overlapping chunks may put the middles of one word they both heard (seen: up to 0.2 s)."""


@dataclass(frozen=True)
class Chunking:
    """How long audio is cut (seconds, and Silero's speech threshold)."""

    max_seconds: float = 30.0
    """The longest chunk a model is given."""
    overlap_seconds: float = 2.0
    """Audio shared by two chunks cut where there was no pause (0: a hard cut, for models without word times)."""
    min_pause_seconds: float = 0.1
    """The shortest silence a chunk is cut in."""
    pad_seconds: float = 0.5
    """Silence kept around the speech of a chunk whose edges are trimmed."""
    threshold: float = 0.5
    """Speech probability from which a frame is speech; a pause is below `threshold - 0.15`."""


@dataclass(frozen=True)
class Span:
    """A chunk of the recording, in samples: what is transcribed, and whose words it keeps."""

    start: int
    end: int
    keep_start: int
    keep_end: int

    @property
    def seconds(self) -> float:
        """Length of the transcribed audio."""
        return (self.end - self.start) / SAMPLE_RATE

    def to_list(self) -> list[int]:
        """As JSON-able data (a job's checkpoint)."""
        return [self.start, self.end, self.keep_start, self.keep_end]

    @classmethod
    def from_list(cls, values: Sequence[int]) -> Span:
        """Back from `to_list`."""
        return cls(*(int(v) for v in values))


class Planner:
    """Cuts one stream into chunks; `samples` counts what it has read."""

    def __init__(self, chunking: Chunking | None = None, vad: Vad | None = None) -> None:
        """Use `chunking` (defaults) and `vad` (the process's shared model)."""
        self.chunking = chunking or Chunking()
        self._vad = vad or shared_vad()
        self.samples = 0
        self.speech_seconds = 0.0
        """Seconds of audio VAD heard as speech so far."""

    @property
    def seconds(self) -> float:
        """Length of the audio read so far."""
        return self.samples / SAMPLE_RATE

    def plan(self, blocks: Iterable[Audio]) -> Iterator[tuple[Span, Audio]]:
        """Every chunk with speech, in order, with its samples (a copy: the buffer moves on)."""
        c = self.chunking
        window = max(FRAME * 8, int(c.max_seconds * SAMPLE_RATE))
        overlap = min(int(c.overlap_seconds * SAMPLE_RATE), window // 4)
        stream = self._vad.stream()
        buffer = np.zeros(0, dtype=np.float32)
        start = keep = 0  # buffer[0] is sample `start`; the next chunk owns words from `keep`
        probabilities = np.zeros(0, dtype=np.float32)  # frames from start // FRAME on
        unscored: list[Audio] = []  # VAD runs only once a cut is needed: never on audio of one chunk
        for block in blocks:
            self.samples += len(block)
            buffer = np.concatenate([buffer, block])
            unscored.append(block)
            if len(buffer) > window:
                probabilities = np.concatenate([probabilities, *(stream.feed(b) for b in unscored)])
                unscored = []
            while len(buffer) > window:  # audio exactly one chunk long is one chunk
                cut, next_start = self._cut(probabilities, start, window, overlap)
                next_keep = cut if next_start == cut else next_start + overlap // 2
                chunk = self._chunk(buffer, probabilities, start, Span(start, cut, keep, next_keep))
                if chunk is not None:
                    yield chunk
                drop = next_start - start
                first_frame = start // FRAME
                start, keep = next_start, next_keep
                buffer = buffer[drop:].copy()
                probabilities = probabilities[start // FRAME - first_frame :].copy()
        if start == 0 and len(buffer):  # short audio is one chunk, given whole to the model whatever VAD says
            yield Span(0, self.samples, 0, OPEN_END), buffer
            return
        probabilities = np.concatenate([probabilities, *(stream.feed(b) for b in unscored), stream.flush()])
        if len(buffer):
            chunk = self._chunk(buffer, probabilities, start, Span(start, self.samples, keep, OPEN_END))
            if chunk is not None:
                yield chunk

    def _cut(self, probabilities: npt.NDArray[np.float32], start: int, window: int, overlap: int) -> tuple[int, int]:
        """Where the chunk starting at `start` ends, and where the next one starts."""
        c = self.chunking
        base = start // FRAME
        low = -(-(start + window // 3) // FRAME)
        high = (start + window) // FRAME
        quiet = probabilities[low - base : high - base] < c.threshold - 0.15
        best = _longest_run(quiet)
        if best is not None and (best[1] - best[0]) * FRAME >= c.min_pause_seconds * SAMPLE_RATE:
            first, last = best[0] + low, best[1] + low
            cut = last * FRAME if last == high else (first + last) // 2 * FRAME
            return cut, cut
        return start + window, start + window - overlap

    def _chunk(
        self, buffer: Audio, probabilities: npt.NDArray[np.float32], start: int, span: Span
    ) -> tuple[Span, Audio] | None:
        """The span trimmed to its speech (None when it has none), with its samples."""
        base = start // FRAME
        first, last = span.start // FRAME - base, -(-span.end // FRAME) - base
        speech = np.flatnonzero(probabilities[first:last] >= self.chunking.threshold)
        if not len(speech):
            return None
        self.speech_seconds += len(speech) * FRAME / SAMPLE_RATE
        pad = int(self.chunking.pad_seconds * SAMPLE_RATE)
        begin = max(span.start, (base + first + int(speech[0])) * FRAME - pad)
        end = min(span.end, (base + first + int(speech[-1]) + 1) * FRAME + pad)
        trimmed = Span(begin, end, span.keep_start, span.keep_end)
        return trimmed, buffer[begin - start : end - start].copy()


def _longest_run(mask: npt.NDArray[np.bool_]) -> tuple[int, int] | None:
    """[first, last) of the longest run of True (the latest of equals), or None."""
    if not mask.any():
        return None
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    best = len(lengths) - 1 - int(np.argmax(lengths[::-1]))
    return int(starts[best]), int(ends[best])


@dataclass(frozen=True)
class Seam:
    """A chunk's last words, and whether each is in the transcript already.

    The words of its last `TAIL_SECONDS`, on the recording's clock, each kept by it or by a chunk
    before it, or not: what the next chunk, where it overlaps this one, aligns its first words with
    (`place`).
    """

    words: tuple[Word, ...] = ()
    placed: tuple[bool, ...] = ()

    def to_list(self) -> list[list[Any]]:
        """As JSON-able data (a job's checkpoint)."""
        return [[w.word, w.start, w.end, w.confidence, kept] for w, kept in zip(self.words, self.placed, strict=True)]

    @classmethod
    def from_list(cls, values: Sequence[Sequence[Any]]) -> Seam:
        """Back from `to_list`."""
        words = tuple(Word(str(v[0]), float(v[1]), float(v[2]), float(v[3])) for v in values)
        return cls(words, tuple(bool(v[4]) for v in values))


def place(transcript: Transcript, span: Span, before: Seam | None = None) -> Transcript:
    """The chunk's transcript on the recording's clock, with only the words `span` keeps.

    A word is kept when its middle lies in [keep_start, keep_end). Where this chunk overlaps the
    window before it (a cut with no pause), the two models time a word at the seam differently
    (by 0.05-0.2 s), so one boundary for both could drop a word both put on the other's side, or
    keep one both put on their own. There, given the chunk before's `Seam`, the words both heard
    are paired (in order, by text, middles within `PAIR_SECONDS`), and this chunk keeps a paired
    word exactly when the chunk before did not. A model without word times keeps its whole text (its
    chunks are never overlapped).
    """
    offset = span.start / SAMPLE_RATE
    low, high = span.keep_start / SAMPLE_RATE, span.keep_end / SAMPLE_RATE

    def shift(word: Word) -> Word:
        return Word(word.word, word.start + offset, word.end + offset, word.confidence)

    if not transcript.timestamps or not transcript.segments:
        text = transcript.text.strip()
        whole = (Segment(text, offset, offset + span.seconds),) if text else ()
        return Transcript(text, span.seconds, transcript.language, (), whole, transcript.tokens, timestamps=False)
    heard = [shift(w) for w in transcript.words]
    owned = {_key(w) for w, own in zip(heard, _owned(heard, span, before), strict=True) if own}

    def kept(word: Word) -> bool:
        return _key(word) in owned

    segments: list[Segment] = []
    trimmed = False
    for segment in transcript.segments:
        words = tuple(shift(w) for w in segment.words)
        keep = tuple(w for w in words if kept(w))
        if not words:
            if low <= offset + (segment.start + segment.end) / 2 < high:
                segments.append(Segment(segment.text, segment.start + offset, segment.end + offset))
            else:
                trimmed = True
        elif len(keep) == len(words):
            segments.append(Segment(segment.text, segment.start + offset, segment.end + offset, words))
        else:
            trimmed = True
            if keep:
                segments.append(Segment(" ".join(w.word for w in keep), keep[0].start, keep[-1].end, keep))
    words = tuple(w for w in heard if kept(w))
    text = " ".join(s.text.strip() for s in segments if s.text.strip()) if trimmed else transcript.text.strip()
    tokens = () if trimmed else transcript.tokens
    return Transcript(text, span.seconds, transcript.language, words, tuple(segments), tokens, timestamps=True)


def seam(transcript: Transcript, span: Span, before: Seam | None = None) -> Seam:
    """The `Seam` the chunk after this one aligns with (`transcript` as the model gave it, unplaced)."""
    offset = span.start / SAMPLE_RATE
    heard = [Word(w.word, w.start + offset, w.end + offset, w.confidence) for w in transcript.words]
    owned = _owned(heard, span, before)
    low, high = span.keep_start / SAMPLE_RATE, span.keep_end / SAMPLE_RATE
    tail = [(w, own or _middle(w) < low) for w, own in zip(heard, owned, strict=True)]
    tail = [(w, placed) for w, placed in tail if _middle(w) >= min(high, offset + span.seconds) - TAIL_SECONDS]
    return Seam(tuple(w for w, _ in tail), tuple(p for _, p in tail))


def _owned(heard: Sequence[Word], span: Span, before: Seam | None) -> list[bool]:
    """Whether the chunk keeps each word it heard (on the recording's clock): see `place`."""
    low, high = span.keep_start / SAMPLE_RATE, span.keep_end / SAMPLE_RATE
    owned = [low <= _middle(w) < high for w in heard]
    if before is None or not before.words or span.keep_start <= span.start:  # a pause cut: nothing shared
        return owned
    reach = before.words[-1].end
    shared = next((i for i, w in enumerate(heard) if w.start >= reach), len(heard))  # heard by both
    texts = [w.word for w in before.words], [w.word for w in heard[:shared]]
    matcher = difflib.SequenceMatcher(None, *texts, autojunk=False)
    for tag, a1, a2, b1, b2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and a2 - a1 == b2 - b1):  # one word each, heard alike or not
            for i, j in zip(range(a1, a2), range(b1, b2), strict=True):
                if abs(_middle(before.words[i]) - _middle(heard[j])) <= PAIR_SECONDS:
                    owned[j] = not before.placed[i] and _middle(heard[j]) < high
    return owned


def _middle(word: Word) -> float:
    return (word.start + word.end) / 2


def _key(word: Word) -> tuple[str, float, float]:
    return word.word, word.start, word.end


def join(parts: Sequence[Transcript], seconds: float, language: str | None = None) -> Transcript:
    """One transcript of placed chunks, in order, over `seconds` of audio.

    Its language is the first a chunk names, else `language` (what the model writes: silence has no chunk).

    No time runs past the end of the audio: a token's duration can reach beyond the last frame
    (a word cut off by the end of the recording), and a subtitle should not outlast its media.
    """

    def within(word: Word) -> Word:
        if word.end <= seconds:
            return word
        return Word(word.word, min(word.start, seconds), seconds, word.confidence)

    def segment_within(segment: Segment) -> Segment:
        if segment.end <= seconds:
            return segment
        words = tuple(within(w) for w in segment.words)
        return Segment(segment.text, min(segment.start, seconds), seconds, words)

    if len(parts) == 1:
        only = parts[0]
        words, segments = only.words, only.segments
    else:
        words, segments = _in_order(parts)
    return Transcript(
        text=" ".join(p.text for p in parts if p.text),
        duration=seconds,
        language=next((p.language for p in parts if p.language), language),
        words=tuple(within(w) for w in words),
        segments=tuple(segment_within(s) for s in segments),
        tokens=parts[0].tokens if len(parts) == 1 else (),
        timestamps=all(p.timestamps for p in parts),
    )


def _in_order(parts: Sequence[Transcript]) -> tuple[tuple[Word, ...], tuple[Segment, ...]]:
    """The parts' words and segments, each ending no later than the next one starts.

    Two chunks that overlap each keep the words whose middles fall on their side, and the word
    before the seam can still end after the one behind it starts (each chunk's model heard only
    its own side of it): that word, and its segment, end where the next begins.
    """
    words: list[Word] = []
    segments: list[Segment] = []
    for part in parts:
        if words and part.words and words[-1].end > part.words[0].start:
            last, first = words[-1], part.words[0]
            words[-1] = Word(last.word, min(last.start, first.start), first.start, last.confidence)
            if segments and segments[-1].words and segments[-1].words[-1] == last:
                segment = segments[-1]
                segments[-1] = Segment(segment.text, segment.start, words[-1].end, (*segment.words[:-1], words[-1]))
        if segments and part.segments and segments[-1].end > part.segments[0].start:
            segment = segments[-1]
            end = max(segment.start, part.segments[0].start)
            segments[-1] = Segment(segment.text, segment.start, end, segment.words)
        words.extend(part.words)
        segments.extend(part.segments)
    return tuple(words), tuple(segments)


def transcribe_stream(
    blocks: Iterable[Audio],
    submit: Callable[[Audio], Future[Transcript]],
    *,
    chunking: Chunking | None = None,
    ahead: int = 4,
    on_part: Callable[[Transcript], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    preparing: Callable[[], AbstractContextManager[object]] | None = None,
    language: str | None = None,
) -> Transcript:
    """Plan `blocks`, hand each chunk to `submit` (up to `ahead` waiting at once), and join the results.

    `language` is the transcript's when no chunk names one (see `join`).

    `preparing` is held while the next chunk is planned (the batcher's hint that one is coming).

    `on_part` sees each placed chunk as soon as it and those before it are done (streaming), and
    `on_progress` the seconds of audio transcribed so far (then, at the end, the audio's length). On
    any error, its own included, the chunks still waiting are cancelled and the error is raised.
    """
    planner = Planner(chunking)
    waiting: deque[tuple[Span, Future[Transcript]]] = deque()
    joiner = _Joiner(on_part, on_progress)
    chunks = planner.plan(blocks)
    try:
        while True:
            with preparing() if preparing is not None else contextlib.nullcontext():
                chunk = next(chunks, None)
                if chunk is not None:
                    waiting.append((chunk[0], submit(chunk[1])))
            if chunk is None:
                break
            while waiting and (len(waiting) >= max(1, ahead) or waiting[0][1].done()):  # in order, as soon as done
                joiner.add(*waiting.popleft())
        while waiting:
            joiner.add(*waiting.popleft())
    finally:
        for _, future in waiting:
            future.cancel()
    if on_progress is not None:
        on_progress(planner.seconds)
    return join(joiner.parts, planner.seconds, language)


class _Joiner:
    """Places each chunk's transcript, in order, against the seam of the one before."""

    def __init__(
        self, on_part: Callable[[Transcript], None] | None, on_progress: Callable[[float], None] | None
    ) -> None:
        self.parts: list[Transcript] = []
        self._seam: Seam | None = None
        self._on_part, self._on_progress = on_part, on_progress

    def add(self, span: Span, future: Future[Transcript]) -> None:
        heard = future.result()
        part = place(heard, span, self._seam)
        self._seam = seam(heard, span, self._seam)
        self.parts.append(part)
        if self._on_part is not None:
            self._on_part(part)
        if self._on_progress is not None:
            self._on_progress(min(span.keep_end, span.end) / SAMPLE_RATE)


def dump(transcript: Transcript) -> dict[str, Any]:
    """A placed transcript as JSON-able data (a job's checkpoint)."""

    def word(w: Word) -> list[Any]:
        return [w.word, w.start, w.end, w.confidence]

    return {
        "text": transcript.text,
        "seconds": transcript.duration,
        "language": transcript.language,
        "timestamps": transcript.timestamps,
        "words": [word(w) for w in transcript.words],
        "segments": [[s.text, s.start, s.end, [word(w) for w in s.words]] for s in transcript.segments],
        "tokens": list(transcript.tokens),
    }


def load(data: dict[str, Any]) -> Transcript:
    """Back from `dump`."""

    def word(values: list[Any]) -> Word:
        return Word(str(values[0]), float(values[1]), float(values[2]), float(values[3]))

    return Transcript(
        text=str(data["text"]),
        duration=float(data["seconds"]),
        language=data["language"],
        words=tuple(word(w) for w in data["words"]),
        segments=tuple(
            Segment(str(s[0]), float(s[1]), float(s[2]), tuple(word(w) for w in s[3])) for s in data["segments"]
        ),
        tokens=tuple(int(t) for t in data.get("tokens", ())),
        timestamps=bool(data["timestamps"]),
    )


def transcribe_source(
    decoder: IsolatedDecoder,
    batcher: Batcher,
    source: Path | BinaryIO,
    options: TranscribeOptions,
    chunking: Chunking,
    *,
    owner: Hashable = None,
    on_part: Callable[[Transcript], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    on_info: Callable[[MediaInfo], None] | None = None,
    stop: threading.Event | None = None,
) -> Transcript:
    """Decode `source` as a stream and transcribe it chunk by chunk through `batcher` (blocking).

    `source` is a file, or a binary stream (read whole, up to the decoder's byte cap, first).

    Up to twice `batcher.max_batch` chunks wait at once, so one long file fills a batch by itself
    and the next batch is queued while one runs (planning a chunk takes a while: decoding and VAD);
    `on_part` sees each chunk's placed transcript in order, as it is ready, `on_progress` the seconds
    transcribed so far, `on_info` what the container says (its declared length, say) before any
    audio. Once `stop` is set (with `batcher.cancel(owner)` for the chunks already waiting), no
    further chunk is sent.

    Raises:
        AudioError: the decoder refused the input (see `IsolatedDecoder.stream`).
        InferenceError: the model failed on a chunk.
        CancelledError: `stop` was set, or the owner's chunks were cancelled.
    """
    key = owner if owner is not None else object()

    def submit(audio: Audio) -> Future[Transcript]:
        if stop is not None and stop.is_set():
            raise CancelledError
        return batcher.submit(audio, options, owner=key)

    def blocks() -> Iterator[Audio]:
        for item in decoder.stream_with_info(source):
            if not isinstance(item, MediaInfo):
                yield item
            elif on_info is not None:
                on_info(item)

    return transcribe_stream(
        blocks(),
        submit,
        chunking=chunking,
        ahead=2 * batcher.max_batch,
        on_part=on_part,
        on_progress=on_progress,
        preparing=batcher.preparing,
        language=batcher.engine.info.written_language(options),
    )
