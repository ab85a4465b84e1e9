"""The Docker image, checked without a Docker engine: hadolint, its build context, and its install steps run."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from aviary.config import Settings
from tests.support.fixtures import AUDIO, MODELS
from tests.support.server import ROOT, dockerfile_instructions, free_port, server, until_settled
from tools.server_requirements import server_pins

HADOLINT = Path(sys.executable).with_name("hadolint")


def test_hadolint_passes() -> None:
    done = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_original_servers_variables_still_configure_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """`-e PORT=... -e MODEL_NAME=...`, as users of the original image (or Aspire's `env: "PORT"`) set them."""
    image_env = dict(
        pair.split("=", 1) for args in dockerfile_instructions("ENV") for pair in shlex.split(args) if "=" in pair
    )
    for name in [*os.environ, *image_env]:
        if name.startswith("AVIARY_") or name in {"PORT", "MODEL_NAME"}:
            monkeypatch.delenv(name, raising=False)
    for name, value in image_env.items():
        if name != "PATH":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("PORT", "9017")
    monkeypatch.setenv("MODEL_NAME", "parakeet-tdt-0.6b-v3")
    settings = Settings()
    assert (settings.host, settings.port, settings.model) == ("0.0.0.0", 9017, "parakeet-tdt-0.6b-v3")  # noqa: S104


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (its last matching pattern decides)."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            ignored = not negated
    return ignored


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [
        line.split()[1:-1]
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.startswith("COPY ")
    ]
    sources = [source for sources in copies for source in sources]
    assert "src" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source, patterns), source
    assert _ignored("tests/fixtures/models/parakeet-digits/encoder-model.onnx", patterns)
    assert _ignored(".venv/bin/python", patterns)


def test_the_server_requirements_are_the_locks_runtime_closure() -> None:
    lock = (ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8")
    assert (ROOT / "requirements" / "server.txt").read_text(encoding="utf-8") == server_pins(lock)
    pins = (ROOT / "requirements" / "server.txt").read_text(encoding="utf-8")
    for absent in ("torch", "nemo", "pytest", "openai"):
        assert f"\n{absent}" not in pins.lower()


def test_the_nemo_image_pins_the_locks_versions_with_pypis_cuda_torch(tmp_path: Path) -> None:
    """The nemo stage's constraints are the lock's, torch's `+cpu` build label dropped (else nothing resolves)."""
    run = next(r for r in dockerfile_instructions("RUN") if "nemo_toolkit" in r)
    derive = run.split(" && ", 1)[0].replace("/src/requirements/", f"{tmp_path}/")
    shutil.copy(ROOT / "requirements" / "lock.txt", tmp_path / "lock.txt")
    subprocess.run(derive, shell=True, check=True, timeout=30)  # noqa: S602 - the Dockerfile's own command line
    lock = (tmp_path / "lock.txt").read_text(encoding="utf-8").splitlines()
    derived = (tmp_path / "cuda.txt").read_text(encoding="utf-8").splitlines()
    assert "--constraint /src/requirements/cuda.txt" in run
    assert [line for line in derived if "+" in line.split("#")[0]] == []
    torch = next(line for line in lock if line.startswith("torch=="))
    assert torch.endswith("+cpu")
    assert derived == [line.removesuffix("+cpu") if line == torch else line for line in lock]


def test_the_image_keeps_jobs_models_and_uploads_on_its_volume() -> None:
    image_env = dict(
        pair.split("=", 1) for args in dockerfile_instructions("ENV") for pair in shlex.split(args) if "=" in pair
    )
    (volume,) = json.loads(dockerfile_instructions("VOLUME")[0])
    for name in ("AVIARY_DATA_DIR", "AVIARY_UPLOAD_DIR", "HF_HOME"):
        assert Path(image_env[name]).is_relative_to(volume), name


@pytest.mark.slow
def test_the_images_install_steps_give_a_working_server(tmp_path: Path) -> None:
    """scripts/install-server, as the Dockerfile runs it (with the CPU onnxruntime), then the server it installs."""
    prefix = tmp_path / "aviary"
    python = shutil.which("python3.11") or sys.executable
    env = {**os.environ, "PYTHON": python, "ONNXRUNTIME": "onnxruntime"}
    subprocess.run([str(ROOT / "scripts" / "install-server"), str(prefix)], env=env, check=True, timeout=900)
    check = subprocess.run([str(prefix / "bin" / "pip"), "check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout
    port = free_port()
    command = [str(prefix / "bin" / "aviary"), "serve", "--port", str(port), "--model", str(MODELS / "parakeet-digits")]
    with server(command, port, {"PYTHONPATH": ""}):
        assert until_settled(port)[-1]["status"] == "healthy"
        with (AUDIO / "en-digits-3.wav").open("rb") as file:
            response = requests.post(f"http://127.0.0.1:{port}/transcribe", files={"file": file}, timeout=60)
    assert response.json()["text"] == "three one four"
