"""A programmable webhook receiver for tests: a real aiohttp server on 127.0.0.1 (a free port).

    receiver.url("/a")                            # http://127.0.0.1:<port>/a
    receiver.set("/a", status=500)                # every later request to /a (default: 200)
    receiver.script("/a", Behavior(status=500), Behavior(status=500))  # the next two, then the default
    receiver.set("/a", hold=True); receiver.release("/a")   # hang until released or the client gives up
    request = await receiver.next_request(timeout=10)       # the next request not yet taken (any path)
    await receiver.wait_for(20, timeout=10, path="/a")      # until 20 requests to /a arrived

Behaviours: ``status``, ``delay`` (seconds before answering), ``retry_after`` (header value),
``redirect`` (a Location; use a 3xx status), ``drop`` (close the connection without an answer),
``hold`` (wait for ``release``), ``body``. Every request is recorded with its headers, exact body,
arrival time, and when it was answered or abandoned by the client.

Use as a fixture: ``pytest_plugins = ["tests.receiver"]`` (in a test module or the conftest), then
take a ``receiver`` argument.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from types import TracebackType

import pytest
from aiohttp import web


@dataclass(frozen=True)
class Behavior:
    status: int = 200
    delay: float = 0.0
    retry_after: str | None = None
    redirect: str | None = None
    drop: bool = False
    hold: bool = False
    body: bytes = b'{"ok":true}'


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes
    time: float
    answered: int | None = None  # the status we answered
    finished_at: float | None = None
    abandoned_at: float | None = None  # the client went away before an answer


@dataclass
class _Path:
    default: Behavior = field(default_factory=Behavior)
    script: deque[Behavior] = field(default_factory=deque)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0


class Receiver:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[Recorded] = []
        self._paths: dict[str, _Path] = defaultdict(_Path)
        self._taken = 0
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Receiver:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for state in self._paths.values():
            state.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- programming -------------------------------------------------------------------------
    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def set(self, path: str = "/hook", **behavior: object) -> None:
        """The behaviour of every later request to ``path`` (after any script)."""
        state = self._paths[path]
        state.default = replace(Behavior(), **behavior)  # type: ignore[arg-type]
        if not state.default.hold:
            state.gate.set()
        else:
            state.gate.clear()

    def script(self, path: str, *behaviors: Behavior) -> None:
        """Behaviours of the next requests to ``path``, one each, before the default applies again."""
        self._paths[path].script.extend(behaviors)

    def release(self, path: str = "/hook") -> None:
        """Let held requests to ``path`` answer (with the default's status)."""
        self._paths[path].gate.set()

    # --- observing ---------------------------------------------------------------------------
    def for_path(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def max_in_flight(self, path: str = "/hook") -> int:
        return self._paths[path].max_in_flight

    def in_flight(self, path: str = "/hook") -> int:
        return self._paths[path].in_flight

    async def next_request(self, timeout: float = 10.0) -> Recorded:
        """The next request (any path) not yet returned by ``next_request``."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.requests) > self._taken), timeout)
            self._taken += 1
            return self.requests[self._taken - 1]

    async def wait_for(self, count: int, timeout: float = 10.0, path: str | None = None,
                       prefix: str | None = None) -> list[Recorded]:
        """Wait until at least ``count`` requests (to ``path``, under ``prefix``, or any) arrived."""
        def enough() -> bool:
            return len(self._matching(path, prefix)) >= count

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(enough), timeout)
        return self._matching(path, prefix)

    async def first(self, predicate: Callable[[Recorded], bool], timeout: float = 10.0) -> Recorded:
        """Wait for the first request (already arrived or not) for which ``predicate`` is true."""
        def found() -> Recorded | None:
            return next((r for r in self.requests if predicate(r)), None)

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), timeout)
        match = found()
        assert match is not None
        return match

    def _matching(self, path: str | None, prefix: str | None = None) -> list[Recorded]:
        found = self.requests if path is None else self.for_path(path)
        return found if prefix is None else [r for r in found if r.path.startswith(prefix)]

    # --- serving -----------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state = self._paths[request.path]
        behavior = state.script.popleft() if state.script else state.default
        entry = Recorded(request.path, dict(request.headers), body, time.time())
        self.requests.append(entry)
        async with self._arrived:
            self._arrived.notify_all()
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            return await self._answer(request, behavior, state, entry)
        except asyncio.CancelledError:
            if entry.finished_at is None:
                entry.abandoned_at = time.time()
            raise
        finally:
            state.in_flight -= 1

    async def _answer(self, request: web.Request, behavior: Behavior, state: _Path,
                      entry: Recorded) -> web.StreamResponse:
        if behavior.delay:
            await asyncio.sleep(behavior.delay)
        if behavior.hold:
            await state.gate.wait()
        if behavior.drop:
            assert request.transport is not None
            entry.finished_at = time.time()
            request.transport.abort()
            raise asyncio.CancelledError
        headers = {}
        if behavior.retry_after is not None:
            headers["Retry-After"] = behavior.retry_after
        if behavior.redirect is not None:
            headers["Location"] = behavior.redirect
        entry.answered = behavior.status
        entry.finished_at = time.time()
        return web.Response(status=behavior.status, body=behavior.body, headers=headers,
                            content_type="application/json")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server
