"""The HTTP sender: one pooled aiohttp session, every attempt a POST that never raises.

Keep-alive pooling (``AKECE_HTTP_POOL_SIZE`` connections), per-attempt connect and total timeouts,
redirects not followed (a 3xx is a failure), at most ``max_response_bytes`` of a response read,
no cookies kept between receivers, no proxy from the environment. The network guard runs at
connect time: ``GuardedResolver`` checks every address a name resolves to (after DNS, on the
connection actually made), and IP-literal hosts, which aiohttp never resolves, are checked here.

Every failure becomes an ``AttemptResult`` with a bounded error class (``classify``); an error this
module does not know propagates and crashes the worker.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Mapping
from functools import lru_cache
from types import TracebackType

import aiohttp
from yarl import URL

from services.delivery.policy import RETRY_AFTER_STATUSES, AttemptResult, parse_retry_after
from services.shared.errors import BlockedDestinationError, TransportError
from services.shared.netguard import GuardedResolver, NetworkGuard, parse_ip
from services.shared.settings import HttpSettings

MESSAGE_LIMIT = 300
LITERAL_CACHE = 65536

# Checked in order: the first matching class names the error.
_CLASSES: tuple[tuple[type[BaseException], str], ...] = (
    (BlockedDestinationError, "blocked_destination"),
    (aiohttp.ConnectionTimeoutError, "connect_timeout"),
    (asyncio.TimeoutError, "timeout"),
    (aiohttp.ClientConnectorDNSError, "dns"),
    (aiohttp.ClientConnectorCertificateError, "tls"),
    (aiohttp.ClientSSLError, "tls"),
    (ssl.SSLError, "tls"),
    (ConnectionRefusedError, "connection_refused"),
    (aiohttp.ServerDisconnectedError, "disconnected"),
    (ConnectionResetError, "connection_reset"),
    (aiohttp.ClientPayloadError, "payload_error"),
    (aiohttp.InvalidURL, "invalid_url"),
    (aiohttp.ClientResponseError, "protocol_error"),
)
HANDLED = (aiohttp.ClientError, asyncio.TimeoutError, OSError, ssl.SSLError, TransportError,
           BlockedDestinationError)


def classify(exc: BaseException) -> str:
    """A bounded error class for a transport failure."""
    if isinstance(exc, TransportError):
        return exc.error_class
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno == errno.ECONNREFUSED:
        return "connection_refused"
    for cls, name in _CLASSES:
        if isinstance(exc, cls):
            return name
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect_error"
    if isinstance(exc, OSError) and exc.errno == errno.ECONNRESET:
        return "connection_reset"
    return "client_error" if isinstance(exc, aiohttp.ClientError) else "os_error"


def _message(exc: BaseException) -> str:
    """A bounded message that never repeats the URL (its path or query may carry a customer's token)."""
    if isinstance(exc, aiohttp.InvalidURL):
        text = "invalid URL"
    elif isinstance(exc, aiohttp.ClientResponseError):
        text = f"{exc.status}: {exc.message}"
    else:
        text = str(exc) or type(exc).__name__
    return text[:MESSAGE_LIMIT]


@lru_cache(maxsize=16384)
def _url(url: str) -> URL:
    return URL(url)


@lru_cache(maxsize=256)
def _timeout(connect_s: float, total_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s)


class HttpSender:
    """``async with HttpSender(settings.http, guard) as sender: await sender.post(...)``."""

    def __init__(self, settings: HttpSettings, guard: NetworkGuard) -> None:
        self._settings = settings
        self._guard = guard
        self._session: aiohttp.ClientSession | None = None
        self._literals: dict[str, str | None] = {}  # host -> blocked reason (the guard is pure for literals)
        self.requests_in_flight = 0

    async def __aenter__(self) -> HttpSender:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._settings.pool_size, limit_per_host=0,
                                             resolver=GuardedResolver(self._guard), ttl_dns_cache=30)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                timeout=_timeout(self._settings.connect_timeout_s, self._settings.total_timeout_s))

    async def close(self) -> None:
        """Idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def blocked_literal(self, url: URL) -> str | None:
        """Why an IP-literal host is refused (aiohttp does not resolve those, so no resolver sees them)."""
        host = url.raw_host or ""
        try:
            return self._literals[host]
        except KeyError:
            pass
        reason = self._guard.blocked_reason(host) if parse_ip(host) is not None else None
        if len(self._literals) >= LITERAL_CACHE:
            self._literals.clear()
        self._literals[host] = reason
        return reason

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *,
                   connect_timeout_s: float | None = None, total_timeout_s: float | None = None) -> AttemptResult:
        """POST ``body`` to ``url``; the outcome (response or classified error), never an exception."""
        assert self._session is not None, "HttpSender not started"
        target = _url(url)
        reason = self.blocked_literal(target)
        if reason is not None:
            return AttemptResult(error_class="blocked_destination", error_message=f"{target.host}: {reason}")
        timeout = _timeout(connect_timeout_s or self._settings.connect_timeout_s,
                           total_timeout_s or self._settings.total_timeout_s)
        started = time.perf_counter()
        self.requests_in_flight += 1
        try:
            async with self._session.post(target, data=body, headers=headers, timeout=timeout,
                                          allow_redirects=False) as response:
                excerpt = await _read_capped(response, self._settings.max_response_bytes)
                retry_after = None
                if response.status in RETRY_AFTER_STATUSES:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
                return AttemptResult(status=response.status, retry_after=retry_after, body=excerpt,
                                     duration_s=time.perf_counter() - started)
        except HANDLED as exc:
            return AttemptResult(error_class=classify(exc), error_message=_message(exc),
                                 duration_s=time.perf_counter() - started)
        finally:
            self.requests_in_flight -= 1


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the body; the rest is never read (the connection is then closed)."""
    if limit <= 0:
        return b""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = await response.content.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
