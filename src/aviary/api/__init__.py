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

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for `settings` (by default read from the environment when the app starts)."""
    from aviary.api import seed

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        from aviary.api.service import Service
        from aviary.config import Settings

        service = Service(settings or Settings())
        app.state.service = service
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="Aviary", version=__version__, summary="Speech-to-text for Parakeet and Canary", lifespan=lifespan
    )
    app.include_router(seed.router)
    return app
