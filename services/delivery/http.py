"""The HTTP sender: every attempt a POST that never raises.

Keep-alive pooling (``AKECE_HTTP_POOL_SIZE`` connections in use at most, the most recently used reused
first, idle ones closed after ``AKECE_HTTP_IDLE_TIMEOUT_S``: ``http_pool``), per-attempt connect and total
timeouts, redirects not followed (a 3xx is a failure), at most ``max_response_bytes`` of a response
read (``http_wire``), no cookies, no proxy from the environment. The network guard runs at connect
time: every address a name resolves to is checked (after DNS, on the connection actually made), and
IP-literal hosts are checked here.

The client is this package's own HTTP/1.1 client on asyncio with llhttp as its parser (``http_wire``):
it does what one attempt needs and no more, at a third of aiohttp's client's CPU per request (measured
in docs/performance.md); the API and the receivers in tests still use aiohttp.

The URL is checked by the one rule the API also applies (``services.shared.urls``): one that fails it
is an ``invalid_url`` result (permanent). Every transport failure becomes an ``AttemptResult`` with a
bounded error class (``classify``) and a message naming only the error's type, errno and host
(``describe``: never the URL). An error this module does not know propagates to the worker, which
makes it the attempt's ``internal`` failure.
"""

from __future__ import annotations

import errno
import ssl
import time
from collections.abc import Mapping
from types import TracebackType

from yarl import URL

from services.delivery.http_pool import Pool
from services.delivery.http_wire import request_bytes, request_head
from services.delivery.policy import RETRY_AFTER_STATUSES, AttemptResult, parse_retry_after
from services.shared import urls
from services.shared.errors import BlockedDestinationError, TransportError
from services.shared.netguard import NetworkGuard, parse_ip
from services.shared.settings import HttpSettings

MESSAGE_LIMIT = 300
LITERAL_CACHE = 65536

# Checked in order: the first matching class names the error.
_CLASSES: tuple[tuple[type[BaseException], str], ...] = (
    (BlockedDestinationError, "blocked_destination"),
    (TimeoutError, "timeout"),
    (ssl.SSLError, "tls"),
    (ConnectionRefusedError, "connection_refused"),
    (ConnectionResetError, "connection_reset"),
)
HANDLED = (TimeoutError, OSError, TransportError, BlockedDestinationError)


def classify(exc: BaseException) -> str:
    """A bounded error class for a transport failure."""
    if isinstance(exc, TransportError):
        return exc.error_class
    for cls, name in _CLASSES:
        if isinstance(exc, cls):
            return name
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return "connection_refused"
    if isinstance(exc, OSError) and exc.errno == errno.ECONNRESET:
        return "connection_reset"
    return "connect_error" if isinstance(exc, OSError) else "os_error"


def describe(exc: BaseException, host: str) -> str:
    """The error's type, errno and host, and nothing else: never the URL (its credentials, path or query
    may carry a customer's token, and exception texts repeat it, e.g. ``Can not write request body for <url>``).
    The pipeline's own errors (network guard) are written to name the host only and are kept as they are."""
    if isinstance(exc, TransportError | BlockedDestinationError):
        return str(exc)[:MESSAGE_LIMIT]
    parts = [type(exc).__name__]
    code = _errno(exc)
    if code:
        parts.append(f"errno {code} ({errno.errorcode.get(code, 'unknown')})")
    verify = _verify_message(exc)
    if verify:
        parts.append(verify)
    return f"{', '.join(parts)}, host {host}"[:MESSAGE_LIMIT]


def _errno(exc: BaseException) -> int | None:
    """The OS error number of ``exc`` or of what caused it (an SSL error's ``errno`` is OpenSSL's code, not one)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, OSError) and not isinstance(seen, ssl.SSLError) and isinstance(seen.errno, int) \
                and seen.errno:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return None


def _verify_message(exc: BaseException) -> str | None:
    """Why a certificate was refused (``certificate has expired``): names no URL."""
    if isinstance(exc, ssl.SSLCertVerificationError) and isinstance(exc.verify_message, str):
        return exc.verify_message[:100]
    return None


class HttpSender:
    """``async with HttpSender(settings.http, guard) as sender: await sender.post(...)``."""

    def __init__(self, settings: HttpSettings, guard: NetworkGuard) -> None:
        self._settings = settings
        self._guard = guard
        self._pool: Pool | None = None
        self._literals: dict[str, str | None] = {}  # host -> blocked reason (the guard is pure for literals)
        self.requests_in_flight = 0

    async def __aenter__(self) -> HttpSender:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        if self._pool is None:
            self._pool = Pool(self._guard, limit=self._settings.pool_size, idle_timeout_s=self._settings.idle_timeout_s)

    async def close(self) -> None:
        """Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def blocked_literal(self, url: URL) -> str | None:
        """Why an IP-literal host is refused (the pool resolves only names)."""
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
        assert self._pool is not None, "HttpSender not started"
        try:
            target = urls.parse(url)
        except urls.InvalidUrlError as exc:  # stored before the rule, or changed since: never sendable
            return AttemptResult(error_class="invalid_url", error_message=f"invalid URL: {exc}")
        reason = self.blocked_literal(target)
        if reason is not None:
            return AttemptResult(error_class="blocked_destination", error_message=f"{target.host}: {reason}")
        data = request_bytes(request_head(target), headers, len(body))
        host = target.raw_host or ""
        origin = (target.scheme == "https", host, target.port or 80)
        started = time.perf_counter()
        self.requests_in_flight += 1
        try:
            response = await self._pool.exchange(
                origin, data, body, body_limit=self._settings.max_response_bytes,
                connect_timeout_s=connect_timeout_s or self._settings.connect_timeout_s,
                total_timeout_s=total_timeout_s or self._settings.total_timeout_s)
        except HANDLED as exc:
            return AttemptResult(error_class=classify(exc), error_message=describe(exc, host),
                                 duration_s=time.perf_counter() - started)
        finally:
            self.requests_in_flight -= 1
        retry_after = None
        if response.status in RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(response.retry_after, time.time())
        return AttemptResult(status=response.status, retry_after=retry_after, body=response.body,
                             duration_s=time.perf_counter() - started)
