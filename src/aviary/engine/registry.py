"""The model registry: a name, hub repository, directory or `.nemo` file -> one loaded, shared engine.

Names resolve in this order: an alias (`parakeet`, `canary`, configurable), a registry name
(`parakeet-tdt-0.6b-v2`, ...), an existing local path (a directory in the onnx-asr layout, or a
`.nemo` file), then a hub repository id (`nvidia/...` ids of registry models map to that model; other
`*-onnx` repos run on onnxruntime, the rest on NeMo). Hub files come through huggingface_hub into the
standard cache; offline, a model that is not cached raises `ModelUnavailableError` saying what to do.
Each model loads once, even when many threads ask for it at the same time.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from aviary.engine.base import ModelInfo
from aviary.engine.batcher import Batcher
from aviary.engine.onnx import RuntimeOptions, load_onnx_engine
from aviary.errors import AviaryError, InvalidModelError, ModelNotFoundError, ModelUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from aviary.config import Settings
    from aviary.engine.base import Engine, EngineName, Family
    from aviary.types import TranscribeOptions

EUROPEAN = (
    "bg", "cs", "da", "de", "el", "en", "es", "et", "fi", "fr", "hr", "hu", "it",
    "lt", "lv", "mt", "nl", "pl", "pt", "ro", "ru", "sk", "sl", "sv", "uk",
)  # fmt: skip
FLASH = ("de", "en", "es", "fr")
logger = logging.getLogger(__name__)
NEMO_MISSING = (
    "it runs on the NeMo engine, which is not installed here: install torch, then `pip install 'aviary-asr[nemo]'` "
    "(Docker: build the image's `nemo` target)"
)


@dataclass(frozen=True)
class KnownModel:
    """A model Aviary knows by name, with its ONNX and NeMo repositories."""

    name: str
    onnx_repo: str
    nemo_repo: str
    languages: tuple[str, ...]
    description: str

    @property
    def info(self) -> ModelInfo:
        """What the model can do, as its loaded engine will say (its device aside), known before fetching it."""
        family: Family = "aed" if self.name.startswith("canary") else "tdt"
        aed = family == "aed"
        return ModelInfo(self.name, "onnx", family, "cpu", self.languages, translation=aed, timestamps=not aed)

    def check(self, options: TranscribeOptions) -> None:
        """Raise the `RequestError` the loaded model would raise for `options` (before fetching or loading it)."""
        self.info.check(options)


KNOWN: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            "parakeet-tdt-0.6b-v2",
            "istupakov/parakeet-tdt-0.6b-v2-onnx",
            "nvidia/parakeet-tdt-0.6b-v2",
            ("en",),
            "Parakeet TDT 0.6B v2: English, punctuation, word times",
        ),
        KnownModel(
            "parakeet-tdt-0.6b-v3",
            "istupakov/parakeet-tdt-0.6b-v3-onnx",
            "nvidia/parakeet-tdt-0.6b-v3",
            EUROPEAN,
            "Parakeet TDT 0.6B v3: 25 European languages, detected automatically",
        ),
        KnownModel(
            "canary-1b-v2",
            "istupakov/canary-1b-v2-onnx",
            "nvidia/canary-1b-v2",
            EUROPEAN,
            "Canary 1B v2: 25 European languages, translation to and from English",
        ),
        KnownModel(
            "canary-1b-flash",
            "istupakov/canary-1b-flash-onnx",
            "nvidia/canary-1b-flash",
            FLASH,
            "Canary 1B Flash: en/de/es/fr, translation to and from English",
        ),
        KnownModel(
            "canary-180m-flash",
            "istupakov/canary-180m-flash-onnx",
            "nvidia/canary-180m-flash",
            FLASH,
            "Canary 180M Flash: en/de/es/fr, translation to and from English",
        ),
    )
}
SourceKind = Literal["hub", "directory", "nemo-file"]


@dataclass(frozen=True)
class Source:
    """Where a requested model comes from."""

    name: str
    """The name transcripts report: the registry name, or the path or repository as given."""
    engine: EngineName
    kind: SourceKind
    location: str
    """A repository id or a filesystem path."""
    known: KnownModel | None = None


def onnx_patterns(quantization: str | None) -> list[str]:
    """Hub files an ONNX model needs: config, vocabulary, and the model files of one precision."""
    suffix = f".{quantization}" if quantization else ""
    return ["config.json", "vocab.txt", f"*-model{suffix}.onnx", f"*-model{suffix}.onnx.data"]


class Registry:
    """Resolves model names and keeps one loaded engine per model."""

    def __init__(self, settings: Settings, loader: Callable[[Source, Path], Engine] | None = None) -> None:
        """Use `settings` for resolution and devices; `loader` replaces engine construction (tests, fakes)."""
        self.settings = settings
        self._loader = loader or self._load
        self._engines: dict[Source, Engine] = {}
        self._batchers: dict[int, Batcher] = {}  # by id() of an engine they keep alive
        self._locks: dict[Source, threading.Lock] = {}
        self._guard = threading.Lock()

    def resolve(self, name: str) -> Source:
        """Turn a requested name into a `Source` (no I/O beyond checking local paths).

        Raises:
            ModelNotFoundError: nothing of that name exists.
            InvalidModelError: the name is a file that cannot be a model.
        """
        requested = self.settings.aliases.get(name, name).strip()
        if not requested:
            raise ModelNotFoundError(name, (*self.settings.aliases, *KNOWN))
        if requested in KNOWN:
            return self._known(KNOWN[requested])
        path = Path(requested).expanduser()
        if path.is_dir():
            nemo_files = list(path.glob("*.nemo")) if self.settings.engine == "nemo" else []
            if len(nemo_files) == 1:  # the NeMo engine asked for: the directory's own .nemo file
                return Source(requested, "nemo", "nemo-file", str(nemo_files[0]))
            return Source(requested, "onnx", "directory", str(path))
        if path.is_file() and path.suffix == ".nemo":
            return Source(requested, "nemo", "nemo-file", str(path))
        if path.is_file():
            reason = "it is a file but not a .nemo file (a model is a directory of ONNX files, or a .nemo file)"
            raise InvalidModelError(requested, reason)
        parts = requested.split("/")
        if len(parts) == 2 and all(parts) and not requested.startswith((".", "~")) and path.suffix != ".nemo":  # noqa: PLR2004
            known = next((m for m in KNOWN.values() if requested in {m.nemo_repo, m.onnx_repo}), None)
            if known is not None:
                return self._known(known)
            if not _valid_repo_id(requested):
                raise ModelNotFoundError(name, (*self.settings.aliases, *KNOWN))
            engine: EngineName = "onnx" if requested.endswith("-onnx") else "nemo"
            return Source(requested, engine, "hub", requested)
        raise ModelNotFoundError(name, (*self.settings.aliases, *KNOWN))

    def _known(self, model: KnownModel) -> Source:
        engine = self.settings.engine
        return Source(model.name, engine, "hub", model.onnx_repo if engine == "onnx" else model.nemo_repo, model)

    def get(self, name: str) -> Engine:
        """The loaded engine for `name`, loading it on first use (once, however many threads ask).

        A load that fails is tried again by the next caller.

        Raises:
            ModelError: the model does not exist, is not available, or its files do not load (any
                other failure of the loader becomes `InvalidModelError`, with the failure as its cause).
        """
        source = self.resolve(name)
        with self._guard:
            if source in self._engines:
                return self._engines[source]
            lock = self._locks.setdefault(source, threading.Lock())
        with lock:
            if source not in self._engines:
                engine = self._load_source(source)
                longest = engine.info.max_seconds
                if longest is not None and longest < self.settings.chunk_seconds:
                    logger.warning(
                        "%s takes at most %.1f s of audio in one piece: its chunks are that long, not %.0f s "
                        "(AVIARY_CHUNK_SECONDS)",
                        source.name,
                        longest,
                        self.settings.chunk_seconds,
                    )
                with self._guard:
                    self._engines[source] = engine
        return self._engines[source]

    def _load_source(self, source: Source) -> Engine:
        if source.engine == "nemo" and not nemo_installed():  # before downloading gigabytes it cannot run
            raise InvalidModelError(source.name, NEMO_MISSING)
        path = self.fetch(source)
        try:
            return self._loader(source, path)
        except AviaryError:
            raise
        except Exception as exc:
            missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in {"nemo", "torch"}
            if missing and source.engine == "nemo":
                raise InvalidModelError(source.name, NEMO_MISSING) from exc
            logger.debug("Loading the model %s from %s failed", source.name, path, exc_info=True)
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            reason = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
            raise InvalidModelError(source.name, reason) from exc

    def batcher(self, engine: Engine) -> Batcher:
        """The one batcher of a loaded `engine` (started on first use): every caller shares it."""
        with self._guard:
            if id(engine) not in self._batchers:
                settings = self.settings
                self._batchers[id(engine)] = Batcher(
                    engine,
                    max_batch=settings.batch_size,
                    max_wait=settings.batch_wait_ms / 1000,
                    max_seconds=settings.batch_seconds(engine.info.device, splits=engine.info.engine == "onnx"),
                )
            return self._batchers[id(engine)]

    def batchers(self) -> list[Batcher]:
        """The batchers started so far."""
        with self._guard:
            return list(self._batchers.values())

    def describe(self, name: str) -> ModelInfo | None:
        """What the model `name` can do, without loading it; None for a path or repository not loaded yet.

        A loaded model's engine says; a registry model not loaded yet is described by the registry.

        Raises:
            ModelNotFoundError: nothing of that name exists.
        """
        source = self.resolve(name)
        with self._guard:
            engine = self._engines.get(source)
        if engine is not None:
            return engine.info
        return source.known.info if source.known is not None else None

    def loaded(self) -> list[Engine]:
        """Engines loaded so far."""
        with self._guard:
            return list(self._engines.values())

    def fetch(self, source: Source, *, download: bool | None = None) -> Path:
        """The local path of `source`'s files, downloading hub files into the HF cache unless offline.

        Raises:
            ModelUnavailableError: not cached and downloading is off or failed.
            ModelNotFoundError: the hub has no such repository.
        """
        if source.kind != "hub":
            return Path(source.location)
        from huggingface_hub import constants as hf_constants
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

        offline = self.settings.offline if download is None else not download
        patterns = onnx_patterns(self.settings.quantization) if source.engine == "onnx" else ["*.nemo"]
        try:
            folder = snapshot_download(
                source.location, allow_patterns=patterns, cache_dir=self.settings.cache_dir, local_files_only=offline
            )
        except RepositoryNotFoundError as exc:
            raise ModelNotFoundError(source.location) from exc
        except LocalEntryNotFoundError as exc:
            reason = (
                "it is not in the Hugging Face cache and downloads are off"
                if offline or hf_constants.HF_HUB_OFFLINE
                else f"it is not in the Hugging Face cache and downloading {source.location} failed (no connection)"
            )
            raise ModelUnavailableError(source.name, reason, engine=source.engine) from exc
        except (HfHubHTTPError, OSError) as exc:
            failed = f"downloading {source.location} failed"
            raise ModelUnavailableError(source.name, failed, engine=source.engine) from exc
        if source.engine == "nemo":
            return next(Path(folder).glob("*.nemo"), Path(folder))
        return Path(folder)

    def is_cached(self, source: Source) -> bool:
        """Whether `source`'s files are on this machine (no network)."""
        try:
            self.fetch(source, download=False)
        except (ModelUnavailableError, ModelNotFoundError):
            return False
        return True

    def close(self) -> None:
        """Stop every batcher (failing what waits), then close every loaded engine."""
        with self._guard:
            batchers, self._batchers = list(self._batchers.values()), {}
            engines, self._engines = list(self._engines.values()), {}
        for batcher in batchers:
            batcher.close()
        for engine in engines:
            engine.close()

    def _load(self, source: Source, path: Path) -> Engine:
        settings = self.settings
        languages = source.known.languages if source.known else ()
        if source.engine == "nemo":
            from aviary.engine.nemo import load_nemo_engine

            return load_nemo_engine(
                path, source.name, device=settings.device, languages=languages, threads=settings.threads
            )
        options = RuntimeOptions(
            device=settings.device,
            intra_op_threads=settings.threads,
            quantization=settings.quantization,
            encoder_max_seconds=settings.encoder_max_seconds,
            # Every input the engine sees is at most a chunk long; beyond a minute the tables' memory
            # (2.5 MB per second for Parakeet 0.6B) outweighs their few percent.
            position_seconds=min(settings.chunk_seconds, 60.0),
        )
        return load_onnx_engine(path, source.name, options, languages=languages)


def _valid_repo_id(repo_id: str) -> bool:
    """Whether the hub would accept `repo_id` (its own check: characters, `--`, `..`, length)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # exported lazily

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


def nemo_installed() -> bool:
    """Whether NeMo and torch can be imported here (looked up, not imported: importing NeMo takes seconds)."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in ("nemo", "torch"))
