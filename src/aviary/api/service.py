"""What the server holds while it runs: the registry, the audio decoder, and the default model's state.

The default model loads in a worker thread at start-up, so `/health` answers at once: `loading`,
then `healthy`, or `degraded` with the reason (offline and not cached, a broken model directory).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aviary.engine.registry import Registry
from aviary.errors import AviaryError

if TYPE_CHECKING:
    from aviary.audio import IsolatedDecoder
    from aviary.config import Settings
    from aviary.engine.base import Engine

Status = Literal["loading", "healthy", "degraded"]


@dataclass(frozen=True)
class Health:
    """The default model's state as `/health` reports it."""

    status: Status
    model_name: str
    device: str | None = None
    reason: str | None = None


class Service:
    """The registry, the decoder and the default model's loading, for one running app."""

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        """Hold the parts; nothing loads until `start()`."""
        self.settings = settings
        self.registry = registry or Registry(settings)
        self.decoder: IsolatedDecoder = settings.audio_decoder()
        self._lock = threading.Lock()
        self._health = Health("loading", self._default_name())
        self._loader: threading.Thread | None = None

    def _default_name(self) -> str:
        try:
            return self.registry.resolve(self.settings.model).name
        except AviaryError:
            return self.settings.model

    def start(self) -> None:
        """Load the default model and start the decoder processes, in a background thread."""
        self._loader = threading.Thread(target=self._load_default, name="aviary-load-default", daemon=True)
        self._loader.start()

    def _load_default(self) -> None:
        try:
            engine = self.registry.get(self.settings.model)
        except AviaryError as exc:
            health = Health("degraded", self._health.model_name, reason=f"[{exc.code}] {exc}")
        else:
            health = Health("healthy", engine.info.name, device=engine.info.device)
        with self._lock:
            self._health = health
        self.decoder.warm()

    def health(self) -> Health:
        """The default model's state now."""
        with self._lock:
            return self._health

    def loaded(self) -> list[Engine]:
        """Models loaded so far."""
        return self.registry.loaded()

    def close(self, timeout: float = 30.0) -> None:
        """Wait briefly for a load in progress, then release the models and the decoder processes."""
        if self._loader is not None:
            self._loader.join(timeout)
        self.decoder.close()
        self.registry.close()
