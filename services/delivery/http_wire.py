"""One HTTP/1.1 connection of the delivery sender: write a POST, read its answer, bounded.

``Connection`` is an asyncio protocol around llhttp (``httptools``), the parser Node.js uses. A request
is the bytes ``request_head`` builds plus the body; the answer is a ``Response``: its status, its first
``Retry-After`` value, at most ``body_limit`` bytes of its body, and whether the connection may be
used again. Everything a receiver can do wrong ends the exchange with a ``TransportError`` naming the
error class and the host, never the receiver's bytes:

- not HTTP, a status that is not three ASCII digits, a header with a NUL: ``protocol_error``
  (``invalid response: <llhttp's reason>``)
- one header longer than ``FIELD_LIMIT``, or more than ``HEAD_LIMIT`` bytes of headers: ``protocol_error``
- the connection closed or reset before the answer, or in the middle of a declared body:
  ``disconnected``, ``connection_reset``, ``payload_error``

A body longer than ``body_limit`` is not read further: the exchange ends with what was read and the
connection is closed (an endless or huge body costs ``body_limit`` bytes, not more). The sender asks
for no content coding, so a body is used as it comes; a receiver that compresses anyway has its
excerpt decompressed, bounded by ``body_limit`` too (``excerpt``): a gzip bomb costs the same.
Interim answers (``100 Continue``, ``103 Early Hints``) are skipped; bytes that arrive while no request
is out (a receiver talking out of turn) close the connection.
"""

from __future__ import annotations

import asyncio
import base64
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import httptools
from yarl import URL

from services.shared.errors import TransportError

HEAD_LIMIT = 65536  # status line and headers
FIELD_LIMIT = 8190  # one header, name and value (aiohttp's and most servers' bound)
_HEAD_TOO_LONG = f"more than {HEAD_LIMIT} bytes of headers"
_FIELD_TOO_LONG = f"a header longer than {FIELD_LIMIT} bytes"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    retry_after: str | None
    body: bytes
    reusable: bool


@lru_cache(maxsize=4096)
def request_head(target: URL) -> bytes:
    """``POST <path> HTTP/1.1``, ``Host`` and, for credentials in the URL, ``Authorization`` (Basic)."""
    lines = [f"POST {target.raw_path_qs or '/'} HTTP/1.1", f"Host: {target.host_port_subcomponent}"]
    if target.raw_user is not None:
        credentials = f"{target.user or ''}:{target.password or ''}".encode("latin-1")  # the URL rule: Latin-1 only
        lines.append(f"Authorization: Basic {base64.b64encode(credentials).decode('ascii')}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def request_bytes(head: bytes, headers: Mapping[str, str], length: int) -> bytes:
    """The head of one request: ``head``, the attempt's ``headers`` and ``Content-Length``.

    Raises ``ValueError`` for a header that would break the message (a line break in a name or value)."""
    text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError("a request header contains a line break")
    return b"".join((head, text.encode("latin-1"), b"Content-Length: %d\r\n\r\n" % length))


def excerpt(body: bytes, coding: str | None, limit: int) -> bytes:
    """``body`` as the receiver meant it, at most ``limit`` bytes: decompressed when it says gzip or
    deflate (a body that does not decompress is kept as it came)."""
    if coding not in ("gzip", "x-gzip", "deflate") or not body:
        return body[:limit]
    try:
        return zlib.decompressobj(wbits=47).decompress(body, limit)
    except zlib.error:
        return body[:limit]


class Connection(asyncio.Protocol):
    """One keep-alive connection to one origin; one request at a time (``exchange``)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._limit = 0
        self._reset()

    def _reset(self) -> None:
        self._head_bytes = 0
        self._raw_head = 0
        self._too_long: str | None = None
        self._head_done = False
        self._until_eof = False
        self._retry_after: str | None = None
        self._coding: str | None = None
        self._framed = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._over = False

    # -- the sender's side -----------------------------------------------------------------------------
    def exchange(self, data: bytes, body: bytes, body_limit: int, deadline: float) -> asyncio.Future[Response]:
        """Write one request (``data`` then ``body``); the future is its ``Response``, a ``TransportError``,
        or a ``TimeoutError`` once the loop's clock passes ``deadline`` (the connection is then dropped)."""
        assert self.transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._timer = loop.call_at(deadline, self._expire)
        self._limit = body_limit
        self._reset()
        if len(body) > 65536:  # not copied
            self.transport.writelines((data, body))
        else:
            self.transport.write(data + body)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (the exchange was abandoned: a timeout, a cancellation)."""
        self.closed = True
        self._waiter = None
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio -----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of asyncio's

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: a receiver talking out of turn
            self.close()
            return
        if not self._head_done:
            self._raw_head += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            reason = self._too_long or _reason(exc)
            self._fail("protocol_error", f"ProtocolError, invalid response: {reason}")
            return
        if self._waiter is None:
            return
        if not self._head_done and self._raw_head > 2 * HEAD_LIMIT:  # a head that never ends
            self._fail("protocol_error", f"ProtocolError, invalid response: {_HEAD_TOO_LONG}")
        elif self._over:
            self._finish(reusable=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None:
            return
        if self._until_eof:  # a body delimited by the end of the connection: complete
            self._finish(reusable=False)
        elif self._head_done:
            self._fail("payload_error", "PayloadError, body cut short")
        elif isinstance(exc, ConnectionResetError):
            self._fail("connection_reset", "ConnectionResetError, errno 104 (ECONNRESET)")
        else:
            self._fail("disconnected", "ServerDisconnectedError")

    # -- httptools callbacks -----------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._head_bytes += size + 4
        if size > FIELD_LIMIT or self._head_bytes > HEAD_LIMIT:  # llhttp stops: feed_data raises
            self._too_long = _FIELD_TOO_LONG if size > FIELD_LIMIT else _HEAD_TOO_LONG
            raise ValueError(self._too_long)
        lowered = name.lower()
        if lowered == b"retry-after" and self._retry_after is None:
            self._retry_after = value.decode("utf-8", "surrogateescape")
        elif lowered == b"content-encoding":
            self._coding = value.decode("latin-1").strip().lower()
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return
        self._head_done = True
        self._until_eof = not self._framed and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        room = self._limit - self._size
        if room <= 0:
            self._over = True
            return
        if len(body) > room:
            body, self._over = body[:room], True
        self._chunks.append(body)
        self._size += len(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim: the real answer follows
            self._reset()
            return
        self._until_eof = False
        self._finish(reusable=self._parser.should_keep_alive() and not self._over)

    # -- ends --------------------------------------------------------------------------------------------
    def _expire(self) -> None:
        """The exchange's deadline passed: ``TimeoutError``, and the connection is not used again."""
        self._timer = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())  # the pool aborts the connection as it sees it

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _finish(self, *, reusable: bool) -> None:
        self._stop_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        body = b"".join(self._chunks)
        waiter.set_result(Response(self._parser.get_status_code(), self._retry_after,
                                   excerpt(body, self._coding, self._limit), reusable))
        if not reusable:
            self.close()

    def _fail(self, error_class: str, message: str) -> None:
        self._stop_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(TransportError(error_class, f"{message}, host {self.host}"))
        self.close()


def _reason(exc: Exception) -> str:
    """llhttp's reason (``Invalid status code``), printable ASCII only, never the receiver's bytes."""
    text = str(exc).split(":", 1)[0].splitlines()[0] if str(exc) else ""
    return "".join(c for c in text if c.isascii() and c.isprintable())[:80].strip() or "not HTTP"
