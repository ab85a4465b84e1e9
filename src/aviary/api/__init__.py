"""The HTTP API: `create_app(settings)` builds the FastAPI app; its lifespan owns models and decoders.

Nothing happens on import or on `create_app()`: the lifespan starts loading the default model (in a
thread, so `/health` answers `loading` meanwhile) and stops everything on shutdown.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from aviary import __version__

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aviary.config import Settings
    from aviary.engine.registry import Registry

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, *, registry: Registry | None = None) -> FastAPI:
    """The app for `settings` (by default read from the environment, once, here).

    `registry` replaces the one built from `settings` (tests pass one whose loader makes fakes).
    """
    from fastapi.middleware.cors import CORSMiddleware

    from aviary.api import errors, jobs, openai, seed, transcribe
    from aviary.api.auth import ApiKeyMiddleware
    from aviary.config import Settings

    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        from aviary.api.service import Service
        from aviary.logs import log_to_stderr

        log_to_stderr()
        service = Service(settings, registry)
        app.state.service = service
        await asyncio.to_thread(service.start)
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="Aviary", version=__version__, summary="Speech-to-text for Parakeet and Canary", lifespan=lifespan
    )
    errors.install(app)
    app.include_router(seed.router)
    app.include_router(transcribe.router)
    app.include_router(jobs.router)
    app.include_router(openai.router)
    keys = [key.get_secret_value() for key in settings.api_keys]
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    # Added last, so outermost: preflights are answered before the key check. No credentials (the seed's default).
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"])
    return app
