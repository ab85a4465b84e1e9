"""The shipped FakeEngine honours the Engine protocol the way real engines do."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from aviary.errors import InferenceError, UnsupportedTaskError
from aviary.testing import FakeEngine
from aviary.types import TranscribeOptions

if TYPE_CHECKING:
    from aviary.engine.base import Engine


def test_fake_engine_is_an_engine_with_words_over_the_audio() -> None:
    engine: Engine = FakeEngine(text=lambda _audio: "one two three four")
    second = np.zeros(16_000, dtype=np.float32)
    result = engine.transcribe([second, second[:8000]], [TranscribeOptions(language="en")] * 2)
    assert [r.text for r in result] == ["one two three four"] * 2
    assert [(w.start, w.end) for w in result[0].words] == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    assert result[1].duration == 0.5
    assert result[0].language == "en"
    assert result[0].segments[0].text == "one two three four"


def test_fake_engine_records_calls_fails_and_checks_options() -> None:
    engine = FakeEngine(fail=True)
    with pytest.raises(InferenceError):
        engine.transcribe([np.zeros(10, dtype=np.float32)], [TranscribeOptions()])
    assert engine.calls == [(1, [TranscribeOptions()])]
    with pytest.raises(UnsupportedTaskError):
        engine.transcribe([np.zeros(10, dtype=np.float32)], [TranscribeOptions(task="translate")])
    engine.close()
    assert engine.closed
