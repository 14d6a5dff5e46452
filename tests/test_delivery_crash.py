"""A real ``akece-webhooks deliver`` process: SIGKILL mid-load then restart, and SIGTERM drain.

Both count what reached the receiver; nothing is simulated.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from services.shared.settings import Settings
from tests.conftest import make_settings
from tests.delivery_support import committed, delivery, make_webhook, produce, stack
from tests.receiver import Receiver

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AKECE_")}
    env.update({
        "AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "AKECE_TOPIC_PREFIX": settings.topic_prefix,
        "AKECE_ALLOWED_PRIVATE_CIDRS": ",".join(settings.allowed_private_cidrs),
        "AKECE_RETRY_SCHEDULE": ",".join(str(d) for d in settings.retry.schedule),
        "AKECE_RETRY_JITTER": "0",
        "AKECE_KAFKA_PARTITIONS": str(settings.kafka.partitions),
        "AKECE_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka.session_timeout_ms),
        "AKECE_KAFKA_REBALANCE_TIMEOUT_MS": str(settings.kafka.rebalance_timeout_ms),
        "AKECE_METRICS_HOST": "127.0.0.1",
        "AKECE_METRICS_PORT": "0",
        "AKECE_LOG_LEVEL": "warning",
        "AKECE_LOG_FORMAT": "json",
    })
    env.update(extra)
    return env


@asynccontextmanager
async def deliver_process(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "deliver", cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigkill_mid_load_then_restart_delivers_everything(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap)
    total = 6000
    async with stack(settings) as s:
        hooks = [make_webhook(receiver.url(f"/crash/{n}")) for n in range(20)]
        for n in range(20):
            receiver.set(f"/crash/{n}", delay=0.005)
        await s.add(*hooks)
        items = [delivery(hooks[n % 20], conversation=n % 300, seq=n) for n in range(total)]
        expected = {item.delivery_id for item in items}
        await produce(settings, items)
        env = worker_env(settings)

        async with deliver_process(env) as first:
            await receiver.wait_for(total // 3, timeout=60)
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        done = sum((await committed(settings, f"{settings.topic_prefix}.delivery", s.topics.deliveries)).values())
        at_kill = len(receiver.requests)
        assert at_kill < total, "the first worker finished before it was killed: nothing was tested"
        # Sent but not committed: the records in flight at the kill, the only ones a restart sends again.
        in_flight = at_kill - done

        async with deliver_process(env) as second:
            async with asyncio.timeout(120):
                while not expected <= {r.headers["webhook-id"] for r in receiver.requests}:
                    await receiver.next_request(timeout=120)
            second.send_signal(signal.SIGTERM)
            assert await second.wait() == 0

    seen = Counter(r.headers["webhook-id"] for r in receiver.requests)
    duplicates = sum(count - 1 for count in seen.values())
    print(f"\ncrash test: {total} deliveries, {at_kill} requests before SIGKILL, {done} committed, "
          f"{len(receiver.requests)} requests in all, {duplicates} duplicates (bound {in_flight})")
    assert set(seen) == expected
    assert duplicates <= in_flight <= settings.delivery.max_in_flight


async def test_sigterm_finishes_in_flight_commits_and_exits_zero(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap)
    count = 20
    receiver.set("/held", delay=1.5)
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/held"))
        await s.add(hook)
        await produce(settings, [delivery(hook, conversation=n) for n in range(count)])
        env = worker_env(settings, AKECE_DELIVERY_PER_WEBHOOK_CONCURRENCY="50", AKECE_DELIVERY_SHUTDOWN_GRACE_S="10")
        async with deliver_process(env) as process:
            await receiver.wait_for(count, timeout=60)
            assert all(r.finished_at is None for r in receiver.requests)  # all still in flight
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await process.wait()
            assert process.stderr is not None
            stderr = (await process.stderr.read()).decode()
        assert code == 0, stderr
        assert all(r.answered == 200 and r.abandoned_at is None for r in receiver.requests)
        group = f"{settings.topic_prefix}.delivery"
        assert sum((await committed(settings, group, s.topics.deliveries)).values()) == count
        await s.until_idle()  # a new worker of the group finds nothing left to do
        assert len(receiver.requests) == count
