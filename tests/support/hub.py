"""A fake Hugging Face cache, laid out as huggingface_hub writes it, holding fixture models."""

from __future__ import annotations

import hashlib
import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def add_to_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Put `files` (name in the repo -> local file) into `cache` as one snapshot of `repo_id`; return it.

    The layout is huggingface_hub's: `models--<org>--<name>/{blobs,snapshots/<commit>,refs/main}`, with
    snapshot entries as symlinks to content-addressed blobs.
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        blob = repo / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(source, blob)
        (snapshot / name).symlink_to(blob)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    return snapshot


def add_onnx_model(cache: Path, repo_id: str, model_dir: Path) -> Path:
    """Cache every ONNX-layout file of a fixture model directory under `repo_id`."""
    files = {p.name: p for p in model_dir.iterdir() if p.suffix in {".onnx", ".json", ".txt", ".data"}}
    return add_to_cache(cache, repo_id, files)
