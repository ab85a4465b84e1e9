"""Benchmark audio: English speech from espeak-ng, 5 to 30 s per clip, deterministic for a seed."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tools.fixtures import speech

SENTENCES = (
    "The committee will meet again on Thursday to review the budget for next year.",
    "Please remember to bring your laptop and the printed agenda to the workshop.",
    "Rain is expected in the north this afternoon, with clearer skies by the evening.",
    "The new library opens at nine and closes at six on weekdays.",
    "Our team measured the latency of every request and found two slow queries.",
    "She explained how the engine turns recorded speech into text with timestamps.",
    "After the lecture, students asked questions about memory and attention.",
    "The train to the coast leaves from platform four every half hour.",
    "He wrote down the numbers seven, twelve and forty one before the call ended.",
    "A podcast about history described the building of the old stone bridge.",
)
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-029")
VARIANTS = ("", "m3", "f2", "klatt")


def speech_clip(rng: np.random.Generator, seconds: float) -> npt.NDArray[np.float32]:
    """Sentences in one random voice, with short pauses, until about `seconds` of audio."""
    spec = speech.Spec(
        "en", (0,), str(rng.choice(VOICES)), str(rng.choice(VARIANTS)), speed=int(rng.integers(150, 190))
    )
    parts: list[npt.NDArray[np.float32]] = []
    total = 0
    while total < seconds * speech.SAMPLE_RATE:
        audio, rate = speech.espeak_wav(spec, text=str(rng.choice(SENTENCES)))
        parts.extend([speech.resample(audio, rate), np.zeros(int(0.3 * speech.SAMPLE_RATE), dtype=np.float32)])
        total += len(parts[-2]) + len(parts[-1])
    return np.concatenate(parts)[: int(seconds * speech.SAMPLE_RATE)]


def benchmark_clips(count: int, seed: int = 7, low: float = 5.0, high: float = 30.0) -> list[npt.NDArray[np.float32]]:
    """`count` clips with lengths spread evenly over [low, high] seconds (shuffled, seeded)."""
    rng = np.random.default_rng(seed)
    lengths = rng.permutation(np.linspace(low, high, count))
    return [speech_clip(rng, float(s)) for s in lengths]
