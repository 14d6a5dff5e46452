"""Network faults between the delivery worker and the broker, injected by Toxiproxy.

A module-scoped broker (own data dir, free ports) has a second PLAINTEXT listener that it
ADVERTISES as the proxy's address, so every connection of the worker (bootstrap, then the
partition leaders and the group coordinator that metadata names) goes through Toxiproxy; the load
and the test's own clients use the broker's direct listener. Under a steady load across several
webhooks, one ``akece-webhooks deliver`` process meets, one after another:

- latency (both directions) and a bandwidth limit: deliveries keep arriving through them;
- connection resets (every connection reset shortly after it opens, for a while);
- a black hole (the ``timeout`` toxic: bytes dropped, no RST, no FIN) longer than the session and
  request timeouts: the group evicts the worker, which rejoins on its own once the path is back.

Same assertions as the failover tests: every delivery id arrives, none is lost, nothing is
dead-lettered, duplicates within the records in flight at the faults. The long version (longer
black hole and resets, 20,000 deliveries) is marked ``faults`` (``make faults``).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.devtools.kafka_errors import HOST
from services.devtools.kafka_local import LocalKafka
from services.devtools.ports import free_port
from tests.conftest import make_settings
from tests.delivery_support import deliver_process, make_webhook, stack, worker_env
from tests.fault_load import (
    Campaign,
    Load,
    Tally,
    assert_clean_logs,
    assert_nothing_lost,
    dead_lettered,
    log_tails,
    tally,
    wait_all_arrived,
)
from tests.receiver import Receiver
from tests.toxiproxy import Proxy, Toxiproxy

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

WEBHOOKS = 6
SESSION_TIMEOUT_MS = 6000
REQUEST_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class ProxiedBroker:
    direct: str  # the broker's own listener: the load and the test's clients
    proxied: str  # the address the broker advertises on its second listener: Toxiproxy listens here
    upstream: str  # where that second listener really binds: Toxiproxy forwards there


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedBroker]:
    data_dir = tmp_path_factory.mktemp("proxied") / "kafka"
    proxy_port, upstream_port = free_port(), free_port()
    local = LocalKafka(data_dir, port=free_port(), controller_port=free_port(), proxied=(upstream_port, proxy_port))
    status = local.start()
    assert status.bootstrap is not None
    try:
        yield ProxiedBroker(status.bootstrap, f"{HOST}:{proxy_port}", f"{HOST}:{upstream_port}")
    finally:
        local.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass(frozen=True)
class Durations:
    resets_s: float
    black_hole_s: float


async def run_network_faults(broker: ProxiedBroker, receiver: Receiver, minimum: int, rate: float,
                             durations: Durations, logs: Path) -> Tally:
    settings = make_settings(broker.direct)
    async with Toxiproxy.running(logs / "toxiproxy.log") as toxi, stack(settings) as s:
        proxy = await toxi.proxy("kafka", listen=broker.proxied, upstream=broker.upstream)
        hooks = [make_webhook(receiver.url(f"/net/{n}")) for n in range(WEBHOOKS)]
        await s.add(*hooks)
        load = Load(settings, hooks, minimum, rate)
        campaign = Campaign(settings, load, receiver, logs)
        env = worker_env(settings, AKECE_KAFKA_BOOTSTRAP_SERVERS=broker.proxied,
                         AKECE_KAFKA_REQUEST_TIMEOUT_MS=str(REQUEST_TIMEOUT_MS),
                         AKECE_KAFKA_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS))
        faults_over = asyncio.Event()
        async with deliver_process(env, logs / "worker.log") as worker:
            campaign.workers = [worker]
            loader = asyncio.create_task(load.run(faults_over))
            await receiver.wait_for(300, timeout=120)
            await inject(campaign, proxy, durations)
            faults_over.set()
            await loader
            await wait_all_arrived(receiver, load.expected, timeout=180)
            assert worker.returncode is None, f"the worker exited during the faults\n{log_tails(logs)}"
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(worker.wait(), 60) == 0, log_tails(logs)
        assert_clean_logs(logs)
        dlq = await dead_lettered(settings)
    campaign.print_log()
    result = tally(f"Toxiproxy worker<->broker: latency, bandwidth, resets {durations.resets_s:g} s, "
                   f"black hole {durations.black_hole_s:g} s", f"{load.produced:,} deliveries, {WEBHOOKS} webhooks, "
                   f"~{rate:g}/s, 1 worker", receiver, load.expected, dlq, campaign.bound)
    print(f"\n{result.row()}")
    return result


async def inject(campaign: Campaign, proxy: Proxy, durations: Durations) -> None:
    """Each fault in turn; after each, deliveries flow again without anyone restarting anything."""
    async with campaign.fault("latency 300 ms ± 100 ms each way"):
        async with proxy.toxic("latency", stream="both", latency=300, jitter=100):
            await campaign.progress()
        await campaign.progress()
    async with campaign.fault("bandwidth 64 KB/s each way"):
        async with proxy.toxic("bandwidth", stream="both", rate=64):
            await campaign.progress()
        await campaign.progress()
    async with campaign.fault(f"connection resets for {durations.resets_s:g} s"):
        async with proxy.toxic("reset_peer", stream="both", timeout=500):
            await asyncio.sleep(durations.resets_s)  # the fault's length, not a wait for an event
        await campaign.progress()
    async with campaign.fault(f"black hole for {durations.black_hole_s:g} s"):
        async with proxy.toxic("timeout", stream="both", timeout=0):
            await asyncio.sleep(durations.black_hole_s)  # the fault's length, not a wait for an event
        await campaign.progress(timeout=180)


async def test_network_faults_lose_nothing(broker: ProxiedBroker, receiver: Receiver, tmp_path: Path) -> None:
    durations = Durations(resets_s=5, black_hole_s=15)  # 15 s > the 6 s session and 10 s request timeouts
    assert_nothing_lost(await run_network_faults(broker, receiver, 3000, 60, durations, tmp_path))


@pytest.mark.faults
@pytest.mark.timeout(900)
async def test_network_faults_lose_nothing_long(broker: ProxiedBroker, receiver: Receiver, tmp_path: Path) -> None:
    durations = Durations(resets_s=30, black_hole_s=60)
    assert_nothing_lost(await run_network_faults(broker, receiver, 20_000, 150, durations, tmp_path))
