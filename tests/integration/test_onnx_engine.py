"""The onnxruntime engine computes NeMo's function: goldens token for token, batched or not."""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest

from aviary.engine.onnx import RuntimeOptions, SessionFactory, load_onnx_engine, read_model_dir
from aviary.engine.tdt import TdtEngine
from aviary.engine.tdt_decoder import FusedDecoder, NumpyDecoder, load_step_decoder
from aviary.errors import (
    InvalidModelError,
    ModelNotFoundError,
    UnsupportedLanguageError,
    UnsupportedTaskError,
    UnsupportedTranslationError,
)
from aviary.types import SAMPLE_RATE, TranscribeOptions
from tests.support.fixtures import FRAME_SECONDS, MODELS, PARAKEETS, canary_options, clip, golden

if TYPE_CHECKING:
    from pathlib import Path

    from aviary.engine.base import Engine

CPU = RuntimeOptions(device="cpu", intra_op_threads=1)
# NeMo normalises each mel band by its standard deviation plus 1e-5. On digital silence every band is
# constant, so the features are float rounding noise divided by 1e-5: NeMo (torch) and the ONNX graph
# disagree there by design (so do onnx-asr's own preprocessor variants). The random tiny model turns that
# noise into arbitrary tokens, so that one case has no reference; the trained model must say nothing on it.
ILL_CONDITIONED = {("parakeet-tdt-tiny", "silence-2s.wav")}


@cache
def engine(name: str) -> Engine:
    return load_onnx_engine(MODELS / name, name, CPU)


def parakeet_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = [(name, case) for name in PARAKEETS for case in golden(name)["cases"]]
    return [(name, case) for name, case in cases if (name, case["clip"]) not in ILL_CONDITIONED]


@pytest.mark.parametrize(("name", "case"), parakeet_cases(), ids=lambda v: v if isinstance(v, str) else v["clip"])
def test_parakeet_reproduces_nemo_tokens_text_and_word_times(name: str, case: dict[str, Any]) -> None:
    result = engine(name).transcribe([clip(case["clip"])], [TranscribeOptions()])[0]
    assert list(result.tokens) == case["tokens"]
    assert result.text == case["text"]
    assert [w.word for w in result.words] == [w["word"] for w in case["words"]]
    for word, expected in zip(result.words, case["words"], strict=True):
        assert abs(word.start - expected["start"]) <= FRAME_SECONDS
        assert abs(word.end - expected["end"]) <= FRAME_SECONDS
    assert [s.text for s in result.segments] == [s["segment"] for s in case["segments"]]


@pytest.mark.parametrize("name", PARAKEETS)
def test_parakeet_batch_of_mixed_lengths_equals_batch_one(name: str) -> None:
    clips = [clip(c["clip"]) for c in golden(name)["cases"]]
    assert len({len(c) for c in clips}) > 3  # really mixed lengths
    model = engine(name)
    batched = model.transcribe(clips, [TranscribeOptions()] * len(clips))
    single = [model.transcribe([c], [TranscribeOptions()])[0] for c in clips]
    assert [b.tokens for b in batched] == [s.tokens for s in single]
    for b, s in zip(batched, single, strict=True):
        assert [(w.word, w.start, w.end) for w in b.words] == [(w.word, w.start, w.end) for w in s.words]
        # Padding changes the float summation order inside the encoder, not the decisions.
        assert [w.confidence for w in b.words] == pytest.approx([w.confidence for w in s.words], abs=1e-3)


@pytest.mark.parametrize("numpy_decoder", [True, False], ids=["numpy", "graph"])
def test_one_engine_serves_many_threads_at_once(numpy_decoder: bool) -> None:  # noqa: FBT001
    """Threads share a loaded engine (the API runs several workers): no call sees another's state."""
    path = MODELS / "parakeet-digits"
    model = TdtEngine("digits", read_model_dir(path, "digits"), SessionFactory(CPU), numpy_decoder=numpy_decoder)
    clips = [clip(c["clip"]) for c in golden("parakeet-digits")["cases"]]
    alone = [model.transcribe([c], [TranscribeOptions()])[0].tokens for c in clips]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda c: model.transcribe([c], [TranscribeOptions()])[0].tokens, clips * 4))
    assert together == alone * 4


def test_words_carry_times_inside_the_audio_and_confidences() -> None:
    result = engine("parakeet-digits").transcribe([clip("en-digits-10.wav")], [TranscribeOptions(language="en")])[0]
    assert result.language == "en"
    assert len(result.words) == 10
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= result.duration + FRAME_SECONDS for w in result.words)
    assert all(0.0 < w.confidence <= 1.0 for w in result.words)
    assert np.mean([w.confidence for w in result.words]) > 0.5  # a trained model is mostly sure of digits
    assert result.segments[0].start == result.words[0].start
    assert result.segments[-1].end == result.words[-1].end


def test_silence_through_the_trained_model_is_empty() -> None:
    result = engine("parakeet-digits").transcribe([clip("silence-2s.wav")], [TranscribeOptions()])[0]
    assert (result.text, result.words, result.segments, result.duration) == ("", (), (), 2.0)


@pytest.mark.parametrize("case", golden("canary-digits")["cases"], ids=lambda c: f"{c['clip']}-{c['target_lang']}")
def test_canary_reproduces_nemo_tokens_and_text(case: dict[str, Any]) -> None:
    result = engine("canary-digits").transcribe([clip(case["clip"])], [canary_options(case)])[0]
    assert list(result.tokens) == case["tokens"]
    assert result.text == case["text"]
    assert result.language == case["target_lang"]
    assert not result.timestamps
    assert result.words == ()
    assert [(s.text, s.start, s.end) for s in result.segments] == [(case["text"], 0.0, result.duration)]


def test_canary_batch_mixing_languages_and_tasks_equals_batch_one() -> None:
    cases = golden("canary-digits")["cases"]
    model = engine("canary-digits")
    batched = model.transcribe([clip(c["clip"]) for c in cases], [canary_options(c) for c in cases])
    assert [list(r.tokens) for r in batched] == [c["tokens"] for c in cases]


@pytest.mark.parametrize("name", [*PARAKEETS, "canary-digits"])
def test_a_batch_over_the_encoder_limit_is_encoded_in_parts_and_decoded_as_one(name: str) -> None:
    cases = golden(name)["cases"]
    clips = [clip(c["clip"]) for c in cases]
    options = [canary_options(c) for c in cases] if name == "canary-digits" else [TranscribeOptions()] * len(cases)
    longest = max(len(c) for c in clips) / SAMPLE_RATE
    limited = RuntimeOptions(device="cpu", intra_op_threads=1, encoder_max_seconds=2.5 * longest)
    model = load_onnx_engine(MODELS / name, name, limited)
    runs: list[tuple[int, int]] = []  # (utterances, padded samples) per encoder run
    encode_once = model._encode_once  # type: ignore[attr-defined]  # noqa: SLF001 - counting the engine's own runs

    def counted(audio: list[np.ndarray]) -> Any:  # noqa: ANN401 - whatever the engine's encoder returns
        runs.append((len(audio), len(audio) * max(len(a) for a in audio)))
        return encode_once(audio)

    model._encode_once = counted  # type: ignore[attr-defined]  # noqa: SLF001
    batched = model.transcribe(clips, options)
    assert len(runs) > 1
    assert all(padded <= 2.5 * longest * SAMPLE_RATE for _, padded in runs)
    assert sum(count for count, _ in runs) == len(clips)
    assert [len(part) for part in model.encoder_parts([len(c) for c in clips])] == [count for count, _ in runs]
    single = [engine(name).transcribe([c], [o])[0] for c, o in zip(clips, options, strict=True)]
    assert [b.tokens for b in batched] == [s.tokens for s in single]
    assert [[(w.word, w.start, w.end) for w in b.words] for b in batched] == [
        [(w.word, w.start, w.end) for w in s.words] for s in single
    ]


def test_engines_describe_themselves() -> None:
    tdt, aed = engine("parakeet-digits").info, engine("canary-digits").info
    assert (tdt.engine, tdt.family, tdt.device, tdt.translation, tdt.timestamps) == ("onnx", "tdt", "cpu", False, True)
    assert (aed.family, aed.translation, aed.timestamps) == ("aed", True, False)
    assert {"en", "de", "es", "fr"} <= set(aed.languages)


def test_requests_a_model_cannot_serve_are_refused() -> None:
    with pytest.raises(UnsupportedTaskError) as task:
        engine("parakeet-digits").transcribe([clip("en-digits-3.wav")], [TranscribeOptions(task="translate")])
    assert task.value.code == "unsupported_task"
    with pytest.raises(UnsupportedLanguageError) as language:
        engine("canary-digits").transcribe([clip("canary-de-1.wav")], [TranscribeOptions(language="xx")])
    assert language.value.code == "unsupported_language"
    assert "'xx'" in str(language.value)
    english_only = load_onnx_engine(MODELS / "parakeet-digits", "p", CPU, languages=("en",))
    with pytest.raises(UnsupportedLanguageError):
        english_only.transcribe([clip("en-digits-3.wav")], [TranscribeOptions(language="de")])
    canary, german = engine("canary-digits"), [clip("canary-de-1.wav")]
    with pytest.raises(UnsupportedTranslationError) as pair:  # to and from English only
        canary.transcribe(german, [TranscribeOptions(language="de", task="translate", target_language="es")])
    assert (pair.value.code, pair.value.param) == ("unsupported_language", "target_language")
    assert str(pair.value) == "The model 'canary-digits' translates to and from English only, not from 'de' to 'es'."
    for source, target in (("de", "en"), ("en", "de"), ("de", None)):
        options = TranscribeOptions(language=source, task="translate", target_language=target)
        assert canary.transcribe(german, [options])[0].text


def test_transcripts_name_the_language_they_are_written_in() -> None:
    """Asked for, or the only one the model speaks (OpenAI's verbose_json says "english", not "unknown")."""
    english_only = load_onnx_engine(MODELS / "parakeet-digits", "p", CPU, languages=("en",))
    digits = clip("en-digits-3.wav")
    assert english_only.transcribe([digits], [TranscribeOptions()])[0].language == "en"
    assert engine("parakeet-digits").transcribe([digits], [TranscribeOptions()])[0].language is None  # detects
    assert engine("parakeet-digits").transcribe([digits], [TranscribeOptions(language="en")])[0].language == "en"
    canary = engine("canary-digits")
    assert canary.transcribe([clip("canary-en-1.wav")], [TranscribeOptions()])[0].language == "en"
    translated = TranscribeOptions(language="fr", task="translate", target_language="en")
    assert canary.transcribe([clip("canary-fr-1.wav")], [translated])[0].language == "en"


def test_an_empty_batch_is_an_empty_result() -> None:
    assert engine("parakeet-digits").transcribe([], []) == []
    assert engine("canary-digits").transcribe([], []) == []


def copy_model(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(MODELS / name, target, ignore=shutil.ignore_patterns("*.nemo"))
    return target


def test_model_directory_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        read_model_dir(tmp_path / "absent", "absent")
    model = copy_model("parakeet-tdt-tiny", tmp_path)
    (model / "vocab.txt").unlink()
    with pytest.raises(InvalidModelError, match=r"vocab\.txt is missing"):
        read_model_dir(model, "m")
    (model / "vocab.txt").write_text("no-id-here\n", encoding="utf-8")
    with pytest.raises(InvalidModelError, match="'<piece> <id>'"):
        read_model_dir(model, "m")
    (model / "config.json").write_text(json.dumps({"model_type": "whisper"}), encoding="utf-8")
    with pytest.raises(InvalidModelError, match="model_type 'whisper'"):
        read_model_dir(model, "m")
    (model / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidModelError, match="malformed"):
        read_model_dir(model, "m")


def test_quantized_files_are_preferred_when_asked_for(tmp_path: Path) -> None:
    model = copy_model("parakeet-tdt-tiny", tmp_path)
    shutil.copy(model / "encoder-model.onnx", model / "encoder-model.int8.onnx")
    chosen = read_model_dir(model, "m", quantization="int8").files
    assert chosen["encoder-model"].name == "encoder-model.int8.onnx"
    assert chosen["decoder_joint-model"].name == "decoder_joint-model.onnx"  # no int8 decoder: fp32 it is
    (model / "encoder-model.onnx").unlink()
    (model / "encoder-model.int8.onnx").unlink()
    with pytest.raises(InvalidModelError, match=r"encoder-model\.onnx is missing"):
        read_model_dir(model, "m")


@pytest.mark.parametrize("name", ["parakeet-digits", "canary-digits"])
def test_a_cuda_provider_that_fails_to_start_leaves_an_engine_that_knows_it_runs_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # onnxruntime-gpu without a GPU: the CUDA provider is listed, but its sessions come up on the CPU.
    import aviary.engine.onnx

    monkeypatch.setattr(
        aviary.engine.onnx, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    engine = load_onnx_engine(MODELS / name, name, RuntimeOptions(device="cuda", intra_op_threads=1))
    assert engine.info.device == "cpu"
    assert (engine.info.fallback or "").startswith("CUDA failed to initialise")
    # What follows from the device is the CPU's: batches encoded in parts, the CPU's decoders.
    assert engine.encoder_parts([30 * SAMPLE_RATE] * 3) == [[0, 1], [2]]
    if name == "parakeet-digits":
        assert isinstance(engine._decoder, NumpyDecoder)  # type: ignore[attr-defined]  # noqa: SLF001
    case = golden(name)["cases"][0]
    options = canary_options(case) if name == "canary-digits" else TranscribeOptions()
    assert list(engine.transcribe([clip(case["clip"])], [options])[0].tokens) == case["tokens"]


def test_cuda_request_without_cuda_falls_back_to_cpu_once(caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback cannot be observed")
    with caplog.at_level(logging.WARNING, logger="aviary.engine.onnx"):
        factory = SessionFactory(RuntimeOptions(device="cuda"))
    assert factory.device == "cpu"
    assert factory.fallback_reason is not None
    assert "CUDA requested but unavailable" in caplog.text
    assert factory.run_options() is None
    model = load_onnx_engine(MODELS / "parakeet-digits", "p", RuntimeOptions(device="cuda", intra_op_threads=1))
    assert model.info.device == "cpu"
    assert model.transcribe([clip("en-digits-3.wav")], [TranscribeOptions()])[0].text == "three one four"


def test_cpu_sessions_plan_no_memory_pattern() -> None:
    # A pattern per input shape, kept in the arena, doubles the encoder's resident activations as chunk
    # lengths vary (see SessionFactory): CPU sessions must run without one.
    session = SessionFactory(CPU).create(MODELS / "parakeet-digits" / "encoder-model.onnx")
    assert session.get_session_options().enable_mem_pattern is False
    assert session.get_session_options().enable_cpu_mem_arena is True


@pytest.mark.parametrize("name", PARAKEETS)
def test_numpy_decoder_is_used_and_computes_what_the_graph_does(name: str) -> None:
    factory = SessionFactory(CPU)
    path = MODELS / name / "decoder_joint-model.onnx"
    assert isinstance(load_step_decoder(path, factory), NumpyDecoder)
    ours = engine(name)
    graph = TdtEngine(name, read_model_dir(MODELS / name, name), factory, numpy_decoder=False)
    clips = [clip(c["clip"]) for c in golden(name)["cases"]]
    options = [TranscribeOptions()] * len(clips)
    for a, b in zip(ours.transcribe(clips, options), graph.transcribe(clips, options), strict=True):
        assert a.tokens == b.tokens
        assert [(w.word, w.start, w.end) for w in a.words] == [(w.word, w.start, w.end) for w in b.words]
        assert [w.confidence for w in a.words] == pytest.approx([w.confidence for w in b.words], abs=1e-4)


def test_a_graph_that_is_not_nemos_joint_is_run_as_exported(tmp_path: Path) -> None:
    # The encoder graph has none of the joint's structure: NumPy must decline, not guess.
    assert NumpyDecoder.load(MODELS / "parakeet-tdt-tiny" / "encoder-model.onnx") is None
    path = MODELS / "parakeet-tdt-tiny" / "decoder_joint-model.onnx"
    assert isinstance(load_step_decoder(path, SessionFactory(CPU), numpy=False), FusedDecoder)
    # A joint that subtracts the projections instead of adding them: every weight where NeMo's are, another
    # function. The load-time check (NumPy against onnxruntime on random inputs) must catch what the
    # pattern match alone would not.
    model = onnx.load(str(path))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    combine = next(n for n in model.graph.node if relu.input[0] in n.output)
    assert combine.op_type == "Add"
    combine.op_type = "Sub"
    changed = tmp_path / "decoder_joint-model.onnx"
    onnx.save(model, str(changed))
    assert NumpyDecoder.load(changed) is None
    assert isinstance(load_step_decoder(changed, SessionFactory(CPU)), FusedDecoder)
