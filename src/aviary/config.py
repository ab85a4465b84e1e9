"""Settings: one pydantic-settings object, read from `AVIARY_*` environment variables (or a mapping).

Nothing reads the environment at import time: `Settings()` is built by the CLI's `main()` or the app
factory and passed down. Tests pass values directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ALIASES = {"parakeet": "parakeet-tdt-0.6b-v2", "canary": "canary-1b-v2"}


class Settings(BaseSettings):
    """Every knob of Aviary, with defaults that run a single machine with no configuration."""

    model_config = SettingsConfigDict(env_prefix="AVIARY_", env_nested_delimiter="__", extra="ignore")

    model: str = Field(default="parakeet-tdt-0.6b-v2", description="The default model: loaded at start-up.")
    engine: Literal["onnx", "nemo"] = Field(
        default="onnx", description="Engine for registry names: onnxruntime (default) or NeMo (needs the nemo extra)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where models run; auto prefers CUDA.")
    threads: int = Field(default=0, ge=0, description="CPU threads per inference (0: all cores).")
    quantization: str | None = Field(default=None, description="Use `*.<quantization>.onnx` files, e.g. int8.")
    aliases: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ALIASES), description="Short model names and what they stand for."
    )
    offline: bool = Field(default=False, description="Never download; only use models already cached or on disk.")
    cache_dir: Path | None = Field(default=None, description="Hugging Face cache directory (default: HF_HOME's).")

    @field_validator("aliases", mode="after")
    @classmethod
    def _keep_default_aliases(cls, aliases: dict[str, str]) -> dict[str, str]:
        """Configured aliases add to or override the defaults; they never silently drop one."""
        return {**DEFAULT_ALIASES, **aliases}
