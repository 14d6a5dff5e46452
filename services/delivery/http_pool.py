"""The delivery sender's keep-alive pool: connections per origin, the newest reused first.

At most ``limit`` connections are in use at once (a request waits for a free one within its own total
timeout); idle ones are kept per origin (scheme, host, port) and the most recently released is reused
first, so after a burst (a slow receiver, a catch-up after an outage) the surplus idles and is closed
after ``idle_timeout_s``: a steady small load does not keep a burst's connections alive. A connection
the receiver closed while idle is dropped, never reused.

Connecting goes through the network guard: a name is resolved (cached ``DNS_TTL_S``) and only the
addresses the guard allows are tried, in order; an IP-literal host is checked by the sender before it
gets here. TLS verifies the certificate and the host name with the system's trust store. The connect
timeout bounds each address's TCP and TLS handshake; its expiry is ``connect_timeout``.
"""

from __future__ import annotations

import asyncio
import ssl
import time

from services.delivery.http_wire import Connection, Response
from services.shared.errors import TransportError
from services.shared.netguard import NetworkGuard, parse_ip

DNS_TTL_S = 30.0
DNS_CACHE = 4096
Origin = tuple[bool, str, int]  # (TLS, host as in the URL, port)


class Pool:
    def __init__(self, guard: NetworkGuard, *, limit: int, idle_timeout_s: float) -> None:
        self._guard = guard
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_timeout_s = idle_timeout_s
        self._dns: dict[str, tuple[float, list[str]]] = {}
        self._tls: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def exchange(self, origin: Origin, data: bytes, body: bytes, *, body_limit: int,
                       connect_timeout_s: float, total_timeout_s: float) -> Response:
        """One request on a connection to ``origin``: a slot, the newest idle connection (or a new one),
        the exchange, the connection back (or closed), all within ``total_timeout_s`` (``TimeoutError``).
        One abandoned mid-exchange (a timeout, a cancellation) is dropped, never reused.

        A busy receiver's request finds a free slot and an idle connection at once; its deadline is then
        one timer on the exchange itself (``Connection.exchange``), not a timeout scope around it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_timeout_s
        if self._slots.locked():
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()  # a free slot: taken without waiting
        try:
            conn = self._idle_connection(origin)
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await self._connect(origin, connect_timeout_s)
            try:
                response = await conn.exchange(data, body, body_limit, deadline)
            except BaseException:
                conn.abort()
                raise
            self._release(origin, conn, reusable=response.reusable)
            return response
        finally:
            self._slots.release()

    def _idle_connection(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def _release(self, origin: Origin, conn: Connection, *, reusable: bool) -> None:
        if not reusable or conn.closed or self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(origin, []).append(conn)
        if self._sweeper is None:
            self._schedule_sweep()

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def open_idle(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    # -- idle connections ----------------------------------------------------------------------------------
    def _schedule_sweep(self) -> None:
        delay = max(0.25, self._idle_timeout_s / 4)
        self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Close what idled longer than ``idle_timeout_s`` (the oldest are at the bottom of each stack)."""
        self._sweeper = None
        cutoff = time.monotonic() - self._idle_timeout_s
        for origin, idle in list(self._idle.items()):
            keep = 0
            while keep < len(idle) and (idle[keep].closed or idle[keep].idle_since < cutoff):
                keep += 1
            for conn in idle[:keep]:
                conn.close()
            del idle[:keep]
            if not idle:
                del self._idle[origin]
        if self._idle and not self._closed:
            self._schedule_sweep()

    # -- new connections -----------------------------------------------------------------------------------
    async def _connect(self, origin: Origin, connect_timeout_s: float) -> Connection:
        tls, host, port = origin
        addresses = [host] if parse_ip(host) is not None else await self._addresses(host)
        loop = asyncio.get_running_loop()
        context = self._context() if tls else None
        failure: BaseException | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(connect_timeout_s):
                    _, conn = await loop.create_connection(
                        lambda: Connection(host), address, port, ssl=context,
                        server_hostname=host if tls else None,
                        ssl_handshake_timeout=connect_timeout_s if tls else None)
                return conn
            except TimeoutError:
                failure = TransportError("connect_timeout", f"ConnectionTimeoutError, host {host}")
            except OSError as exc:  # refused, unreachable, a TLS failure: the next address may answer
                failure = exc
        assert failure is not None
        raise failure

    async def _addresses(self, host: str) -> list[str]:
        """The allowed addresses of ``host`` (``BlockedDestinationError`` when none, ``TransportError("dns")``)."""
        now = time.monotonic()
        known = self._dns.get(host)
        if known is not None and known[0] > now:
            return known[1]
        addresses = await self._guard.resolve(host)
        if len(self._dns) >= DNS_CACHE:
            self._dns.clear()
        self._dns[host] = (now + DNS_TTL_S, addresses)
        return addresses

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

