"""A receiver that answers with canned bytes, for what a well-behaved HTTP server would never send
(odd status lines, non-UTF-8 headers, Unicode digits in Retry-After, oversized header lines).

    async with RawReceiver({"/odd": b"HTTP/1.1 999 Odd\\r\\nContent-Length: 0\\r\\n\\r\\n"}) as raw:
        raw.url("/odd")            # http://127.0.0.1:<port>/odd
        await raw.wait_for(3, path="/odd", timeout=10)

Every request is read whole (headers and ``Content-Length`` body), answered with the bytes of its
path (or a 200), and the connection is closed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import TracebackType

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class RawReceiver:
    def __init__(self, answers: dict[str, bytes]) -> None:
        self._answers = answers
        self._server: asyncio.Server | None = None
        self.port = 0
        self.counts: Counter[str] = Counter()
        self._arrived = asyncio.Condition()

    async def __aenter__(self) -> RawReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait_for(self, count: int, *, path: str, timeout: float = 10.0) -> None:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: self.counts[path] >= count), timeout)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1].split("?")[0]
            length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith("content-length:")), 0)
            await reader.readexactly(length)
            async with self._arrived:
                self.counts[path] += 1
                self._arrived.notify_all()
            writer.write(self._answers.get(path, OK))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
