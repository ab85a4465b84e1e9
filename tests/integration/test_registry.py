"""The model registry: names to sources, the offline hub cache, and loading each model once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from aviary.config import Settings
from aviary.engine.registry import KNOWN, Registry, Source
from aviary.errors import InvalidModelError, ModelNotFoundError, ModelUnavailableError
from aviary.types import SAMPLE_RATE, TranscribeOptions
from tests.support.fixtures import MODELS, clip
from tests.support.hub import add_onnx_model, add_to_cache

if TYPE_CHECKING:
    from pathlib import Path

    from aviary.engine.base import Engine


def registry(tmp_path: Path, **overrides: object) -> Registry:
    settings = Settings(offline=True, cache_dir=tmp_path / "hub", device="cpu", threads=1, **overrides)  # type: ignore[arg-type]
    return Registry(settings)


def test_names_resolve_in_order_alias_registry_path_hub(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    assert reg.resolve("parakeet") == reg.resolve("parakeet-tdt-0.6b-v2")
    parakeet = reg.resolve("parakeet")
    assert (parakeet.engine, parakeet.kind, parakeet.location) == ("onnx", "hub", "istupakov/parakeet-tdt-0.6b-v2-onnx")
    assert reg.resolve("canary").name == "canary-1b-v2"
    # The seed's MODEL_NAME, an NVIDIA repo id, is the same registry model.
    assert reg.resolve("nvidia/parakeet-tdt-0.6b-v2") == parakeet
    directory = reg.resolve(str(MODELS / "parakeet-digits"))
    assert (directory.engine, directory.kind) == ("onnx", "directory")
    nemo_file = reg.resolve(str(MODELS / "canary-digits" / "model.nemo"))
    assert (nemo_file.engine, nemo_file.kind) == ("nemo", "nemo-file")
    assert reg.resolve("someone/custom-onnx") == Source("someone/custom-onnx", "onnx", "hub", "someone/custom-onnx")
    assert reg.resolve("nvidia/canary-1b").engine == "nemo"  # the seed's Canary: NeMo only


def test_nemo_engine_setting_switches_registry_names_to_nvidia_repos(tmp_path: Path) -> None:
    source = registry(tmp_path, engine="nemo").resolve("canary-180m-flash")
    assert (source.engine, source.location) == ("nemo", "nvidia/canary-180m-flash")


def test_aliases_are_configurable_and_keep_the_defaults(tmp_path: Path) -> None:
    reg = registry(tmp_path, aliases={"canary": "canary-180m-flash", "digits": str(MODELS / "parakeet-digits")})
    assert reg.resolve("canary").name == "canary-180m-flash"
    assert reg.resolve("parakeet").name == "parakeet-tdt-0.6b-v2"
    assert reg.resolve("digits").kind == "directory"


@pytest.mark.parametrize("name", ["whisper", "./missing-dir", str(MODELS / "nope.nemo"), "a/b/c", ""])
def test_unknown_names_are_model_not_found(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelNotFoundError) as error:
        registry(tmp_path).resolve(name)
    assert error.value.code == "model_not_found"
    assert "parakeet-tdt-0.6b-v2" in str(error.value)  # the message lists what exists


def test_the_nemo_engine_runs_a_model_directorys_own_nemo_file(tmp_path: Path) -> None:
    digits = str(MODELS / "parakeet-digits")  # ONNX files and model.nemo side by side
    nemo = registry(tmp_path, engine="nemo").resolve(digits)
    assert (nemo.engine, nemo.kind, nemo.location) == (
        "nemo",
        "nemo-file",
        str(MODELS / "parakeet-digits" / "model.nemo"),
    )
    assert registry(tmp_path).resolve(digits).kind == "directory"
    onnx_only = tmp_path / "onnx-only"
    onnx_only.mkdir()
    assert registry(tmp_path, engine="nemo").resolve(str(onnx_only)).kind == "directory"  # nothing else to run


def test_a_file_that_is_not_a_nemo_file_is_named_as_such(tmp_path: Path) -> None:
    renamed = tmp_path / "parakeet.bin"
    renamed.write_bytes((MODELS / "parakeet-digits" / "model.nemo").read_bytes()[:1024])
    with pytest.raises(InvalidModelError) as error:
        registry(tmp_path).resolve(str(renamed))
    assert str(error.value) == (
        f"The model '{renamed}' cannot be loaded: it is a file but not a .nemo file "
        "(a model is a directory of ONNX files, or a .nemo file)."
    )


def test_offline_and_not_cached_is_model_unavailable_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError) as error:
        registry(tmp_path).get("parakeet")
    assert error.value.code == "model_unavailable"
    message = str(error.value)
    assert "parakeet-tdt-0.6b-v2" in message
    assert "`aviary models pull parakeet-tdt-0.6b-v2` while online" in message
    assert str(tmp_path) not in message
    with pytest.raises(ModelUnavailableError) as error:
        registry(tmp_path, engine="nemo").get("canary")
    assert "`aviary models pull canary-1b-v2 --engine nemo` while online" in str(error.value)  # NeMo's files


def test_cached_hub_model_loads_offline_and_transcribes(tmp_path: Path) -> None:
    add_onnx_model(tmp_path / "hub", KNOWN["parakeet-tdt-0.6b-v2"].onnx_repo, MODELS / "parakeet-digits")
    reg = registry(tmp_path)
    assert reg.is_cached(reg.resolve("parakeet"))
    assert not reg.is_cached(reg.resolve("canary"))
    engine = reg.get("parakeet")
    assert engine.info.name == "parakeet-tdt-0.6b-v2"
    assert engine.info.languages == ("en",)  # the registry knows what v2 speaks
    assert engine.transcribe([clip("en-digits-3.wav")], [TranscribeOptions()])[0].text == "three one four"
    assert reg.get("nvidia/parakeet-tdt-0.6b-v2") is engine  # one model, however it is named
    assert reg.loaded() == [engine]
    reg.close()
    assert reg.loaded() == []


def test_quantized_hub_files_are_fetched_by_pattern(tmp_path: Path) -> None:
    files = {p.name: p for p in (MODELS / "parakeet-digits").iterdir() if p.suffix in {".json", ".txt"}}
    files["encoder-model.int8.onnx"] = MODELS / "parakeet-digits" / "encoder-model.onnx"
    files["decoder_joint-model.int8.onnx"] = MODELS / "parakeet-digits" / "decoder_joint-model.onnx"
    add_to_cache(tmp_path / "hub", KNOWN["parakeet-tdt-0.6b-v2"].onnx_repo, files)
    engine = registry(tmp_path, quantization="int8").get("parakeet")
    assert engine.transcribe([clip("en-digits-3.wav")], [TranscribeOptions()])[0].text == "three one four"


def test_concurrent_first_requests_load_a_model_once() -> None:
    calls: list[Source] = []
    started = threading.Event()

    def slow_loader(source: Source, path: Path) -> Engine:
        from aviary.engine.onnx import RuntimeOptions, load_onnx_engine

        calls.append(source)
        started.set()
        time.sleep(0.3)  # a slow load: every other thread arrives while it runs
        return load_onnx_engine(path, source.name, RuntimeOptions(device="cpu", intra_op_threads=1))

    reg = Registry(Settings(offline=True, device="cpu"), loader=slow_loader)
    name = str(MODELS / "parakeet-tdt-tiny")
    with ThreadPoolExecutor(max_workers=8) as pool:
        engines = list(pool.map(lambda _: reg.get(name), range(8)))
    assert started.is_set()
    assert len(calls) == 1
    assert all(e is engines[0] for e in engines)


@pytest.mark.parametrize("name", ["someone/a b-onnx", "someone/a..b", "someone/-a", "someone/" + "a" * 97])
def test_hub_ids_the_hub_would_refuse_are_model_not_found(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelNotFoundError) as error:
        registry(tmp_path).get(name)
    assert error.value.code == "model_not_found"
    assert name in str(error.value)


def test_a_loader_that_raises_anything_gives_invalid_model_and_the_next_get_loads_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from aviary.engine.onnx import RuntimeOptions, load_onnx_engine

    attempts: list[Source] = []

    def flaky_loader(source: Source, path: Path) -> Engine:
        attempts.append(source)
        if len(attempts) == 1:
            msg = "the graph is broken\nand a second line"
            raise RuntimeError(msg)
        return load_onnx_engine(path, source.name, RuntimeOptions(device="cpu", intra_op_threads=1))

    reg = Registry(Settings(offline=True, cache_dir=tmp_path / "hub", device="cpu"), loader=flaky_loader)
    name = str(MODELS / "parakeet-tdt-tiny")
    with caplog.at_level("DEBUG", logger="aviary.engine.registry"), pytest.raises(InvalidModelError) as error:
        reg.get(name)
    assert error.value.code == "invalid_model"
    assert str(error.value) == f"The model '{name}' cannot be loaded: RuntimeError: the graph is broken."
    assert isinstance(error.value.__cause__, RuntimeError)
    assert "and a second line" in caplog.text  # the whole traceback is logged (at debug: the CLI prints one line)
    assert reg.loaded() == []
    assert reg.get(name).info.family == "tdt"
    assert len(attempts) == 2


def test_a_nemo_model_without_nemo_installed_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aviary.engine.registry

    nemo_file = str(MODELS / "parakeet-digits" / "model.nemo")
    monkeypatch.setattr(aviary.engine.registry, "nemo_installed", lambda: False)
    for name in (nemo_file, "nvidia/canary-1b"):  # the hub model is not even looked up (offline: not cached)
        with pytest.raises(InvalidModelError) as error:
            registry(tmp_path).get(name)
        assert str(error.value) == f"The model '{name}' cannot be loaded: {aviary.engine.registry.NEMO_MISSING}."
    monkeypatch.undo()

    def half_installed(source: Source, path: Path) -> Engine:
        del source, path
        msg = "No module named 'nemo.collections'"
        raise ModuleNotFoundError(msg, name="nemo.collections")

    reg = Registry(Settings(offline=True, cache_dir=tmp_path / "hub", device="cpu"), loader=half_installed)
    with pytest.raises(InvalidModelError, match="NeMo engine, which is not installed"):
        reg.get(nemo_file)
    with pytest.raises(InvalidModelError, match=r"ModuleNotFoundError: No module named 'nemo\.collections'"):
        reg.get(str(MODELS / "parakeet-digits"))  # an ONNX model: whatever it lacks, it is not NeMo


def test_a_failed_load_is_not_cached(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    with pytest.raises(ModelUnavailableError):
        reg.get("parakeet")
    add_onnx_model(tmp_path / "hub", KNOWN["parakeet-tdt-0.6b-v2"].onnx_repo, MODELS / "parakeet-tdt-tiny")
    assert reg.get("parakeet").info.family == "tdt"


@pytest.mark.fixtures
def test_a_nemo_file_loads_on_the_nemo_engine(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    engine = reg.get(str(MODELS / "parakeet-digits" / "model.nemo"))
    assert (engine.info.engine, engine.info.family, engine.info.device) == ("nemo", "tdt", "cpu")
    assert engine.transcribe([clip("en-digits-3.wav")], [TranscribeOptions()])[0].text == "three one four"


def test_a_models_batcher_holds_what_its_engine_can_encode_in_parts(tmp_path: Path) -> None:
    # ONNX engines encode a batch in parts of `encoder_max_seconds`, so their batches may hold more;
    # the NeMo engine encodes a batch whole, so on the CPU its batches stop at the encoder's bound.
    reg = registry(tmp_path)
    onnx = reg.get(str(MODELS / "parakeet-digits"))
    assert reg.batcher(onnx).max_samples == 160 * SAMPLE_RATE
    settings = reg.settings
    assert settings.batch_seconds("cpu", splits=False) == 60.0
    assert settings.batch_seconds("cuda", splits=False) == 480.0
    tighter = Settings(encoder_max_seconds=30.0, batch_max_seconds=None)
    assert tighter.batch_seconds("cpu", splits=False) == 30.0
    assert Settings(batch_max_seconds=90.0).batch_seconds("cpu", splits=False) == 90.0
    reg.close()
