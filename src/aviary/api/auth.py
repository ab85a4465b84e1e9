"""API keys: with `api_keys` set, every request but health and docs needs `Authorization: Bearer <key>`.

A pure ASGI middleware, so it guards every route, present and future, before any body is read. Keys
are compared in constant time against every configured key (the time taken says nothing about which
key, or how much of one, matched). Browsers' CORS preflights pass: the CORS middleware outside this
one answers them.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Final

from starlette.responses import JSONResponse

from aviary.api.errors import error_body, route_path
from aviary.errors import AuthenticationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["OPEN_PATHS", "ApiKeyMiddleware"]

OPEN_PATHS: Final = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
"""Paths that answer without a key: health checks (the AppHost's, Docker's) and the API docs."""


class ApiKeyMiddleware:
    """Refuse requests without one of `keys` with 401 `invalid_api_key`."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        """Guard `app` with `keys` (none: every request passes)."""
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass authorised requests and lifespan events on; answer the rest with 401."""
        if scope["type"] != "http" or not self.keys or route_path(scope) in OPEN_PATHS or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        error = AuthenticationError()
        body = error_body(str(error), error.code, 401)
        await JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        matched = False
        for key in self.keys:  # every key is compared, whatever matched
            matched |= hmac.compare_digest(token, key)
        return scheme.lower() == b"bearer" and matched
