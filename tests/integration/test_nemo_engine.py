"""The NeMo engine on the committed fixture models: it reproduces NeMo's goldens from in-memory audio."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from scipy.signal import resample_poly

from aviary.engine.nemo import NemoEngine, load_nemo_engine
from aviary.errors import InferenceError, InvalidModelError, ModelNotFoundError, UnsupportedTaskError
from aviary.types import SAMPLE_RATE, TranscribeOptions
from tools.fixtures import speech

if TYPE_CHECKING:
    from aviary.types import Audio

pytestmark = pytest.mark.fixtures

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
PARAKEETS = ("parakeet-tdt-tiny", "parakeet-digits")
FRAME_SECONDS = 0.08  # one encoder frame: 10 ms mel hop x 8 subsampling
# tools/fixtures/goldens.py ran NeMo with batch_size=4, in case order. The batch matters for word times
# (not tokens): padded next to the 17 s clip, one word of en-digits-10 ends 2 frames earlier in NeMo.
GOLDEN_BATCH = 4

Loader = Callable[[str], NemoEngine]


@cache
def golden(name: str) -> list[dict[str, Any]]:
    doc = json.loads((FIXTURES / "goldens" / f"{name}.json").read_text(encoding="utf-8"))
    cases: list[dict[str, Any]] = doc["cases"]
    return cases


@cache
def clip(name: str) -> Audio:
    """A fixture clip as the engine takes it: mono (stereo averaged) float32 at 16 kHz.

    NeMo made the goldens from the files, resampling the 44.1 kHz clip itself; `resample_poly` gives
    the same tokens on every fixture model, so no clip needs comparing against NeMo-on-the-path instead.
    """
    audio, rate = speech.read_wav(FIXTURES / "audio" / name)
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    if rate != SAMPLE_RATE:
        assert rate == 44_100
        mono = resample_poly(mono, 160, 441)
    return np.asarray(mono, dtype=np.float32)


@pytest.fixture(scope="module")
def engine() -> Iterator[Loader]:
    """Each fixture model loaded once for the module, on the CPU, with torch on one thread."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("nemo.collections.asr")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from intra-op threads on a busy 2-core machine
    loaded: dict[str, NemoEngine] = {}

    def load(name: str) -> NemoEngine:
        if name not in loaded:
            loaded[name] = load_nemo_engine(FIXTURES / "models" / name / "model.nemo", name, device="cpu")
        return loaded[name]

    yield load
    for model in loaded.values():
        model.close()
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", PARAKEETS)
def test_parakeet_reproduces_goldens(engine: Loader, name: str) -> None:
    model = engine(name)
    assert (model.info.engine, model.info.family, model.info.device) == ("nemo", "tdt", "cpu")
    assert model.info.timestamps
    cases = golden(name)
    for first in range(0, len(cases), GOLDEN_BATCH):
        batch = cases[first : first + GOLDEN_BATCH]
        results = model.transcribe([clip(c["clip"]) for c in batch], [TranscribeOptions(language="en")] * len(batch))
        for case, result in zip(batch, results, strict=True):
            assert list(result.tokens) == case["tokens"], case["clip"]
            assert result.text == case["text"], case["clip"]
            assert result.language == "en"
            assert result.duration == round(len(clip(case["clip"])) / SAMPLE_RATE, 3)
            assert [w.word for w in result.words] == [w["word"] for w in case["words"]], case["clip"]
            for word, expected in zip(result.words, case["words"], strict=True):
                assert word.start == pytest.approx(expected["start"], abs=FRAME_SECONDS + 1e-6), case["clip"]
                assert word.end == pytest.approx(expected["end"], abs=FRAME_SECONDS + 1e-6), case["clip"]
                assert 0.0 <= word.confidence <= 1.0
            assert " ".join(s.text for s in result.segments) == result.text
            assert [w for s in result.segments for w in s.words] == list(result.words)


def test_canary_reproduces_goldens_in_one_mixed_batch(engine: Loader) -> None:
    model = engine("canary-digits")
    cases = golden("canary-digits")
    options = [
        TranscribeOptions(
            language=c["source_lang"],
            task="transcribe" if c["source_lang"] == c["target_lang"] else "translate",
            target_language=c["target_lang"],
            pnc=c["pnc"],
        )
        for c in cases
    ]
    # Every (source, target, pnc) in one call: the engine groups them into the goldens' NeMo calls.
    results = model.transcribe([clip(c["clip"]) for c in cases], options)
    for case, result in zip(cases, results, strict=True):
        task = (case["clip"], case["source_lang"], case["target_lang"], case["pnc"])
        assert list(result.tokens) == case["tokens"], task
        assert result.text == case["text"], task
        assert result.language == case["target_lang"]
        assert not result.timestamps
        assert result.words == ()
        assert [(s.text, s.start, s.end) for s in result.segments] == [(result.text, 0.0, result.duration)]


def test_canary_info_lists_the_tokenizer_languages(engine: Loader) -> None:
    info = engine("canary-digits").info
    vocab = (FIXTURES / "models" / "canary-digits" / "vocab.txt").read_text(encoding="utf-8").split()
    assert (info.engine, info.family, info.translation, info.timestamps) == ("nemo", "aed", True, False)
    assert info.languages == tuple(sorted(p[2:4] for p in vocab if len(p) == 6 and p[:2] == "<|" and p[4:] == "|>"))
    assert {"de", "en", "es", "fr"} <= set(info.languages)


def test_the_first_canarys_prompt_and_tokenizer(engine: Loader, tmp_path: Path) -> None:
    """nvidia/canary-1b (the original server's Canary): its prompt needs `task`, and has no defaults."""
    del engine  # torch on one thread, NeMo importable
    from nemo.collections.asr.models import ASRModel

    from tools.fixtures.canary_model import build_first_canary

    path = build_first_canary(tmp_path)
    model = load_nemo_engine(path, "canary-1b", device="cpu")
    reference = ASRModel.restore_from(str(path), map_location="cpu")
    try:
        assert (model.info.family, model.info.languages, model.info.translation) == ("aed", ("de", "en"), True)
        audio = clip("en-digits-3.wav")
        options = [
            TranscribeOptions(language="en"),
            TranscribeOptions(language="de", task="translate", target_language="en"),
            TranscribeOptions(language="en", pnc=False),
        ]
        results = model.transcribe([audio] * len(options), options)
        for option, result in zip(options, results, strict=True):
            source, target = option.language, option.target_language or option.language
            (hyp,) = reference.transcribe(
                [audio],
                batch_size=1,
                return_hypotheses=True,
                verbose=False,
                source_lang=source,
                target_lang=target,
                task="s2t_translation" if source != target else "asr",  # its own names, as its model card has them
                pnc="yes" if option.pnc else "no",
            )
            assert result.text == hyp.text.strip(), option
            assert result.language == target
    finally:
        model.close()


def test_parakeet_cannot_translate(engine: Loader) -> None:
    with pytest.raises(UnsupportedTaskError):
        engine("parakeet-digits").transcribe([clip("en-digits-3.wav")], [TranscribeOptions(task="translate")])


@pytest.mark.parametrize("name", ["parakeet-digits", "canary-digits"])
def test_batch_gives_the_tokens_of_single_calls(engine: Loader, name: str) -> None:
    model = engine(name)
    if name == "canary-digits":
        names = sorted({c["clip"] for c in golden(name)})
        options = [TranscribeOptions(language=n.split("-")[1], task="translate", target_language="en") for n in names]
    else:
        names = [c["clip"] for c in golden(name)]  # 0.15 s to 17 s, digital silence included
        options = [TranscribeOptions()] * len(names)
    audio = [clip(n) for n in names]
    assert len({len(a) for a in audio}) == len(audio)
    batched = model.transcribe(audio, options)
    single = [model.transcribe([a], [o])[0] for a, o in zip(audio, options, strict=True)]
    assert [r.tokens for r in batched] == [r.tokens for r in single]
    assert model.transcribe([], []) == []


@pytest.mark.parametrize("name", ["parakeet-tdt-tiny", "canary-digits"])
def test_empty_audio_gives_an_empty_transcript(engine: Loader, name: str) -> None:
    model = engine(name)
    empty = np.zeros(0, dtype=np.float32)
    results = model.transcribe([empty, clip("en-digits-3.wav"), empty], [TranscribeOptions()] * 3)
    assert [(r.text, r.duration, r.tokens, r.words) for r in results[::2]] == [("", 0.0, (), ())] * 2
    assert results[1] == model.transcribe([clip("en-digits-3.wav")], [TranscribeOptions()])[0]
    assert {r.timestamps for r in results} == {model.info.timestamps}


def test_nemo_failures_are_inference_errors(engine: Loader) -> None:
    stereo = np.zeros((SAMPLE_RATE, 2), dtype=np.float32)  # breaks the Audio contract: NeMo rejects the shape
    with pytest.raises(InferenceError, match="'parakeet-tdt-tiny'") as raised:
        engine("parakeet-tdt-tiny").transcribe([stereo], [TranscribeOptions()])
    assert isinstance(raised.value.__cause__, TypeError)


@pytest.mark.usefixtures("engine")  # torch on one thread
def test_cuda_falls_back_to_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with caplog.at_level(logging.WARNING, logger="aviary.engine.nemo"):
        model = load_nemo_engine(FIXTURES / "models" / "parakeet-tdt-tiny" / "model.nemo", "tiny", device="cuda")
    assert model.info.device == "cpu"
    assert [r.message for r in caplog.records if r.name == "aviary.engine.nemo"] == [
        "CUDA requested but unavailable (torch sees no CUDA device); running on CPU"
    ]
    model.close()


def test_missing_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="'absent'"):
        load_nemo_engine(tmp_path / "absent.nemo", "absent", device="cpu")
    with pytest.raises(ModelNotFoundError):
        load_nemo_engine(str(tmp_path / "absent.nemo"), "absent", device="cpu")


def test_non_model_file_is_invalid_model(tmp_path: Path) -> None:
    pytest.importorskip("nemo.collections.asr")
    path = tmp_path / "model.nemo"
    path.write_bytes(b"not a NeMo archive")
    with pytest.raises(InvalidModelError, match="'junk'") as raised:
        load_nemo_engine(path, "junk", device="cpu")
    assert raised.value.__cause__ is not None


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, aviary.engine.nemo; print(sorted(m for m in ('torch', 'nemo') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "[]"


def test_the_thread_setting_sizes_torchs_pool() -> None:
    pytest.importorskip("nemo.collections.asr")
    code = (
        "import sys, torch; from aviary.config import Settings; from aviary.engine.registry import Registry; "
        "Registry(Settings(threads=1, device='cpu')).get(sys.argv[1]); print(torch.get_num_threads())"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("OMP_NUM_THREADS", None)  # torch would start with it
    model = str(ROOT / "tests" / "fixtures" / "models" / "parakeet-digits" / "model.nemo")
    result = subprocess.run([sys.executable, "-c", code, model], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip().splitlines()[-1] == "1"
