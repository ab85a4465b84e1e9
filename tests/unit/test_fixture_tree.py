"""The committed fixture tree keeps its layout and its size budget."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUDGET_BYTES = 40 * 1024 * 1024
LAYOUTS = {
    "parakeet-tdt-tiny": {"model.nemo", "config.json", "vocab.txt", "encoder-model.onnx", "decoder_joint-model.onnx"},
    "parakeet-digits": {"model.nemo", "config.json", "vocab.txt", "encoder-model.onnx", "decoder_joint-model.onnx"},
    "canary-digits": {"model.nemo", "config.json", "vocab.txt", "encoder-model.onnx", "decoder-model.onnx"},
}


def test_fixtures_fit_the_size_budget() -> None:
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < BUDGET_BYTES, f"tests/fixtures holds {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_model_directories_hold_exactly_the_onnx_asr_layout(name: str) -> None:
    assert {p.name for p in (FIXTURES / "models" / name).iterdir()} == LAYOUTS[name]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_goldens_name_their_model_and_the_nemo_that_made_them(name: str) -> None:
    doc = json.loads((FIXTURES / "goldens" / f"{name}.json").read_text(encoding="utf-8"))
    assert doc["model"] == name
    assert doc["nemo_version"] == version("nemo-toolkit")
    assert doc["cases"]
    for case in doc["cases"]:
        assert (FIXTURES / "audio" / case["clip"]).is_file()
        assert isinstance(case["text"], str)
        assert all(isinstance(t, int) for t in case["tokens"])
        assert all(set(w) >= {"word"} for w in case["words"])


def test_audio_covers_the_required_shapes() -> None:
    import wave

    shapes = {}
    silent = []
    for path in (FIXTURES / "audio").glob("*.wav"):
        with wave.open(str(path)) as w:
            shapes[path.name] = (w.getframerate(), w.getnchannels(), w.getnframes() / w.getframerate())
            if not any(w.readframes(w.getnframes())):
                silent.append(path.name)
    assert silent, "no clip of pure digital silence"
    english = {k: v for k, v in shapes.items() if not k.startswith("canary-")}
    assert len(english) >= 8
    assert any(rate == 44_100 and channels == 2 for rate, channels, _ in shapes.values())
    assert any(seconds < 0.2 for _, _, seconds in english.values())
    assert max(seconds for _, _, seconds in english.values()) > 15
    assert {k.split("-")[1] for k in shapes if k.startswith("canary-")} >= {"en", "de", "es", "fr"}
