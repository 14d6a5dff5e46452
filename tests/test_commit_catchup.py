"""After a broker restart, the delivery group's committed offsets keep up with what was delivered.

A SIGKILLed broker leaves a backlog behind: once it is back, the worker holds as many records as it
may (``max_in_flight``) and every webhook's queue is long. Records of one key go one at a time (the
records of a webhook that name no conversation share the key ``<webhook>:-``); each of them used to
wait through its webhook's whole queue again, so such a key fell further behind with every record
and its oldest record held its partition's commit. The worker went on delivering while the group's
committed offsets barely moved (a lag of 54,079 records in the soak of 2026-12-06, for ~110 s): a
crash then would have sent tens of thousands again. Here, while the backlog is still being worked
off, everything delivered at some moment must be committed a bounded time later.

The broker is this module's own (free ports, its own data dir): it is killed and started again.
The worker is a real ``akece-webhooks deliver`` process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.contract.topics import Topics
from services.shared import kafka
from services.shared.settings import Settings
from tests.conftest import make_settings
from tests.delivery_support import Delivery, deliver_process, delivery, make_webhook, stack, worker_env
from tests.kafka_broker import RestartableBroker, restartable_broker
from tests.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

WEBHOOKS = 4
BACKLOG = 8000  # records: far more than the worker may hold, so its queues stay long for a while
WITHOUT_CONVERSATION = 9  # one record in this many names no conversation: one key per webhook (9: on each)
DELIVERY_HEADER = "X-Chatwoot-Delivery"
ANSWER_S = 0.05  # each receiver answers after this: 4 webhooks x 2 at a time, 160 deliveries/s at most
MAX_IN_FLIGHT = 1000
PER_WEBHOOK = 2
DELIVERED_AFTER_RESTART = 1000
COMMIT_WITHIN_S = 20.0  # about 6 s (what the worker held at the checkpoint, at 160/s); stalled, ~40 s


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableBroker]:
    with restartable_broker(tmp_path_factory.mktemp("catchup-kafka")) as own:
        yield own


async def produce_backlog(settings: Settings, items: list[Delivery]) -> dict[str, tuple[int, int]]:
    """Write ``items`` to the deliveries topic; each delivery id's (partition, offset)."""
    topic = Topics.from_settings(settings).deliveries
    async with kafka.started(kafka.producer(settings)) as producer:
        futures = [await producer.send(topic, value=d.value, key=d.key, headers=d.headers) for d in items]
        written = await asyncio.gather(*futures)
    return {d.delivery_id: (meta.partition, meta.offset) for d, meta in zip(items, written, strict=True)}


async def committed(admin: AIOKafkaAdminClient, settings: Settings) -> dict[int, int]:
    """The delivery group's committed offset of each deliveries partition."""
    topic = Topics.from_settings(settings).deliveries
    offsets = await admin.list_consumer_group_offsets(f"{settings.topic_prefix}.delivery")
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def test_commits_catch_up_with_deliveries_after_a_broker_restart(
        tmp_path: Path, broker: RestartableBroker, receiver: Receiver) -> None:
    settings = make_settings(broker.bootstrap)
    hooks = [make_webhook(receiver.url(f"/h{n}"), account_id=n + 1) for n in range(WEBHOOKS)]
    for n in range(WEBHOOKS):
        receiver.set(f"/h{n}", delay=ANSWER_S)
    items = [delivery(hooks[n % WEBHOOKS], seq=n,
                      conversation=None if n % WITHOUT_CONVERSATION == 0 else n)
             for n in range(BACKLOG)]
    async with stack(settings) as s:
        await s.add(*hooks)
        positions = await produce_backlog(settings, items)
        env = worker_env(settings, AKECE_DELIVERY_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
                         AKECE_DELIVERY_PER_WEBHOOK_CONCURRENCY=str(PER_WEBHOOK))
        async with deliver_process(env, tmp_path / "deliver.log") as worker:
            await receiver.wait_for(MAX_IN_FLIGHT // 2, timeout=60)
            await broker.kill()
            await broker.start()
            before = len(receiver.requests)
            await receiver.wait_for(before + DELIVERED_AFTER_RESTART, timeout=60)

            # Everything delivered by now, per partition: the group's commit must pass it.
            delivered = [positions[r.headers[DELIVERY_HEADER]] for r in list(receiver.requests)]
            target: dict[int, int] = {}
            for partition, offset in delivered:
                target[partition] = max(target.get(partition, 0), offset + 1)
            checkpoint = time.monotonic()
            async with kafka.started(kafka.admin(settings)) as admin:
                while True:
                    now = await committed(admin, settings)
                    if all(now.get(p, -1) >= offset for p, offset in target.items()):
                        break
                    assert worker.returncode is None, (tmp_path / "deliver.log").read_text()[-3000:]
                    assert time.monotonic() - checkpoint < COMMIT_WITHIN_S, (
                        f"{COMMIT_WITHIN_S:g} s after {len(delivered):,} deliveries the group had committed "
                        f"{now} of {target}")
                    await asyncio.sleep(0.25)  # a bounded wait on the condition (commits every 0.5 s)
            caught_up_s = time.monotonic() - checkpoint
            left = BACKLOG - len({r.headers[DELIVERY_HEADER] for r in receiver.requests})
            assert left > 0, f"the backlog was over before the commit caught up ({caught_up_s:.1f} s): nothing shown"
