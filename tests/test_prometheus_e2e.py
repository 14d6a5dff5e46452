"""A real Prometheus (Debian's ``prometheus``) scrapes a running pipeline on 127.0.0.1.

The api, router and delivery roles run in this process, each under its own supervisor with its own
registry and port, like three processes (three scrape jobs). Prometheus scrapes every second and
evaluates a copy of ``deploy/prometheus/alerts.yml`` in which only time shrinks: every range
(``[10m]``) becomes ``[20s]`` and every ``for:`` becomes 2 s; expressions and thresholds are the real
ones. Events go through to a local receiver, and the test reads Prometheus's HTTP API until the
deliveries counter and the latency histograms move, ``up`` is 1 for every target, and, once the
receiver fails, the success-ratio and dead-letter alerts fire. Every wait polls Prometheus (or the
receiver) with a deadline.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml

from schemas.examples import example
from services.admin.app import ApiWorker
from services.contract.times import now_iso
from services.contract.topics import Topics
from services.delivery.worker import DeliveryWorker
from services.publisher.publisher import Publisher
from services.router.worker import RouterWorker
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.webhooks import SigningSecret, Webhook, encode_webhook, new_secret, new_webhook_id
from tests.promql_names import exported_families, family, referenced_metrics
from tests.receiver import Receiver

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "akece-webhooks.json"
JOBS = {"api": "akece-api", "router": "akece-router", "delivery": "akece-delivery"}
TEST_WINDOW = "20s"
TEST_FOR = "2s"
_RANGE = re.compile(r"\[\d+[smhdwy]\]")
T = TypeVar("T")
# Each role's worker, imported here so a missing or broken one fails this test instead of skipping it.
WORKERS = {"api": ApiWorker, "router": RouterWorker, "delivery": DeliveryWorker}
ROLES = tuple(JOBS)


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        pytest.fail("prometheus not found: run `make tools` (Debian package `prometheus`)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rules_for_test() -> dict[str, Any]:
    """alerts.yml with time shrunk: ranges -> TEST_WINDOW, ``for`` -> TEST_FOR, groups every second."""
    document: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["expr"] = _RANGE.sub(f"[{TEST_WINDOW}]", rule["expr"])
            if "for" in rule:
                rule["for"] = TEST_FOR
    return document


def prometheus_config(rules: Path, targets: dict[str, int]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": JOBS[role], "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for role, port in targets.items()],
    }


@contextmanager
def prometheus(directory: Path, targets: dict[str, int]) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """A Prometheus server on a free port, scraping ``targets``; always stopped on exit."""
    rules = directory / "alerts.test.yml"
    rules.write_text(yaml.safe_dump(rules_for_test(), sort_keys=False))
    config = directory / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(rules, targets), sort_keys=False))
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", process, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- Prometheus HTTP API -------------------------------------------------------------------------

class PromApi:
    def __init__(self, http: aiohttp.ClientSession, base: str, process: subprocess.Popen[bytes],
                 log: Path) -> None:
        self.http, self.base, self.process, self.log = http, base, process, log

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.base}/api/v1/query", params={"query": promql}) as response:
            body = await response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def scalar(self, promql: str) -> float | None:
        """The value of a single-sample query, or None when it has no sample."""
        result = await self.query(promql)
        return float(result[0]["value"][1]) if result else None

    async def firing(self) -> dict[str, list[dict[str, str]]]:
        """Firing alerts by name (their label sets)."""
        async with self.http.get(f"{self.base}/api/v1/alerts") as response:
            body = await response.json()
        out: dict[str, list[dict[str, str]]] = {}
        for alert in body["data"]["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return out

    async def eventually(self, check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60) -> T:
        """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: T | None = None
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                last = await check()
            except aiohttp.ClientError:
                last = None
            if last:
                return last
            if loop.time() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})\n"
                            f"prometheus log tail:\n{self.log.read_text()[-2000:]}")
            await asyncio.sleep(0.2)  # the poll interval of an awaited condition


# --- the pipeline -----------------------------------------------------------------------------------

def role_settings(settings: Settings, metrics_port: int, api_port: int) -> Settings:
    """The test's settings (own topics, short retries) with this role's ports."""
    return settings.model_copy(update={
        "metrics": settings.metrics.model_copy(update={"port": metrics_port, "host": "127.0.0.1"}),
        "api": settings.api.model_copy(update={"port": api_port, "host": "127.0.0.1"}),
    })


@asynccontextmanager
async def pipeline(settings: Settings, roles: tuple[str, ...],
                   ports: dict[str, tuple[int, int]]) -> AsyncIterator[None]:
    """Each role under its own supervisor (own registry, ports): three processes in one loop."""
    from services.run import run_roles

    stop = asyncio.Event()
    tasks = {role: asyncio.create_task(run_roles(role_settings(settings, *ports[role]), [role], stop=stop,
                                                 install_signals=False))
             for role in roles}
    try:
        yield
    finally:
        stop.set()
        codes = await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), 60)
    assert all(code == 0 for code in codes), dict(zip(tasks, codes, strict=True))


async def add_webhook(settings: Settings, url: str, account_id: int) -> Webhook:
    hook = Webhook(id=new_webhook_id(), account_id=account_id, url=url, subscriptions=["message_created"],
                   created_at=now_iso(), updated_at=now_iso(),
                   secrets=[SigningSecret(secret=new_secret(), created_at=now_iso())])
    producer = kafka.producer(settings)
    async with kafka.started(producer):
        await kafka.send(producer, Topics.from_settings(settings).subscriptions, encode_webhook(hook),
                         key=str(hook.id).encode(), headers=[], timeout=settings.kafka.send_timeout_s)
    return hook


async def publish_messages(publisher: Publisher, account_id: int, count: int, start: int) -> None:
    await publisher.publish_many([example("message_created", account_id=account_id, conversation_id=start + i)
                                  for i in range(count)])


async def live_families(http: aiohttp.ClientSession, ports: dict[str, int]) -> set[str]:
    families: set[str] = set()
    for port in ports.values():
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            families |= exported_families(await response.text())
    return families


# --- the test ---------------------------------------------------------------------------------------

async def test_real_prometheus_sees_deliveries_and_fires_alerts(settings: Settings, topics: Topics,
                                                                tmp_path: Path) -> None:
    roles = ROLES
    assert set(WORKERS) == set(roles)
    ports = {role: (free_port(), free_port()) for role in roles}  # (metrics, api)
    # What Prometheus scrapes: the API on its API port (as deploy/prometheus/prometheus.yml does),
    # the others on their metrics port.
    targets = {role: ports[role][1] if role == "api" else ports[role][0] for role in roles}
    account = 4242
    async with Receiver() as receiver:
        await add_webhook(settings, receiver.url("/hook"), account)
        with prometheus(tmp_path, targets) as (base, process, log):
            async with aiohttp.ClientSession() as http, pipeline(settings, roles, ports), \
                    Publisher(settings) as publisher:
                prom = PromApi(http, base, process, log)

                # Every target scraped, and up == 1 for each of them.
                async def all_up() -> list[dict[str, Any]] | None:
                    up = await prom.query("up")
                    ok = len(up) == len(roles) and all(s["value"][1] == "1" for s in up)
                    return up if ok else None

                up = await prom.eventually(all_up, "up == 1 for every target")
                assert {s["metric"]["job"] for s in up} == {JOBS[r] for r in roles}

                # Every metric family the rules and dashboard query is on a live /metrics page.
                needed = {family(n) for n in referenced_metrics([ALERTS, DASHBOARD])} - {"up"}
                missing = needed - await live_families(http, targets)
                assert not missing, f"queried but not served by any process: {sorted(missing)}"

                # Healthy deliveries move the counter and both latency histograms. Two rounds: a
                # labelled series appears with its first value, which rate() cannot see as a change.
                for round_ in range(2):
                    await publish_messages(publisher, account, 5, start=5 * round_)
                    await receiver.wait_for(5 * (round_ + 1), timeout=60, path="/hook")

                    async def delivered(expected: int = 5 * (round_ + 1)) -> float | None:
                        value = await prom.scalar('sum(akece_webhooks_deliveries_total{outcome="success"})')
                        return value if value is not None and value >= expected else None

                    await prom.eventually(delivered, f"deliveries_total{{outcome=success}} >= {5 * (round_ + 1)}")
                for histogram in ("akece_webhooks_end_to_end_latency_seconds",
                                  "akece_webhooks_attempt_duration_seconds"):
                    count = await prom.scalar(f"sum({histogram}_count)")
                    assert count is not None and count >= 10, (histogram, count)

                    async def median(h: str = histogram) -> float | None:
                        p50 = await prom.scalar(
                            f"histogram_quantile(0.5, sum by (le) (rate({h}_bucket[{TEST_WINDOW}])))")
                        return p50 if p50 is not None and not math.isnan(p50) else None

                    p50 = await prom.eventually(median, f"the median of {histogram}")
                    assert 0 < p50 <= 60, (histogram, p50)
                events = await prom.scalar('sum(akece_webhooks_events_consumed_total{outcome="routed"})')
                assert events is not None and events >= 10
                assert "AkeceWebhooksDeliverySuccessRatioLow" not in await prom.firing()

                # The receiver fails: traffic keeps flowing (paced by Prometheus seeing each round's
                # failures) until the success-ratio and dead-letter alerts fire.
                receiver.set("/hook", status=500)
                wanted = {"AkeceWebhooksDeliverySuccessRatioLow", "AkeceWebhooksDeadLettersGrowing"}
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 120
                sent = 10
                firing: dict[str, list[dict[str, str]]] = {}
                while not wanted <= set(firing):
                    assert loop.time() < deadline, f"alerts {wanted - set(firing)} did not fire; firing: {firing}"
                    before = await prom.scalar('sum(akece_webhooks_deliveries_total{outcome!="success"})') or 0
                    await publish_messages(publisher, account, 5, start=sent)
                    sent += 5

                    async def failures_seen(before: float = before) -> float | None:
                        now = await prom.scalar('sum(akece_webhooks_deliveries_total{outcome!="success"})')
                        return now if now is not None and now > before else None

                    await prom.eventually(failures_seen, "failed attempts to show up in Prometheus")
                    firing = await prom.firing()

                assert {a.get("reason") for a in firing["AkeceWebhooksDeadLettersGrowing"]} == {"exhausted"}
                ratio = await prom.scalar("akece_webhooks:delivery_success:ratio_rate10m")
                assert ratio is not None and ratio < 0.9
                assert "AkeceWebhooksTargetDown" not in firing
                # The inputs of the lag and retry-tier alerts are live, per group and per tier.
                lag = await prom.query("akece_webhooks:consumer_lag:sum")
                assert {s["metric"]["topic"] for s in lag} >= {topics.events, topics.deliveries}, lag
                tiers = await prom.query("akece_webhooks:retry_tier_behind_seconds:max")
                assert {s["metric"]["tier"] for s in tiers} == {"1s", "2s"}, tiers
                assert "AkeceWebhooksJobDown" not in firing
