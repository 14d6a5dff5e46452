"""The console's way to the API: HTTP calls to this very process, with the session's token.

The console shows and changes nothing the API would not: every page is built from the answers of
the public routes (``/api/v1/...``), called over loopback on the socket the browser's request came
in on, so the console gets the API's validation messages, limits, pagination and authorization
exactly as an API client does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

HTTP = web.AppKey("console_http", aiohttp.ClientSession)
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def payload(self) -> Any:
        return self.body.get("payload") if isinstance(self.body, dict) else None

    @property
    def message(self) -> str:
        """The API's error message (``Url is invalid``, ...), or the status."""
        if isinstance(self.body, dict):
            for key in ("message", "error"):
                if isinstance(self.body.get(key), str):
                    return str(self.body[key])
        return f"HTTP {self.status}"


async def http_session(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: one client session for the app's lifetime."""
    app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S), auto_decompress=True)
    yield
    await app[HTTP].close()


def _base(request: web.Request) -> str:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return f"http://{request.host}"
    host, port = sockname[0], sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Api:
    """The API as one signed-in user sees it."""

    def __init__(self, request: web.Request, token: str) -> None:
        self._http = request.app[HTTP]
        self._base = _base(request)
        self._headers = {"api_access_token": token}

    async def call(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                   body: Any = None) -> Answer:
        data = None if body is None else orjson.dumps(body)
        headers = {**self._headers, "Content-Type": "application/json"} if data is not None else self._headers
        async with self._http.request(method, self._base + path, params=query, data=data,
                                      headers=headers) as response:
            raw = await response.read()
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = None
            return Answer(response.status, parsed, response.headers)

    async def get(self, path: str, **query: str) -> Answer:
        return await self.call("GET", path, query={k: v for k, v in query.items() if v})

    async def post(self, path: str, body: Any = None) -> Answer:
        return await self.call("POST", path, body=body if body is not None else {})
