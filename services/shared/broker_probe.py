"""``BrokerProbe``: one probe of the broker at a time, for ``broker_link.BrokerLink``.

While the broker answers, a probe is a metadata request for no topics on the connection kept from the
last bootstrap: the brokers' list, whatever the cluster holds. (A request for every topic costs the
broker and this process in proportion to every partition of the cluster, each ``PROBE_INTERVAL_S`` in
every process: 31 ms of this process's CPU per probe on a broker with 3,000 partitions, 0.16 ms for
no topics.) After a failure, the next one bootstraps afresh (connect, metadata) and starts the
process's shared clients. A failure is said in one line (refused, TLS, SASL:
``kafka_security.explain``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from services.shared import kafka
from services.shared.kafka_security import bootstrap_failures, explain
from services.shared.outage import describe
from services.shared.settings import Settings

PROBE_TIMEOUT_S = 10.0  # one probe (connect + metadata), bounded below the request timeout


class BrokerProbe:
    """The kept probe connection and the shared clients it starts once the broker answers."""

    def __init__(self, settings: Settings, clients: Sequence[Any] = ()) -> None:
        self._settings = settings
        self._timeout = min(PROBE_TIMEOUT_S, settings.kafka.request_timeout_ms / 1000)
        self._protocol = settings.kafka.security_protocol
        self._clients = list(clients)
        self._started: list[Any] = []
        self._client: AIOKafkaClient | None = None  # kept while the broker answers
        self._answered_before = False

    async def try_once(self, *, answered_before: bool) -> str | None:
        """One probe. None: the broker answers; else why not, in one line. ``answered_before``: these
        settings reached the broker once, so a lost connection is no setting's fault."""
        self._answered_before = answered_before
        probe = self._client
        if probe is None:
            return await self._connect()
        with bootstrap_failures() as failures:
            try:
                async with asyncio.timeout(self._timeout):
                    await answered(probe)
            except (KafkaError, OSError, TimeoutError) as exc:
                self._client = None
                await kafka.close(probe)
                return self._why(exc, failures)
        return None

    async def _connect(self) -> str | None:
        """A fresh bootstrap (connect, metadata), then the shared clients; the probe client is kept."""
        options = {**kafka.connection(self._settings), "request_timeout_ms": int(self._timeout * 1000)}
        client = AIOKafkaClient(**options)  # options built per bootstrap: a rotated SASL password file is read
        with bootstrap_failures() as failures:
            try:
                async with asyncio.timeout(self._timeout):
                    await client.bootstrap()
                for pending in [c for c in self._clients if c not in self._started]:
                    async with asyncio.timeout(self._timeout):
                        await pending.start()
                    self._started.append(pending)
            except (KafkaError, OSError, TimeoutError) as exc:
                await kafka.close(client)
                return self._why(exc, failures)
        self._client = client
        return None

    def _why(self, exc: BaseException, failures: list[BaseException]) -> str:
        if not failures:
            return describe(exc)
        return explain(exc, failures, self._protocol, answered_before=self._answered_before)

    async def close(self) -> None:
        """Close the shared clients, started or not, and the kept connection."""
        clients, self._clients, self._started = self._clients, [], []
        probe, self._client = self._client, None
        for client in [*reversed(clients), *([probe] if probe else [])]:
            await kafka.close(client)


async def answered(client: AIOKafkaClient) -> None:
    """A metadata request for no topics (no topic is created), to each known broker in turn until one
    answers; the last one's error if none does."""
    request = MetadataRequest([], allow_auto_topic_creation=False)
    failure: BaseException = KafkaError("no broker known")
    for broker in client.cluster.brokers():
        try:
            await client.send(broker.nodeId, request)
            return
        except (KafkaError, OSError) as exc:
            failure = exc
    raise failure


__all__ = ["PROBE_TIMEOUT_S", "BrokerProbe", "answered"]
