"""Long synthetic recordings for long-audio tests: espeak-ng digit strings with known text and time spans.

A recording is a pure function of its arguments. Utterances come from the training voice pool of
`tools.fixtures.speech` (the parakeet-digits fixture model transcribes it at about 0.2 % WER), are
trimmed to their first and last audible sample, scaled by a random gain, and laid out with random
pauses over a white-noise floor at -65 dBFS, so that the pauses are true silence to a VAD.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jiwer
import numpy as np
import numpy.typing as npt

from tests.support.media import Encoding, encode
from tools.fixtures import speech

if TYPE_CHECKING:
    from collections.abc import Iterator

SAMPLE_RATE = speech.SAMPLE_RATE
PAUSE_SECONDS = (0.4, 3.0)  # pause between utterances outside the unbroken windows
GAIN_DB = (-10.0, -1.0)  # per-utterance gain; espeak-ng already peaks near full scale at high amplitudes
NOISE_DB = -65.0  # RMS of the white noise laid over the whole recording, dBFS
TRIM_LEVEL = 1e-4  # samples below this at an utterance's ends are espeak-ng's own lead-in and tail
# 64 kbit/s (libmp3lame's default at 16 kHz is 24, audibly lossy); LAME's fastest search (it dominates the encode time)
MP3 = Encoding(
    "mp3-16k-mono",
    "mp3",
    "libmp3lame",
    rate=SAMPLE_RATE,
    channels=1,
    options=(("b", "64k"), ("compression_level", "9")),
)
_BATCH = 32  # utterances synthesised at a time
_WORKERS = 4  # espeak-ng processes at a time


@dataclass(frozen=True)
class Utterance:
    """One digit string in a recording."""

    text: str  # the digit words joined by spaces
    start: float  # seconds: the utterance's first sample
    end: float  # seconds: the utterance's last sample (inclusive)


@dataclass(frozen=True, eq=False)  # eq=False: an array has no truth value, so compare recordings field by field
class Recording:
    """A long mono recording at 16 kHz and what is said in it, where."""

    audio: npt.NDArray[np.float32]
    utterances: tuple[Utterance, ...]

    @property
    def text(self) -> str:
        """Every utterance's text, in order, joined by spaces."""
        return " ".join(u.text for u in self.utterances)

    @property
    def seconds(self) -> float:
        """The recording's length."""
        return len(self.audio) / SAMPLE_RATE


def long_recording(seconds: float, *, seed: int = 0, unbroken: tuple[tuple[float, float], ...] = ()) -> Recording:
    """Digit utterances separated by random pauses of 0.4..3 s, filling `seconds`.

    Utterances are espeak-ng digit strings (1 to 10 words, random training-pool voices, speeds,
    pitches and word gaps) at a random gain of -10..-1 dB; the whole recording carries white noise
    at -65 dBFS and nothing else, so a pause is silence. The recording starts with a pause (unless
    a window starts at 0) and ends with silence where the next utterance would not fit.

    Inside each `(start, length)` window of `unbroken` (seconds, e.g. `((600.0, 60.0),)`) the
    utterances follow each other with no pause at all, and speech covers the whole window: an
    utterance is under way at `start` or starts exactly there (the pause before it is shortened),
    each next one starts on the sample after the previous one's last, until one ends at or past
    `start + length`. No pause longer than espeak-ng's own gaps between words (a few hundred
    milliseconds at most) occurs there. A window ending within an utterance (at most about 6 s) of
    the recording's end may end in silence, the next utterance not fitting.

    The utterances' voices and texts depend on `seed` alone, so recordings with the same seed but
    other `seconds` or `unbroken` say the same things, in the same order, as far as each reaches.

    Raises:
        ValueError: `seconds` is not positive, or a window is empty or not inside the recording.
    """
    if seconds <= 0:
        msg = f"a recording needs a positive length, not {seconds}"
        raise ValueError(msg)
    for start, length in unbroken:
        if length <= 0 or start < 0 or start + length > seconds:
            msg = f"unbroken window ({start}, {length}) is not inside a {seconds} s recording"
            raise ValueError(msg)
    total = round(seconds * SAMPLE_RATE)
    windows = sorted((round(start * SAMPLE_RATE), round((start + length) * SAMPLE_RATE)) for start, length in unbroken)
    placing = np.random.default_rng([seed, 1])
    noise = np.random.default_rng([seed, 2]).standard_normal(total, dtype=np.float32)
    audio = noise * np.float32(10 ** (NOISE_DB / 20))
    utterances: list[Utterance] = []
    cursor = 0  # the sample after the last utterance placed so far
    for spec, clip in _spoken(seed):
        pause = round(placing.uniform(*PAUSE_SECONDS) * SAMPLE_RATE)
        gain = np.float32(10 ** (placing.uniform(*GAIN_DB) / 20))
        begin = cursor + _pause(cursor, pause, windows)
        if begin + clip.shape[0] > total:
            break
        audio[begin : begin + clip.shape[0]] += clip * gain
        utterances.append(Utterance(spec.text, begin / SAMPLE_RATE, (begin + clip.shape[0] - 1) / SAMPLE_RATE))
        cursor = begin + clip.shape[0]
    np.clip(audio, -1.0, 1.0, out=audio)
    return Recording(audio, tuple(utterances))


def encode_mp3(recording: Recording) -> bytes:
    """`recording` as an MP3 file (libmp3lame, 16 kHz mono)."""
    return encode(recording.audio, SAMPLE_RATE, MP3)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (jiwer): 0.0 for two empty strings.

    With an empty reference, every hypothesis word is an error over a denominator of one word.
    """
    return float(jiwer.wer(reference, hypothesis))


def _pause(cursor: int, pause: int, windows: list[tuple[int, int]]) -> int:
    """Samples of silence before the next utterance: none inside a window, and up to the next window's start."""
    for start, end in windows:
        if start <= cursor < end:
            return 0
        if cursor < start:
            return min(pause, start - cursor)
    return pause


def _spoken(seed: int) -> Iterator[tuple[speech.Spec, npt.NDArray[np.float32]]]:
    """The endless stream of utterances for `seed`, synthesised a batch at a time in a few threads."""
    rng = np.random.default_rng([seed, 0])
    with ThreadPoolExecutor(_WORKERS) as pool:
        while True:
            specs = [speech.random_spec(rng, "en", heldout=False) for _ in range(_BATCH)]
            yield from zip(specs, pool.map(_speech, specs), strict=True)


@functools.lru_cache(maxsize=512)  # about 70 MB: one 30-minute recording's utterances
def _speech(spec: speech.Spec) -> npt.NDArray[np.float32]:
    """`spec` spoken at 16 kHz, without espeak-ng's silent lead-in and tail (read-only: it is shared)."""
    audio = speech.synthesize(spec)
    audible = np.flatnonzero(np.abs(audio) >= TRIM_LEVEL)
    clip = audio[audible[0] : audible[-1] + 1].copy() if audible.size else audio[:1].copy()
    clip.flags.writeable = False
    return clip
