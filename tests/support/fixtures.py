"""The committed fixtures: model directories, goldens, and clips as engines take them."""

from __future__ import annotations

import json
from functools import cache
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from aviary.types import SAMPLE_RATE, Audio, TranscribeOptions
from tools.fixtures import speech

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODELS = FIXTURES / "models"
AUDIO = FIXTURES / "audio"
PARAKEETS = ("parakeet-tdt-tiny", "parakeet-digits")
FRAME_SECONDS = 0.08


@cache
def golden(name: str) -> dict[str, Any]:
    """The golden document of a fixture model."""
    doc: dict[str, Any] = json.loads((FIXTURES / "goldens" / f"{name}.json").read_text(encoding="utf-8"))
    return doc


@cache
def clip(name: str) -> Audio:
    """A fixture clip as NeMo read it for the goldens: channels averaged, resampled to 16 kHz."""
    audio, rate = speech.read_wav(AUDIO / name)
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    if rate != SAMPLE_RATE:
        common = gcd(SAMPLE_RATE, rate)
        mono = resample_poly(mono, SAMPLE_RATE // common, rate // common)
    return np.ascontiguousarray(mono, dtype=np.float32)


def canary_options(case: dict[str, Any]) -> TranscribeOptions:
    """The options of a canary-digits golden case."""
    translate = case["source_lang"] != case["target_lang"]
    return TranscribeOptions(
        language=case["source_lang"],
        task="translate" if translate else "transcribe",
        target_language=case["target_lang"] if translate else None,
        pnc=bool(case["pnc"]),
    )
