"""Kafka outages, with real processes and a broker of this module's own.

Every long-running role (``deliver``, ``router``, ``api``, ``run --role ...``) started while the
broker is unreachable stays up, answers 503 on ``/readyz``, logs one line per window rather than one
per try, and resumes by itself when the broker comes; SIGTERM still stops it within its grace, and
``AKECE_KAFKA_UNAVAILABLE_EXIT_S`` makes it exit instead. A broker SIGKILLed under load (right after
a delivery worker was itself killed and restarted) and started again on the same data dir loses no
delivery.

The broker here is this module's own (free ports, a temporary data dir), never the shared one: the
tests stop, kill and restart it. Waits poll a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from schemas.examples import example
from services.devtools.ports import free_port
from services.publisher.publisher import Publisher
from services.shared import kafka
from services.shared.settings import Settings
from tests.conftest import make_settings
from tests.delivery_support import delivery, make_webhook, produce, stack
from tests.kafka_broker import RestartableBroker as Broker
from tests.kafka_broker import restartable_broker
from tests.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "outage-test-admin-token-0123456789"
LOG_WINDOW_S = 8.0  # AKECE_KAFKA_UNAVAILABLE_LOG_S of the processes
GRACE_S = 5.0  # AKECE_DELIVERY_SHUTDOWN_GRACE_S of the processes
SESSION_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with restartable_broker(tmp_path_factory.mktemp("outage-kafka")) as own:
        yield own


@pytest.fixture
async def up(broker: Broker) -> Broker:
    """The module's broker, running (an earlier test may have left it down)."""
    if not broker.running():
        await broker.start()
    return broker


# --- processes -------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    out: Path
    err: Path
    metrics_port: int
    api_port: int

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.out.read_bytes().splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if name is None or event.get("event") == name:
                found.append(event)
        return found

    def stderr(self) -> list[str]:
        return self.err.read_text(errors="replace").splitlines()

    def alive(self) -> bool:
        return self.process.returncode is None

    async def readyz(self) -> tuple[int, dict[str, Any]] | None:
        """Status and body of /readyz; None while nothing listens yet."""
        try:
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{self.metrics_port}/readyz",
                             timeout=aiohttp.ClientTimeout(total=5)) as response:
                return response.status, await response.json()
        except aiohttp.ClientConnectionError:
            return None

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as response:
            return await response.text()

    async def wait_ready(self, status: int, timeout: float = 60.0) -> dict[str, Any]:
        async def answered() -> dict[str, Any] | None:
            found = await self.readyz()
            return found[1] if found is not None and found[0] == status else None
        body: dict[str, Any] = await until(answered, timeout, f"{self.name} /readyz {status}")
        return body

    async def stop(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
        return code, time.monotonic() - started


def env_for(settings: Settings, bootstrap: str, metrics_port: int, api_port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AKECE_")}
    env.update({
        "AKECE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AKECE_TOPIC_PREFIX": settings.topic_prefix,
        "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
        "AKECE_RETRY_SCHEDULE": ",".join(str(d) for d in settings.retry.schedule),
        "AKECE_RETRY_JITTER": "0",
        "AKECE_KAFKA_PARTITIONS": str(settings.kafka.partitions),
        "AKECE_KAFKA_SESSION_TIMEOUT_MS": str(int(SESSION_TIMEOUT_S * 1000)),
        "AKECE_KAFKA_REBALANCE_TIMEOUT_MS": "10000",
        "AKECE_KAFKA_UNAVAILABLE_LOG_S": str(LOG_WINDOW_S),
        "AKECE_DELIVERY_SHUTDOWN_GRACE_S": str(GRACE_S),
        "AKECE_METRICS_HOST": "127.0.0.1",
        "AKECE_METRICS_PORT": str(metrics_port),
        "AKECE_DELIVERY_PROCESSES": "1",
        "AKECE_ROUTER_PROCESSES": "1",
        "AKECE_API_HOST": "127.0.0.1",
        "AKECE_API_PORT": str(api_port),
        "AKECE_API_ADMIN_TOKEN": ADMIN_TOKEN,
        "AKECE_LOG_LEVEL": "info",
        "AKECE_LOG_FORMAT": "json",
    })
    env.update(extra)
    return env


@asynccontextmanager
async def processes(tmp_path: Path, settings: Settings, bootstrap: str, *commands: list[str],
                    **extra: str) -> AsyncIterator[list[Proc]]:
    """``akece-webhooks <command>`` processes, each with its own ports and log files; killed on exit."""
    started: list[Proc] = []
    try:
        for command in commands:
            name = f"{sum(1 for _ in os.scandir(tmp_path))}-{'-'.join(command)}"
            metrics_port, api_port = free_port(), free_port()
            out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
            with out.open("wb") as stdout, err.open("wb") as stderr:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "services", *command, cwd=ROOT, stdout=stdout, stderr=stderr,
                    env=env_for(settings, bootstrap, metrics_port, api_port, **extra))
            started.append(Proc(name, process, out, err, metrics_port, api_port))
        yield started
    finally:
        for proc in started:
            if proc.alive():
                proc.process.kill()
                await proc.process.wait()


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.2)


async def logged(proc: Proc, event: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]]:
        return proc.events(event)
    return await until(found, timeout, f"{event} in the log of {proc.name}")  # type: ignore[no-any-return]


async def api_call(proc: Proc, method: str, path: str, body: dict[str, Any] | None = None,
                   ) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as http, \
            http.request(method, f"http://127.0.0.1:{proc.api_port}{path}", json=body,
                         headers={"api_access_token": ADMIN_TOKEN},
                         timeout=aiohttp.ClientTimeout(total=10)) as response:
        payload = await response.json() if response.content_type == "application/json" else {}
        return response.status, payload, dict(response.headers)


def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


ROLES = (["deliver"], ["router"], ["api"], ["run", "--role", "all"])


# --- tests -----------------------------------------------------------------------------------------
async def test_sigterm_while_waiting_for_the_broker_exits_within_the_grace(tmp_path: Path) -> None:
    settings = make_settings(dead_address())
    async with processes(tmp_path, settings, settings.kafka.bootstrap_servers, *ROLES) as procs:
        for proc in procs:
            body = await proc.wait_ready(503, timeout=30)
            assert body["workers"]["kafka"] is False, body
            await logged(proc, "kafka.unavailable")
        results = await asyncio.gather(*(proc.stop(timeout=GRACE_S + 10) for proc in procs))
    for proc, (code, took) in zip(procs, results, strict=True):
        assert code == 0, (proc.name, proc.stderr())
        assert took < GRACE_S, f"{proc.name} took {took:.1f}s to stop"


async def test_unavailable_exit_s_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    settings = make_settings(dead_address())
    commands = (["deliver"], ["router"], ["run", "--role", "all"])
    async with processes(tmp_path, settings, settings.kafka.bootstrap_servers, *commands,
                         AKECE_KAFKA_UNAVAILABLE_EXIT_S="3") as procs:
        async with asyncio.timeout(30):
            codes = [await proc.process.wait() for proc in procs]
    for proc, code in zip(procs, codes, strict=True):
        assert code not in (0, None), proc.name
        errors = [e for e in proc.events() if e.get("level") == "error"]
        assert len(errors) == 1, (proc.name, errors)
        assert "AKECE_KAFKA_UNAVAILABLE_EXIT_S=3" in errors[0]["error"]
        assert f"Kafka at {settings.kafka.bootstrap_servers} unreachable for 3" in errors[0]["error"]
        assert proc.stderr() == [], proc.name  # and no client library lines


async def test_one_shot_commands_still_fail_fast_with_one_line(tmp_path: Path) -> None:
    settings = make_settings(dead_address())
    commands = (["topics", "ensure"], ["webhooks", "list"], ["dlq", "list"], ["status"])
    async with processes(tmp_path, settings, settings.kafka.bootstrap_servers, *commands) as procs:
        async with asyncio.timeout(30):
            codes = [await proc.process.wait() for proc in procs]
    for proc, code in zip(procs, codes, strict=True):
        lines = proc.stderr() + [line for line in proc.out.read_text().splitlines() if line.strip()]
        assert code != 0 and len(lines) == 1, (proc.name, code, lines)
        assert f"cannot reach Kafka at {settings.kafka.bootstrap_servers}" in lines[0], proc.name


async def test_every_role_started_without_the_broker_waits_and_resumes(
        tmp_path: Path, up: Broker, receiver: Receiver) -> None:
    settings = make_settings(up.bootstrap)
    hook = make_webhook(receiver.url("/resumed"))
    async with stack(settings) as s:  # topics and a webhook while the broker runs
        await s.add(hook)
    await up.stop()

    async with processes(tmp_path, settings, up.bootstrap, ["deliver"], ["router"], ["api"]) as procs:
        deliver, _, api = procs
        for proc in procs:
            body = await proc.wait_ready(503, timeout=30)
            assert body["workers"]["kafka"] is False, body
        assert 'akece_webhooks_worker_ready{role="delivery"} 0.0' in await deliver.metrics()
        asked = time.monotonic()
        status, body, headers = await api_call(api, "POST", "/api/v1/accounts/1/webhooks",
                                               {"url": receiver.url("/second")})
        assert status == 503 and "Kafka is unreachable" in body["error"], body
        assert headers.get("Retry-After") and time.monotonic() - asked < 2  # at once, not a hang
        for proc in procs:
            await logged(proc, "kafka.unavailable")

        down_from = time.monotonic()
        await up.start()
        for proc in procs:
            await proc.wait_ready(200, timeout=60)
        outage = time.monotonic() - down_from + 1
        assert all(proc.alive() for proc in procs)

        async with Publisher(settings) as publisher:
            published = await publisher.publish(example("message_created", account_id=hook.account_id))
        arrived = await receiver.next_request(timeout=30)
        assert arrived.path == "/resumed" and orjson.loads(arrived.body)["event"] == "message_created"
        assert published.offset >= 0
        status, body, _ = await api_call(api, "POST", "/api/v1/accounts/1/webhooks",
                                         {"url": receiver.url("/second")})
        assert status == 200, body  # the write path is back too

        results = await asyncio.gather(*(proc.stop(timeout=GRACE_S + 10) for proc in procs))
    assert [code for code, _ in results] == [0, 0, 0]
    for proc in procs:
        lost, back = proc.events("kafka.unavailable"), proc.events("kafka.available")
        still = proc.events("kafka.still_unavailable")
        assert len(lost) == 1 and len(back) == 1, proc.name
        assert len(still) <= outage / LOG_WINDOW_S + 1, (proc.name, outage, still)
        tries = back[0]["tries"]
        assert tries > len(still) + 1, f"{proc.name}: {tries} tries in {len(still) + 2} lines: one line per try?"
        assert len(proc.stderr()) <= 3, (proc.name, proc.stderr())  # client library lines are not per try
        print(f"\n{proc.name}: outage ~{outage:.1f}s, {tries} tries, {len(still) + 2} lines, "
              f"{back[0]['client_lines_suppressed']} client lines suppressed")


async def test_broker_killed_under_load_after_a_worker_restart_loses_nothing(
        tmp_path: Path, up: Broker, receiver: Receiver) -> None:
    """A worker is SIGKILLed mid-load and two start in its place; then the broker is SIGKILLed and
    restarted, for longer than the group session. One of the two rides the outage out in place (its
    acknowledgement bound is longer than the outage: its consumer must rejoin the group by itself),
    the other fails its acknowledgements and is restarted; every delivery arrives. Meanwhile an idle
    ``run --role all`` (topics of its own) refuses a webhook write at once and stops in time."""
    settings, idle = make_settings(up.bootstrap), make_settings(up.bootstrap)
    total, hooks_n = 900, 3
    async with stack(settings) as s:
        hooks = [make_webhook(receiver.url(f"/load/{n}")) for n in range(hooks_n)]
        for n in range(hooks_n):
            receiver.set(f"/load/{n}", delay=0.05)
        await s.add(*hooks)
    await kafka.ensure_topics(idle)
    items = [delivery(hooks[n % hooks_n], conversation=n % 60, seq=n) for n in range(total)]
    expected = {item.delivery_id for item in items}
    await produce(settings, items)
    load = {"AKECE_DELIVERY_PER_WEBHOOK_CONCURRENCY": "2", "AKECE_DELIVERY_MAX_IN_FLIGHT": "100"}

    async with processes(tmp_path, settings, up.bootstrap, ["deliver"], **load) as (first,):
        await receiver.wait_for(100, timeout=60)
        first.process.send_signal(signal.SIGKILL)
        assert await first.process.wait() == -signal.SIGKILL
    async with processes(tmp_path, idle, up.bootstrap, ["run", "--role", "all"]) as (bystander,), \
            processes(tmp_path, settings, up.bootstrap, ["deliver"], **load,
                      AKECE_KAFKA_SEND_TIMEOUT_S="4") as (restarting,), \
            processes(tmp_path, settings, up.bootstrap, ["deliver"], **load,
                      AKECE_KAFKA_SEND_TIMEOUT_S="300") as (riding,):
        await receiver.wait_for(len(receiver.requests) + 150, timeout=60)  # the new workers deliver
        for proc in (bystander, restarting, riding):
            await proc.wait_ready(200)
        at_kill = len(receiver.requests)
        killed_at = time.monotonic()
        await up.kill()
        for proc in (bystander, restarting, riding):
            await proc.wait_ready(503, timeout=15)

        asked = time.monotonic()
        status, body, headers = await api_call(bystander, "POST", "/api/v1/accounts/1/webhooks",
                                               {"url": receiver.url("/never")})
        assert status == 503 and body["error"].startswith("Kafka is unreachable: the change was not stored"), body
        assert headers.get("Retry-After") and time.monotonic() - asked < 2  # at once, not after a send timeout
        code, took = await bystander.stop(timeout=GRACE_S + 15)
        assert code == 0 and took < GRACE_S, (code, took, "\n".join(bystander.stderr()[-40:]))

        restarted_at, restarted_wall = time.monotonic(), time.time()
        await up.start()
        outage, broker_start = time.monotonic() - killed_at, time.monotonic() - restarted_at
        assert outage > SESSION_TIMEOUT_S, "the group session outlived the outage: rejoining was not tested"
        assert at_kill < total, "everything was delivered before the broker was killed: nothing was tested"

        async def all_arrived() -> bool:
            return expected <= {r.headers["webhook-id"] for r in receiver.requests}
        await until(all_arrived, 120, "every delivery at the receiver")
        for proc in (restarting, riding):
            await proc.wait_ready(200, timeout=30)
        codes = [(await proc.stop(timeout=GRACE_S + 15))[0] for proc in (restarting, riding)]
    assert codes == [0, 0], (restarting.stderr()[-20:], riding.stderr()[-20:])
    seen = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(seen) == expected
    assert len(restarting.events("delivery.started")) >= 2, "the short acknowledgement bound never restarted a worker"
    assert len(riding.events("delivery.started")) == 1, "the long acknowledgement bound should ride it out in place"
    # After the broker's restart: the worker's own kafka.available line can come after its consumer has
    # rejoined and delivered (its probe's next try), and what it held at the kill was done within a second.
    back = datetime.fromtimestamp(restarted_wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert any(e["timestamp"] > back for e in riding.events("delivery.attempted")), \
        "the worker that rode the outage out delivered nothing after it: its consumer did not rejoin"
    commits = {p.name: sum(e["failures"] for e in p.events("delivery.commit_failed")) for p in (restarting, riding)}
    print(f"\nbroker killed after {at_kill} of {total} requests, outage {outage:.1f}s (broker start "
          f"{broker_start:.1f}s), {len(receiver.requests)} requests, {sum(seen.values()) - len(seen)} duplicates, "
          f"failed commits logged {commits}, bystander stopped in {took:.2f}s")
