"""OpenAI's official audio schemas (`tests/data/openai-audio-schemas.yaml`), as a validator for responses."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS31Validator

SPEC_FILE = Path(__file__).resolve().parents[1] / "data" / "openai-audio-schemas.yaml"


@cache
def _components() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))
    return dict(spec["components"])


def validate(schema: str, instance: object) -> None:
    """Raise `jsonschema.ValidationError` unless `instance` is valid as OpenAI's `schema`."""
    OAS31Validator({"$ref": f"#/components/schemas/{schema}", "components": _components()}).validate(instance)
