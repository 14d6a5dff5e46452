"""What the operations routes read from a request, and how they refuse one: each refusal is the
status and JSON body the caller gets (400 for bad input, naming it; 404 revealing nothing; 429 with
Retry-After when an account runs too many topic scans at once)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from services.shared.auth import NOT_FOUND
from services.shared.digits import ascii_int

MAX_LIMIT = 1000


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


class Refusal(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.headers = headers or {}


def not_found() -> Refusal:
    return Refusal(404, {"error": NOT_FOUND})


def bad(message: str) -> Refusal:
    return Refusal(400, {"error": "Bad Request", "message": message})


class ScanSlots:
    """At most ``limit`` topic scans per account at once; one more is refused (429), never queued."""

    RETRY_AFTER_S = 2

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: dict[int, int] = {}

    @asynccontextmanager
    async def slot(self, account_id: int) -> AsyncIterator[None]:
        if self.running.get(account_id, 0) >= self.limit:
            raise Refusal(429, {"error": f"Too many scans: at most {self.limit} at once per account; "
                                          "try again shortly"}, {"Retry-After": str(self.RETRY_AFTER_S)})
        self.running[account_id] = self.running.get(account_id, 0) + 1
        try:
            yield
        finally:
            self.running[account_id] -= 1
            if not self.running[account_id]:
                del self.running[account_id]


async def read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad("the body is not JSON") from None
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object")
    return body


def body_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise bad(f"{name} must be a string")


def body_flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad(f"{name} must be true or false")
    return value


def body_rate(body: dict[str, Any]) -> float | None:
    value = body.get("rate")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise bad("rate must be a positive number (records per second)")
    return float(value)


def body_limit(body: dict[str, Any]) -> int:
    """A run's ``limit``: at most this many records now (0 or absent: all)."""
    value = body.get("limit")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad("limit must be a whole number of records, 0 or more (0: all)")
    return value


def query_limit(request: web.Request) -> int:
    limit = ascii_int(request.query.get("limit", "100"), digits=9)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise bad(f"limit must be 1..{MAX_LIMIT}")
    return limit


__all__ = ["MAX_LIMIT", "Refusal", "ScanSlots", "bad", "body_flag", "body_limit", "body_rate", "body_str",
           "json_response", "not_found", "query_limit", "read_body"]
