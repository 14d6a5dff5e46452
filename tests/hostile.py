"""Hostile webhook receivers: real servers on 127.0.0.1 speaking raw bytes (asyncio sockets), so they can
misbehave in ways an HTTP framework would not let them.

    async with HostileServer(BEHAVIORS["slowloris"]) as server:
        url = server.url            # http://127.0.0.1:<port>/hook (https://... for the TLS one)
        server.requests             # how many requests it read

Each behaviour reads one request (headers and Content-Length body) and then answers (or not) in its
own way. ``BEHAVIORS`` names every one; ``tls_context()`` makes a self-signed certificate nobody
trusts (``openssl``, once per process).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType

Answer = Callable[[asyncio.StreamWriter, int], Awaitable[None]]  # (writer, request number) -> answers

BOMB_DECOMPRESSED = 1 << 30  # 1 GiB of zeros, about 1 MiB compressed
RETRY_AFTER_FORMS = (
    b"", b" ", b"-1", b"1e3", b"1.5", b" 5 ", b"+5", b"0x10", b"\xc2\xb2", b"\xd9\xa3", b"\xef\xbc\x93",
    b"99999999999999999999", b"9" * 5000, b"Fri, 31 Dec 9999 23:59:59 GMT", b"Mon, 00 Foo 0000 99:99:99 GMT",
    b"Sun, 06 Nov 1994 08:49:37 GMT", b"Sunday, 06-Nov-94 08:49:37 GMT", b"Sun Nov  6 08:49:37 1994",
    b"\xff\xfe\x00", b"tomorrow", b"5, 7", b"\t3",
)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


def _head(status: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


async def slowloris(writer: asyncio.StreamWriter, _: int) -> None:
    """The status line and headers one byte at a time, never finishing."""
    head = _head(b"200 OK", b"Content-Type: application/json", *(b"X-Slow-%d: %s" % (n, b"z" * 40)
                                                                  for n in range(10_000)))
    for byte in head:
        await _send(writer, bytes([byte]))
        await asyncio.sleep(0.05)


async def endless_body(writer: asyncio.StreamWriter, _: int) -> None:
    """200 with a chunked body that never ends."""
    await _send(writer, _head(b"200 OK", b"Content-Type: application/json", b"Transfer-Encoding: chunked"))
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    while True:
        await _send(writer, chunk)


async def invalid_http(writer: asyncio.StreamWriter, _: int) -> None:
    await _send(writer, b"HELLO there, this is not HTTP\r\n\x00\x01\x02\r\n\r\n")


async def redirect_loop(writer: asyncio.StreamWriter, _: int) -> None:
    """302 to itself, forever."""
    await _send(writer, _head(b"302 Found", b"Location: /hook", b"Content-Length: 0"))


async def huge_headers(writer: asyncio.StreamWriter, _: int) -> None:
    """100 KB of headers: one 60 KB value and many small ones."""
    many = [b"X-H-%d: %s" % (n, b"v" * 30) for n in range(1000)]
    await _send(writer, _head(b"200 OK", b"X-Big: " + b"b" * 60_000, *many, b"Content-Length: 2") + b"{}")


async def reset_mid_body(writer: asyncio.StreamWriter, _: int) -> None:
    """Announce 100,000 bytes, send 1,000, then reset the connection (RST, not FIN)."""
    await _send(writer, _head(b"200 OK", b"Content-Length: 100000") + b"x" * 1000)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@cache
def gzip_bomb() -> bytes:
    """``BOMB_DECOMPRESSED`` zeros, gzip-compressed (about 1 MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(BOMB_DECOMPRESSED >> 20)]
    return b"".join(parts) + packer.flush()


async def gzip_bomb_body(writer: asyncio.StreamWriter, _: int) -> None:
    bomb = gzip_bomb()
    await _send(writer, _head(b"200 OK", b"Content-Type: application/json", b"Content-Encoding: gzip",
                              b"Content-Length: %d" % len(bomb)) + bomb)


async def unicode_status(writer: asyncio.StreamWriter, number: int) -> None:
    """A status line whose code is in other scripts' digits (fullwidth, Arabic-Indic, superscript)."""
    codes = ("\uff12\uff10\uff10", "\u0662\u0660\u0660", "2\u00b2\u2070", "\u0665\u0660\u0663")
    status = codes[number % len(codes)].encode() + b" OK"
    await _send(writer, _head(status, b"Content-Length: 0"))


async def odd_retry_after(writer: asyncio.StreamWriter, number: int) -> None:
    """429 or 503, each with the next of ``RETRY_AFTER_FORMS`` (raw bytes, not all of them text)."""
    status = b"429 Too Many Requests" if number % 2 else b"503 Service Unavailable"
    form = RETRY_AFTER_FORMS[number % len(RETRY_AFTER_FORMS)]
    await _send(writer, _head(status, b"Retry-After: " + form, b"Content-Length: 0"))


async def untrusted_tls(writer: asyncio.StreamWriter, _: int) -> None:
    """Only reached if a client accepted the certificate: then a plain 200."""
    await _send(writer, _head(b"200 OK", b"Content-Length: 0"))


@dataclass(frozen=True)
class Behavior:
    answer: Answer
    tls: bool = False


BEHAVIORS: dict[str, Behavior] = {
    "slowloris": Behavior(slowloris),
    "endless_body": Behavior(endless_body),
    "invalid_http": Behavior(invalid_http),
    "redirect_loop": Behavior(redirect_loop),
    "huge_headers": Behavior(huge_headers),
    "reset_mid_body": Behavior(reset_mid_body),
    "gzip_bomb": Behavior(gzip_bomb_body),
    "untrusted_tls": Behavior(untrusted_tls, tls=True),
    "unicode_status": Behavior(unicode_status),
    "odd_retry_after": Behavior(odd_retry_after),
}


@cache
def _certificate_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="akece-hostile-tls-"))
    atexit.register(shutil.rmtree, folder, True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True)
    return folder


def tls_context() -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (no client trusts it)."""
    folder = _certificate_dir()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


class HostileServer:
    """One listening socket on 127.0.0.1 answering every request with ``behavior``."""

    def __init__(self, behavior: Behavior) -> None:
        self.behavior = behavior
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.behavior.tls else 'http'}://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> HostileServer:
        context = tls_context() if self.behavior.tls else None
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:  # keep-alive: one answer per request on this connection
                if not await _read_request(reader):
                    return
                self.requests += 1
                await self.behavior.answer(writer, self.requests)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            return
        finally:
            self._tasks.discard(task)
            writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """One request's head and body; False when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return True


async def _serve_forever(name: str) -> None:
    """``python -m tests.hostile NAME``: serve one behaviour in its own process (so its work is not the
    measured process's), print ``{"port": N, "url": ...}`` once listening, stop on SIGTERM or closed stdin."""
    import signal
    import sys

    if name == "gzip_bomb":
        gzip_bomb()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the parent went away
    async with HostileServer(BEHAVIORS[name]) as server:
        sys.stdout.write(f'{{"port": {server.port}, "url": "{server.url}"}}\n')
        sys.stdout.flush()
        await stop.wait()


if __name__ == "__main__":
    import sys

    asyncio.run(_serve_forever(sys.argv[1]))
