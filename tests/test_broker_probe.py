"""The broker probe's request, against the real broker: it asks for no topic, so its cost does not grow
with the cluster (``broker_probe``). Losing the broker mid-run is ``test_kafka_outage.py``'s."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from services.contract.topics import Topics
from services.shared import kafka
from services.shared.broker_probe import answered
from services.shared.settings import Settings


async def test_a_probe_answers_with_the_brokers_and_no_topic_whatever_the_cluster_holds(
        settings: Settings, topics: Topics) -> None:
    client = AIOKafkaClient(**kafka.connection(settings))
    await client.bootstrap()
    responses: list[Any] = []
    send = client.send

    async def recorded(node_id: Any, request: Any, **options: Any) -> Any:
        response = await send(node_id, request, **options)
        responses.append(response)
        return response

    client.send = recorded
    try:
        await answered(client)
        everything = await client.fetch_all_metadata()
    finally:
        await client.close()
    assert topics.deliveries in everything.topics()  # the cluster holds topics ...
    (probe,) = responses[:1]
    assert probe.topics == [] and len(probe.brokers) == 1  # ... the probe's answer carries none of them


async def test_a_probe_with_no_broker_known_fails_with_a_kafka_error(settings: Settings) -> None:
    client = AIOKafkaClient(**kafka.connection(settings))  # never bootstrapped: it knows no broker
    with pytest.raises(KafkaError, match="no broker known"):
        await answered(client)
