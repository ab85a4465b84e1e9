"""Models whose weights sit in `*.onnx.data` behind symbolic links (Hugging Face's cache), or in files with
several hard links (deduplicated stores), load with every rewrite."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from aviary.engine.graphs import load_graph
from aviary.engine.onnx import RuntimeOptions, load_onnx_engine
from aviary.engine.tdt_decoder import NumpyDecoder
from aviary.types import TranscribeOptions
from tests.support.fixtures import MODELS, canary_options, clip, golden
from tests.support.hub import add_onnx_model

if TYPE_CHECKING:
    from pathlib import Path

CPU = RuntimeOptions(device="cpu", intra_op_threads=1)


def with_external_weights(source: Path, target: Path) -> Path:
    """A copy of the model directory `source` whose graphs keep every weight in `<graph>.onnx.data`."""
    target.mkdir()
    for item in source.iterdir():
        if item.suffix == ".onnx":
            onnx.save_model(
                onnx.load(str(item)),
                str(target / item.name),
                save_as_external_data=True,
                location=f"{item.name}.data",
                size_threshold=0,
            )
        elif item.suffix in {".json", ".txt"}:
            (target / item.name).write_bytes(item.read_bytes())
    return target


@pytest.mark.parametrize("links", ["symbolic", "hard"])
@pytest.mark.parametrize("name", ["parakeet-digits", "canary-digits"])
def test_a_cached_model_with_external_weights_loads_with_every_rewrite(
    tmp_path: Path, name: str, links: str, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = add_onnx_model(
        tmp_path / "hub", f"someone/{name}-onnx", with_external_weights(MODELS / name, tmp_path / name)
    )
    assert (snapshot / "encoder-model.onnx.data").is_symlink()
    if links == "hard":  # a deduplicating store links equal files together: onnx's own reader refuses them
        for data in snapshot.glob("*.data"):
            os.link(data.resolve(), tmp_path / f"dedup-{data.name}")
        graph = load_graph(snapshot / "encoder-model.onnx")
        assert graph is not None
        with pytest.raises(onnx.checker.ValidationError, match="hard links"):
            numpy_helper.to_array(graph.model.graph.initializer[0], base_dir=str(graph.weights))
    with caplog.at_level("DEBUG", logger="aviary.engine"):
        engine = load_onnx_engine(snapshot, name, CPU)
    assert "Tabled" in caplog.text  # engine.positions read the encoder's weights through the link
    cases = golden(name)["cases"][:3]
    if name == "canary-digits":
        assert "Split decoder-model.onnx" in caplog.text  # engine.invariants: both parts find the weights
        options = [canary_options(c) for c in cases]
    else:  # the NumPy decoder read the decoder's weights through the link
        assert isinstance(engine._decoder, NumpyDecoder)  # type: ignore[attr-defined]  # noqa: SLF001
        options = [TranscribeOptions()] * len(cases)
    results = engine.transcribe([clip(c["clip"]) for c in cases], options)
    assert [list(r.tokens) for r in results] == [c["tokens"] for c in cases]


def test_external_locations_point_at_the_files_they_resolve_to(tmp_path: Path) -> None:
    snapshot = add_onnx_model(
        tmp_path / "hub", "someone/m", with_external_weights(MODELS / "parakeet-digits", tmp_path / "m")
    )
    graph = load_graph(snapshot / "encoder-model.onnx")
    assert graph is not None
    blob = (snapshot / "encoder-model.onnx.data").resolve()
    assert graph.weights == blob.parent
    locations = {e.value for t in graph.model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {blob.name}


def test_a_graph_whose_weights_leave_its_folder_or_split_across_folders_is_not_rewritten(tmp_path: Path) -> None:
    model = with_external_weights(MODELS / "parakeet-digits", tmp_path / "m") / "encoder-model.onnx"
    escaping = onnx.load(str(model), load_external_data=False)
    for tensor in escaping.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere/encoder-model.onnx.data"
    onnx.save_model(escaping, str(tmp_path / "m" / "escaping.onnx"))
    assert load_graph(tmp_path / "m" / "escaping.onnx") is None

    other = tmp_path / "other"
    other.mkdir()
    (other / "half.data").write_bytes((tmp_path / "m" / "encoder-model.onnx.data").read_bytes())
    (tmp_path / "m" / "half.data").symlink_to(other / "half.data")
    split = onnx.load(str(model), load_external_data=False)
    first = split.graph.initializer[0]
    next(e for e in first.external_data if e.key == "location").value = "half.data"
    onnx.save_model(split, str(tmp_path / "m" / "split.onnx"))
    assert load_graph(tmp_path / "m" / "split.onnx") is None


def test_graph_array_reads_external_values_as_onnx_does_and_refuses_a_short_file(tmp_path: Path) -> None:
    model = with_external_weights(MODELS / "parakeet-digits", tmp_path / "m") / "encoder-model.onnx"
    graph = load_graph(model)
    assert graph is not None
    expected = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    external = [t for t in graph.model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external
    assert {t.data_type for t in external} == {onnx.TensorProto.FLOAT}
    for tensor in graph.model.graph.initializer:
        values = graph.array(tensor)
        assert values.dtype == expected[tensor.name].dtype, tensor.name
        np.testing.assert_array_equal(values, expected[tensor.name], err_msg=tensor.name)
    data = tmp_path / "m" / "encoder-model.onnx.data"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(ValueError, match="holds"):
        graph.array(max(external, key=lambda t: int(next(e.value for e in t.external_data if e.key == "offset"))))
