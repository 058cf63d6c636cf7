"""API keys: `Authorization: Bearer KEY` on /v1/* (and on /metrics and /dashboard/data
unless metrics are public).

/health stays open (load balancers probe it without secrets), and so do /openapi.json
(it describes the API, not its data) and the /dashboard page (it holds no data; it asks
for the key and sends it with its requests for /dashboard/data). The websocket also takes the key as its first
message, since browsers cannot set headers on a websocket.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from fastserve.runtime.frontend.errors import error_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPEN_PATHS = frozenset({"/health", "/openapi.json", "/dashboard"})
_METRICS_PATHS = frozenset({"/metrics", "/dashboard/data"})  # open with --metrics-public


class ApiKeys:
    """The accepted keys; no keys means authentication is off."""

    def __init__(self, keys: tuple[str, ...] | list[str] = ()) -> None:
        self._keys = [k.encode() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def valid(self, key: str | None) -> bool:
        """Constant-time in the key's content; every configured key is compared."""
        if not self.enabled or key is None:
            return not self.enabled
        given = key.encode("utf-8", "surrogateescape")
        ok = False
        for expected in self._keys:
            ok |= hmac.compare_digest(given, expected)
        return ok

    def valid_header(self, header: str | None) -> bool:
        return self.valid(bearer_token(header))


def bearer_token(header: str | None) -> str | None:
    """The key of an `Authorization: Bearer KEY` header (scheme case-insensitive)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def auth_error_body(given: bool) -> dict[str, Any]:
    """OpenAI's shape and wording for a missing or wrong key."""
    if given:
        message = "Incorrect API key provided. Pass a key this server accepts."
    else:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    return error_body(message, "invalid_request_error", None, "invalid_api_key")


def unauthorized(request: web.Request) -> web.Response:
    given = bearer_token(request.headers.get("Authorization")) is not None
    return web.json_response(
        auth_error_body(given), status=401, headers={"WWW-Authenticate": "Bearer"}
    )


def needs_key(path: str, metrics_public: bool) -> bool:
    if path in _OPEN_PATHS:
        return False
    if path in _METRICS_PATHS:
        return not metrics_public
    # /v1/ws checks its own key: it may come in the first message instead of a header.
    return path != "/v1/ws"


def auth_middleware(keys: ApiKeys, metrics_public: bool) -> Any:
    @web.middleware
    async def check_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if needs_key(request.path, metrics_public) and not keys.valid_header(
            request.headers.get("Authorization")
        ):
            return unauthorized(request)
        return await handler(request)

    return check_key
