"""What the server holds while it runs: registry, decoder, default model's state, admission of work.

The default model loads in a worker thread at start-up, so `/health` answers at once: `loading`,
then `healthy`, or `degraded` with the reason (offline and not cached, a broken model directory).

Every transcription request is admitted once its body has arrived: `workers` run at once (in
threads, never on the event loop) and `max_queue` more wait; past that the request is refused with
`ServerBusyError` (503, `Retry-After` from the recent time per request), so load turns into
refusals, never into unbounded memory. A request that comes while every place is taken is refused
before its body is read (no upload in vain), but an upload in progress holds no place: a client
sending slowly (or a slowloris) cannot keep the others' requests from running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.to_thread
import numpy as np
from starlette.requests import ClientDisconnect

from aviary.engine.longform import transcribe_source
from aviary.engine.registry import KNOWN, Registry
from aviary.engine.vad import shared_vad
from aviary.errors import AviaryError, InvalidModelError, ModelNotFoundError, ServerBusyError
from aviary.jobs import Jobs
from aviary.types import SAMPLE_RATE, TranscribeOptions

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
    from pathlib import Path

    from aviary.audio import IsolatedDecoder
    from aviary.config import Settings
    from aviary.engine.base import Engine, ModelInfo
    from aviary.types import Transcript

Status = Literal["loading", "healthy", "degraded"]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Load:
    """Requests admitted now: running on a worker, waiting for one, and the most that may wait."""

    running: int
    waiting: int
    workers: int
    max_queue: int


@dataclass(frozen=True)
class Health:
    """The default model's state as `/health` reports it."""

    status: Status
    model_name: str
    device: str | None = None
    reason: str | None = None
    device_fallback: str | None = None
    """Why the model runs on the CPU though CUDA was asked for."""
    model_loaded: bool = False
    """The default model is loaded (and warmed up): sync transcription works, whatever `status` says."""
    jobs_database: Literal["available", "unavailable"] = "available"
    """Whether the jobs database answered the last heartbeat: jobs can be submitted and read."""


class _StreamClosedError(Exception):
    """The client of a streamed transcription went away."""


class Service:
    """The registry, the decoder and the default model's loading, for one running app."""

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        """Hold the parts; nothing loads until `start()`."""
        self.settings = settings
        self.registry = registry or Registry(settings)
        self.decoder: IsolatedDecoder = settings.audio_decoder()
        self.jobs = Jobs(settings, self.registry, self.decoder)
        self._lock = threading.Lock()
        self._health = Health("loading", self._default_name())
        self._loader: threading.Thread | None = None
        self.started = int(time.time())
        """When this server began serving (Unix seconds)."""
        self._admitted = 0
        self._running = 0
        self._seconds_per_request = 1.0  # a moving average, for Retry-After
        self._inference = anyio.CapacityLimiter(settings.workers)

    def _default_name(self) -> str:
        try:
            return self.registry.resolve(self.settings.model).name
        except AviaryError:
            return self.settings.model

    def start(self) -> None:
        """Launch the job system (resuming this executor's jobs); load the default model in a background thread."""
        self.jobs.start()
        self._loader = threading.Thread(target=self._load_default, name="aviary-load-default", daemon=True)
        self._loader.start()

    def _load_default(self) -> None:
        self.decoder.warm()
        try:
            engine = self.registry.get(self.settings.model)
        except AviaryError as exc:
            health = Health("degraded", self._health.model_name, reason=f"[{exc.code}] {exc}")
            broken = isinstance(exc, InvalidModelError)  # its files failed to load: the operator needs the why
            logger.warning("The default model is not served: %s", health.reason, exc_info=broken)
        except Exception as exc:  # whatever stops the load, health must say so rather than "loading" forever
            logger.exception("Loading the default model failed")
            health = Health("degraded", self._health.model_name, reason=f"[internal_error] {type(exc).__name__}: {exc}")
        else:
            if self.settings.warm_up:
                self._warm_up(engine)
            info = engine.info
            health = Health("healthy", info.name, device=info.device, device_fallback=info.fallback, model_loaded=True)
        with self._lock:
            self._health = health

    def _warm_up(self, engine: Engine) -> None:
        """Transcribe a chunk of silence once, and score it with the VAD, before the first request does.

        The first run of an onnxruntime session grows its memory arena (and on CUDA loads libraries and
        kernels): measured through HTTP on the CPU (real-size Parakeet, 8 s WAV), the first request
        took 3.2 s and the next ones 1.2-1.3 s. A failure here is logged; the model is still served.
        """
        silence = np.zeros(int(self.settings.chunk_seconds * SAMPLE_RATE), dtype=np.float32)
        started = time.monotonic()
        try:
            shared_vad().probabilities(silence)
            engine.transcribe([silence], [TranscribeOptions()])
        except AviaryError as exc:
            logger.warning("Warming up %s failed: [%s] %s", engine.info.name, exc.code, exc)
        finally:
            engine.release_memory()
        logger.info("Warmed up %s in %.1f s", engine.info.name, time.monotonic() - started)

    def health(self) -> Health:
        """The default model's state now; `degraded` also while the jobs database does not answer."""
        with self._lock:
            health = self._health
        problem = self.jobs.database_problem()
        if problem is None:
            return health
        why = f"[database_unavailable] the jobs database does not answer: {problem}"
        return replace(
            health,
            status="degraded" if health.status == "healthy" else health.status,
            reason=why if health.reason is None else f"{health.reason}; {why}",
            jobs_database="unavailable",
        )

    def loaded(self) -> list[Engine]:
        """Models loaded so far."""
        return self.registry.loaded()

    def load(self) -> Load:
        """How many requests run and wait now."""
        return Load(self._running, self._admitted - self._running, self.settings.workers, self.settings.max_queue)

    def check_room(self) -> None:
        """Refuse a request now if every place is taken (call on the event loop); reserves nothing.

        Raises:
            ServerBusyError: `workers + max_queue` requests are already admitted.
        """
        settings = self.settings
        if self._admitted >= settings.workers + settings.max_queue:
            waves = (self._admitted - self._running) / settings.workers + 1
            raise ServerBusyError(max(1, math.ceil(waves * self._seconds_per_request)))

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for one request (call on the event loop), or refuse it when every place is taken.

        Raises:
            ServerBusyError: `workers + max_queue` requests are already admitted.
        """
        self.check_room()
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    def api_model(self, name: str) -> str:
        """The model an API request may name: an alias, a registry name, or the configured default.

        Clients cannot make the server load arbitrary directories or hub repositories.

        Raises:
            ModelNotFoundError: any other name.
        """
        allowed = {*self.settings.aliases, *KNOWN, self.settings.model}
        if name.strip() not in allowed:
            raise ModelNotFoundError(name, tuple(sorted({*self.settings.aliases, *KNOWN})))
        return name.strip()

    async def engine(self, name: str) -> Engine:
        """The loaded engine for `name` (loading it in a thread on first use)."""
        return await anyio.to_thread.run_sync(self.registry.get, name)  # the registry loads each model once

    async def engine_for(
        self, name: str, options: Callable[[ModelInfo], TranscribeOptions], *, called: str | None = None
    ) -> tuple[Engine, TranscribeOptions]:
        """The engine for `name` and the `options` it gets, checked before a registry model is fetched or loaded.

        Refusals name the model `called` (default `name`): what the client asked for, never a server path.

        Raises:
            RequestError: the model cannot honour the options (a language it does not speak, say):
                refused before gigabytes are downloaded for nothing.
        """
        known = self.registry.describe(name)
        if known is not None:
            known.check(options(known), called=called or name)
        engine = await self.engine(name)
        chosen = options(engine.info)
        engine.info.check(chosen, called=called or name)
        return engine, chosen

    async def transcribe(
        self,
        engine: Engine,
        path: Path,
        options: TranscribeOptions,
        *,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> Transcript:
        """Decode the file at `path` as a stream and transcribe it chunk by chunk, off the event loop.

        Chunks go to the model's batcher, shared with every other request and job. Decoding
        happens inside the worker slot, so at most `workers` requests hold decoded audio (each at
        most its chunks in flight): waiting requests hold only their upload, on disk.

        `disconnected` returns when the client has gone: the chunks still waiting are then
        withdrawn, no more are sent, and `ClientDisconnect` is raised (a long file stops at the
        batch running now instead of being transcribed for nobody).
        """
        engine.info.check(options)
        batcher = self.registry.batcher(engine)
        chunking = self.settings.chunking(engine.info)
        owner, gone = object(), threading.Event()

        async def watch(until: Callable[[], Awaitable[object]]) -> None:
            await until()
            gone.set()
            batcher.cancel(owner)

        async with self._inference:
            self._running += 1
            started = time.monotonic()
            watcher = asyncio.ensure_future(watch(disconnected)) if disconnected is not None else None
            try:
                return await anyio.to_thread.run_sync(
                    functools.partial(
                        transcribe_source, self.decoder, batcher, path, options, chunking, owner=owner, stop=gone
                    )
                )
            except concurrent.futures.CancelledError:
                if gone.is_set():
                    raise ClientDisconnect from None
                raise
            finally:
                if watcher is not None:
                    watcher.cancel()
                self._running -= 1
                elapsed = time.monotonic() - started
                self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * elapsed

    async def transcribe_parts(
        self, engine: Engine, path: Path, options: TranscribeOptions
    ) -> AsyncGenerator[tuple[bool, Transcript]]:
        """As `transcribe`, streaming: `(False, part)` for each chunk as it is ready, then `(True, whole)`.

        The worker slot is held until the generator ends; closing it early stops the transcription
        before its next chunk.
        """
        engine.info.check(options)
        batcher = self.registry.batcher(engine)
        chunking = self.settings.chunking(engine.info)
        loop = asyncio.get_running_loop()
        ready: asyncio.Queue[tuple[bool, Transcript] | BaseException] = asyncio.Queue()
        stopped = threading.Event()

        def tell(item: tuple[bool, Transcript] | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
                loop.call_soon_threadsafe(ready.put_nowait, item)

        def on_part(part: Transcript) -> None:
            if stopped.is_set():
                raise _StreamClosedError
            tell((False, part))

        borrower = object()  # the slot is taken in the request's task and may be given back in the response's

        def work() -> None:
            try:
                whole = transcribe_source(
                    self.decoder, batcher, path, options, chunking, owner=borrower, on_part=on_part, stop=stopped
                )
            except BaseException as exc:  # noqa: BLE001  (handed to the request, which raises it)
                tell(exc)
            else:
                tell((True, whole))

        await self._inference.acquire_on_behalf_of(borrower)
        self._running += 1
        threading.Thread(target=work, name="aviary-stream", daemon=True).start()
        try:
            while True:
                item = await ready.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item[0]:
                    return
        finally:
            stopped.set()
            batcher.cancel(borrower)  # a client that went away: its chunks still waiting never run
            self._running -= 1
            self._inference.release_on_behalf_of(borrower)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the job system, wait briefly for a load in progress, release the models and decoder processes."""
        self.jobs.close()
        if self._loader is not None:
            self._loader.join(timeout)
        self.decoder.close()
        self.registry.close()
