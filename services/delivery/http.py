"""The HTTP sender: one pooled aiohttp session, every attempt a POST that never raises.

Keep-alive pooling (``AKECE_HTTP_POOL_SIZE`` connections, the most recently used reused first, so
that after a burst the surplus idles and is closed after ``AKECE_HTTP_IDLE_TIMEOUT_S``: ``RecentFirstConnector``),
per-attempt connect and total timeouts,
redirects not followed (a 3xx is a failure), at most ``max_response_bytes`` of a response read,
no cookies kept between receivers, no proxy from the environment. The network guard runs at
connect time: ``GuardedResolver`` checks every address a name resolves to (after DNS, on the
connection actually made), and IP-literal hosts, which aiohttp never resolves, are checked here.

The URL is checked by the one rule the API also applies (``services.shared.urls``): one that fails it
is an ``invalid_url`` result (permanent). Every transport failure becomes an ``AttemptResult`` with a
bounded error class (``classify``) and a message naming only the error's type, errno and host
(``describe``: never the URL). An error this module does not know propagates to the worker, which
makes it the attempt's ``internal`` failure.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections import deque
from collections.abc import Mapping
from functools import lru_cache
from types import TracebackType

import aiohttp
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.tracing import Trace
from yarl import URL

from services.delivery.policy import RETRY_AFTER_STATUSES, AttemptResult, parse_retry_after
from services.shared import urls
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


def describe(exc: BaseException, host: str) -> str:
    """The error's type, errno and host, and nothing else: never the URL (its credentials, path or query
    may carry a customer's token, and exception texts repeat it, e.g. ``Can not write request body for <url>``).
    The pipeline's own errors (network guard) are written to name the host only and are kept as they are."""
    if isinstance(exc, TransportError | BlockedDestinationError):
        return str(exc)[:MESSAGE_LIMIT]
    parts = [type(exc).__name__]
    if isinstance(exc, aiohttp.ClientResponseError):
        parts.append(_response_error(exc))
    code = _errno(exc)
    if code:
        parts.append(f"errno {code} ({errno.errorcode.get(code, 'unknown')})")
    verify = _verify_message(exc)
    if verify:
        parts.append(verify)
    return f"{', '.join(parts)}, host {host}"[:MESSAGE_LIMIT]


def _response_error(exc: aiohttp.ClientResponseError) -> str:
    """What was wrong with an answer. aiohttp reports one it cannot parse (bad status line, headers too long)
    as a ClientResponseError with status 400, although no status came: name the parser's reason instead (its
    first phrase, without the receiver's bytes that follow it)."""
    if isinstance(exc.__cause__, HttpProcessingError):
        reason = str(exc.__cause__.message).split(":", 1)[0].splitlines()[0] if exc.__cause__.message else ""
        reason = "".join(c for c in reason if c.isascii() and c.isprintable())[:80].strip()
        return f"invalid response: {reason or 'not HTTP'}"
    return f"status {exc.status}"


def _errno(exc: BaseException) -> int | None:
    """The OS error number of ``exc`` or of what caused it (an SSL error's ``errno`` is OpenSSL's code, not one)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, aiohttp.ClientConnectorError) and not isinstance(seen.os_error, ssl.SSLError) \
                and seen.os_error.errno:
            return int(seen.os_error.errno)
        if isinstance(seen, OSError) and not isinstance(seen, ssl.SSLError) and isinstance(seen.errno, int) \
                and seen.errno:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return None


def _verify_message(exc: BaseException) -> str | None:
    """Why a certificate was refused (``certificate has expired``): names no URL."""
    cert = exc.certificate_error if isinstance(exc, aiohttp.ClientConnectorCertificateError) else exc
    if isinstance(cert, ssl.SSLCertVerificationError) and isinstance(cert.verify_message, str):
        return cert.verify_message[:100]
    return None


@lru_cache(maxsize=256)
def _timeout(connect_s: float, total_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s)


class RecentFirstConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that reuses the most recently released connection first.

    aiohttp reuses the least recently released one (a FIFO queue): under a steady load every pooled
    connection is used again before it idles for ``keepalive_timeout``, so a pool that filled up in a
    burst (a slow receiver, a catch-up after an outage) keeps all its connections for good. Taking the
    newest first leaves the surplus idle, and aiohttp's own keep-alive cleanup closes it.
    """

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> aiohttp.connector.Connection | None:
        conns = self._conns.get(key)
        if isinstance(conns, deque) and len(conns) > 1:
            conns.rotate(1)  # the newest (released last, at the right end) first in line
        return await super()._get(key, traces)


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
            connector = RecentFirstConnector(limit=self._settings.pool_size, limit_per_host=0,
                                             keepalive_timeout=self._settings.idle_timeout_s,
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
        try:
            target = urls.parse(url)
        except urls.InvalidUrlError as exc:  # stored before the rule, or changed since: never sendable
            return AttemptResult(error_class="invalid_url", error_message=f"invalid URL: {exc}")
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
            return AttemptResult(error_class=classify(exc), error_message=describe(exc, target.raw_host or ""),
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
