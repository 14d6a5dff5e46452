"""The sender's own HTTP/1.1 client (``services/delivery/http_wire.py``, ``http_pool.py``) against a raw
keep-alive server on 127.0.0.1: what a receiver sees on the wire and what each answer becomes.

The hostile receivers (``tests/test_hostile_receivers.py``) and the poison answers
(``tests/test_delivery_isolation.py``) cover the receivers that misbehave; these cover the protocol's
ordinary corners: keep-alive and ``Connection: close``, interim answers, a body ended by the connection,
compressed bodies, the pool's bound, timeouts and a receiver that closes an idle connection.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import Callable
from types import TracebackType

import pytest
from yarl import URL

from services.delivery.http import HttpSender
from services.delivery.http_wire import request_bytes, request_head
from services.shared.netguard import NetworkGuard
from services.shared.settings import HttpSettings

HEADERS = {"Content-Type": "application/json", "webhook-id": "d-1"}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


class KeepAliveServer:
    """Reads each request whole (head and ``Content-Length`` body) and writes ``answer(n)`` for the n-th
    request (from 0), keeping the connection open unless ``close_after`` says otherwise."""

    def __init__(self, answer: Callable[[int], bytes] = lambda _: OK, *, close_after: bool = False,
                 hold_s: float = 0.0) -> None:
        self.answer = answer
        self.close_after = close_after
        self.hold_s = hold_s
        self.requests: list[bytes] = []
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> KeepAliveServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append(head + await reader.readexactly(length))
                if self.hold_s:
                    await asyncio.sleep(self.hold_s)
                writer.write(self.answer(len(self.requests) - 1))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


def sender(**settings: float) -> HttpSender:
    return HttpSender(HttpSettings(**settings), NetworkGuard(["127.0.0.0/8"]))


async def test_a_request_carries_its_headers_length_and_body_and_the_connection_is_kept() -> None:
    async with KeepAliveServer() as server, sender() as client:
        for n in range(3):
            result = await client.post(server.url(f"/hook?n={n}"), b'{"a":1}', HEADERS)
            assert (result.status, result.body, result.error_class) == (200, b"{}", None)
    assert server.connections == 1
    head, _, body = server.requests[2].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hook?n=2 HTTP/1.1"
    assert set(lines[1:]) == {f"Host: 127.0.0.1:{server.port}", "Content-Type: application/json",
                              "webhook-id: d-1", "Content-Length: 7"}
    assert body == b'{"a":1}'


async def test_connection_close_and_http_1_0_answers_are_not_reused() -> None:
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
               b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", OK]
    async with KeepAliveServer(lambda n: answers[n]) as server, sender() as client:
        statuses = [(await client.post(server.url(), b"{}", HEADERS)).status for _ in answers]
    assert statuses == [200, 200, 200]
    assert server.connections == 3


async def test_interim_answers_are_skipped_and_a_body_may_end_with_the_connection() -> None:
    interim = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
               b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated")
    async with KeepAliveServer(lambda _: interim) as server, sender() as client:
        result = await client.post(server.url(), b"{}", HEADERS)
    assert (result.status, result.body) == (201, b"created")
    async with KeepAliveServer(lambda _: b"HTTP/1.0 202 Accepted\r\n\r\nno length", close_after=True) as server, \
            sender() as client:
        result = await client.post(server.url(), b"{}", HEADERS)
    assert (result.status, result.body, result.error_class) == (202, b"no length", None)


async def test_a_compressed_body_is_decompressed_to_at_most_the_response_limit() -> None:
    packed = gzip.compress(b"x" * 100_000)
    answer = b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed
    async with KeepAliveServer(lambda _: answer) as server, sender(max_response_bytes=1000) as client:
        result = await client.post(server.url(), b"{}", HEADERS)
    assert (result.status, result.body) == (500, b"x" * 1000)
    assert b"accept-encoding" not in server.requests[0].lower()  # nothing asked for: identity expected


async def test_many_small_headers_past_64_kib_are_a_protocol_error() -> None:
    many = b"".join(b"X-H-%d: %s\r\n" % (n, b"v" * 1000) for n in range(70))
    async with KeepAliveServer(lambda _: b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 0\r\n\r\n") as server, \
            sender() as client:
        result = await client.post(server.url(), b"{}", HEADERS)
    assert (result.error_class, result.error_message) == (
        "protocol_error", "ProtocolError, invalid response: more than 65536 bytes of headers, host 127.0.0.1")


async def test_bytes_out_of_turn_close_the_connection_and_the_next_request_opens_another() -> None:
    async with KeepAliveServer(lambda n: OK + (b"GARBAGE\r\n\r\n" if n == 0 else b"")) as server, \
            sender() as client:
        first = await client.post(server.url(), b"{}", HEADERS)
        second = await client.post(server.url(), b"{}", HEADERS)
    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2


async def test_a_connection_the_receiver_closed_while_idle_is_not_used_again() -> None:
    async with KeepAliveServer(close_after=True) as server, sender() as client:
        assert (await client.post(server.url(), b"{}", HEADERS)).status == 200
        pool = client._pool
        assert pool is not None
        for _ in range(500):  # a bounded wait: the receiver's FIN reaches the idle connection
            if not pool.open_idle():
                break
            await asyncio.sleep(0.01)
        assert not pool.open_idle(), "the closed connection is still offered for reuse"
        result = await client.post(server.url(), b"{}", HEADERS)
    assert (result.status, result.error_class) == (200, None)
    assert server.connections == 2


async def test_the_pool_bounds_connections_in_use_and_a_timeout_frees_its_slot() -> None:
    async with KeepAliveServer(hold_s=0.2) as server, sender(pool_size=2) as client:
        results = await asyncio.gather(*(client.post(server.url(), b"{}", HEADERS) for _ in range(6)))
        assert [r.status for r in results] == [200] * 6
        assert server.max_open == 2
        server.hold_s = 5.0
        late = await client.post(server.url(), b"{}", HEADERS, total_timeout_s=0.3)
        assert (late.error_class, late.error_message) == ("timeout", "TimeoutError, host 127.0.0.1")
        server.hold_s = 0.0
        after = await asyncio.gather(*(client.post(server.url(), b"{}", HEADERS) for _ in range(2)))
        assert [r.status for r in after] == [200, 200]
        assert client.requests_in_flight == 0


async def test_credentials_in_the_url_become_basic_auth_and_the_default_port_is_not_named() -> None:
    head = request_head(URL("https://us%C3%A9r:p%40ss@hooks.example.com:443/in?x=1")).decode("latin-1")
    assert head.split("\r\n")[:3] == [
        "POST /in?x=1 HTTP/1.1", "Host: hooks.example.com",
        "Authorization: Basic " + base64.b64encode("usér:p@ss".encode("latin-1")).decode()]
    assert request_head(URL("http://[::1]:8080/")).split(b"\r\n")[1] == b"Host: [::1]:8080"
    assert request_head(URL("http://H.Example.COM./x")).split(b"\r\n")[1] == b"Host: h.example.com"


@pytest.mark.parametrize("headers", [{"X-A": "one\r\nX-Injected: yes"}, {"X-A\n": "v"}, {"X-A": "v\r"}])
def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="line break"):
        request_bytes(b"POST / HTTP/1.1\r\nHost: h\r\n", headers, 2)
