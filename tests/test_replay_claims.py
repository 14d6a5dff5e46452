"""Two identical replays at once send every record once (claims), and a slow run keeps heartbeating.

The races are real: two engines planned before either claims, in one loop against the real broker;
two CLI processes started together; two API calls at once. The receiver is the real delivery
worker posting to a test receiver, so "once" is what an endpoint sees, not just the topic.
"""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from bench.fixtures import (
    DeadSpec,
    Store,
    cli_env,
    produce_dead_letters,
    put_webhooks,
    running_store,
    webhook,
)
from services.contract import headers as h
from services.contract.dead_letters import DlqFilter
from services.contract.topics import Topics
from services.replay import runs as ledger
from services.replay.dlq_source import DlqSource
from services.replay.engine import Engine
from services.replay.plans import Options, Plan, ReplayRefusedError, Summary
from services.replay.runs import Claim, Run, RunBook
from services.replay.window import Window, offset_ranges, read_ranges, reader
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.webhooks import Webhook
from tests.delivery_support import make_webhook, stack
from tests.receiver import Receiver

ADMIN_TOKEN = "admin-token-0123456789"

pytest_plugins = ["tests.receiver"]


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (the event), failing after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            found = await check()
            if found:
                return found
            await asyncio.sleep(every)


async def _replayed(settings: Settings, topic: str) -> Counter[str]:
    ids: Counter[str] = Counter()
    async with kafka.started(reader(settings)) as consumer:
        async for batch in read_ranges(consumer, topic, await offset_ranges(consumer, topic, Window())):
            ids.update(h.to_dict(r.headers)[h.DELIVERY_ID] for r in batch)
    return ids


def _engine(store: Store, filters: DlqFilter, **options: Any) -> Engine[Any]:
    settings = store.table._settings
    return Engine(settings, DlqSource(settings, filters, store.table.get), producer=store.producer, store=store,
                  options=Options(user="tester", **options))


def _specs(hook: Webhook, count: int) -> list[DeadSpec]:
    now = time.time()
    return [DeadSpec(hook.id, hook.account_id, now - 600 + i, conversation=i, event_id=f"evt-{hook.id}-{i}")
            for i in range(count)]


async def _exactly_once_at(receiver: Receiver, path: str, specs: list[DeadSpec]) -> None:
    await receiver.wait_for(len(specs), timeout=30, path=path)
    got = Counter(r.headers["webhook-id"] for r in receiver.for_path(path))
    assert got == Counter(s.delivery_id for s in specs), got


# --- two engines in one loop, both planned before either claims ----------------------------------------
async def test_two_identical_replays_planned_at_once_send_each_record_once(settings: Settings,
                                                                          receiver: Receiver) -> None:
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/twice"))
        await s.add(hook)
        specs = _specs(hook, 30)
        store = Store(settings, s.table, s.store._producer)
        await produce_dead_letters(store.producer, s.topics.dlq, specs)
        one, two = _engine(store, DlqFilter.of(webhook=hook.id)), _engine(store, DlqFilter.of(webhook=hook.id))
        window = Window.parse("1h", None)
        plans: list[Plan] = list(await asyncio.gather(one.plan(window), two.plan(window)))
        assert [p.total for p in plans] == [30, 30] and plans[0].run_id == plans[1].run_id  # neither saw the other

        results = await asyncio.gather(one.execute(plans[0]), two.execute(plans[1]), return_exceptions=True)
        [done] = [r for r in results if isinstance(r, Summary)]
        [refused] = [r for r in results if isinstance(r, ReplayRefusedError)]
        assert done.status == "done" and done.enqueued == 30
        message = str(refused)
        assert "\n" not in message and f"replay {done.plan.run_id} " in message and "was started first" in message

        await s.until_idle()
        await _exactly_once_at(receiver, "/twice", specs)
        book = await RunBook.load(settings)
        assert book.runs[done.plan.run_id].status == "done" and book.claims == {}  # both claims released
        assert book.runs[done.plan.run_id].claim is not None


# --- two CLI processes started together -------------------------------------------------------------------
def _replay_process(settings: Settings, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "services", "dlq", "replay", "--since", "1h", "--yes", "--json", *extra]
    return subprocess.Popen(command, env=cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)


async def test_two_identical_cli_replays_at_once_one_is_refused_naming_the_other(settings: Settings,
                                                                                receiver: Receiver) -> None:
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/cli"))
        await s.add(hook)
        specs = _specs(hook, 40)
        await produce_dead_letters(s.store._producer, s.topics.dlq, specs)
        # throttled so the winner is still running whenever the other one plans or claims
        processes = [_replay_process(settings, "--webhook", str(hook.id), "--rate", "8") for _ in range(2)]
        outcomes = await asyncio.gather(*(asyncio.to_thread(p.communicate, timeout=90) for p in processes))
        codes = [p.returncode for p in processes]
        assert sorted(codes) == [0, 3], (codes, [err[-2000:] for _, err in outcomes])
        winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
        result = orjson.loads(outcomes[winner][0])
        assert result["status"] == "done" and result["enqueued"] == 40
        refusal = [line for line in outcomes[loser][1].splitlines() if line.startswith("refused: ")]
        assert len(refusal) == 1, outcomes[loser][1][-2000:]
        assert result["run_id"] in refusal[0] and f"pid {processes[winner].pid}" in refusal[0], refusal

        await s.until_idle()
        await _exactly_once_at(receiver, "/cli", specs)
    assert sum((await _replayed(settings, Topics.from_settings(settings).deliveries)).values()) == 40


def _start(command: list[str], settings: Settings, terminal: int) -> subprocess.Popen[bytes]:
    """The CLI with a terminal on stdin (so it asks for confirmation) and pipes for its output."""
    return subprocess.Popen(command, env=cli_env(settings), stdin=terminal, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _until_prompt(process: subprocess.Popen[bytes]) -> bytes:
    """Read the process's stdout until it asks for confirmation (it has planned); what it printed."""
    assert process.stdout is not None
    seen = b""
    while b"[y/N] " not in seen:
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            raise AssertionError(f"exited before asking: {seen.decode()[-2000:]}")
        seen += chunk
    return seen


async def test_two_cli_replays_confirmed_together_race_on_the_claim(settings: Settings, receiver: Receiver) -> None:
    """Both planned and waiting at the prompt (neither has written anything), then both confirmed."""
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/prompt"))
        await s.add(hook)
        specs = _specs(hook, 25)
        await produce_dead_letters(s.store._producer, s.topics.dlq, specs)
        command = [sys.executable, "-m", "services", "dlq", "replay", "--since", "1h", "--webhook", str(hook.id)]
        terminals = [pty.openpty() for _ in range(2)]
        processes = [_start(command, settings, slave) for _, slave in terminals]
        try:
            planned = await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(_until_prompt, p)
                                                              for p in processes)), 60)
            assert all(b"to re-enqueue: 25" in out for out in planned), planned
            assert (await RunBook.load(settings)).runs == {}  # neither has recorded anything yet
            for master, _ in terminals:
                os.write(master, b"y\n")
            outcomes = await asyncio.gather(*(asyncio.to_thread(p.communicate, timeout=60) for p in processes))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
            for master, slave in terminals:
                os.close(master)
                os.close(slave)
        codes = [p.returncode for p in processes]
        assert sorted(codes) == [0, 3], (codes, [err.decode()[-2000:] for _, err in outcomes])
        winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
        done = outcomes[winner][0].decode()
        refusal = outcomes[loser][1].decode().strip().splitlines()
        assert "done: 25 re-enqueued" in done, done
        run_id = done.rsplit("run ", 1)[1].strip()
        assert refusal[-1].startswith(f"refused: replay {run_id} over an overlapping range was started first by "), \
            refusal
        assert f"pid {processes[winner].pid} " in refusal[-1]

        await s.until_idle()
        await _exactly_once_at(receiver, "/prompt", specs)


# --- two API calls at once ------------------------------------------------------------------------------
async def test_two_identical_api_replays_at_once_start_one_run(kafka_bootstrap: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from aiohttp.web import Application

    from services.ops.api import add_replay_routes
    from tests.conftest import make_settings

    settings = make_settings(kafka_bootstrap, api={"admin_token": ADMIN_TOKEN, "port": 0, "host": "127.0.0.1"})
    topics = Topics.from_settings(settings)
    await kafka.ensure_topics(settings)
    hook = webhook(1, webhook_id=801)
    specs = _specs(hook, 20)
    async with running_store(settings) as store:
        await put_webhooks(store, [hook])
        await produce_dead_letters(store.producer, topics.dlq, specs)
        app = Application()
        routes = add_replay_routes(app, settings, store.table, store, producer=store.producer)
        async with TestClient(TestServer(app)) as client:
            url, auth = "/api/v1/accounts/1/webhooks/801/replay", {"api_access_token": ADMIN_TOKEN}
            answers = await asyncio.gather(*(client.post(url, json={"since": "1h", "rate": 50}, headers=auth)
                                             for _ in range(2)))
            bodies = [await a.json() for a in answers]
            assert sorted(a.status for a in answers) == [202, 409], bodies
            started = bodies[[a.status for a in answers].index(202)]["payload"]
            refused = bodies[[a.status for a in answers].index(409)]
            assert started["replay_id"] in refused["error"], refused
            await asyncio.gather(*routes.tasks)
            again = await client.post(url, json={"since": "1h"}, headers=auth)  # after it: already replayed
            assert again.status == 409
    replayed = await _replayed(settings, topics.deliveries)
    assert replayed == Counter(s.delivery_id for s in specs)


# --- heartbeat ------------------------------------------------------------------------------------------
async def test_a_slow_run_heartbeats_while_nothing_is_sent(settings: Settings, topics: Topics) -> None:
    hook = webhook(1, webhook_id=901)
    async with running_store(settings) as store:
        await put_webhooks(store, [hook])
        await produce_dead_letters(store.producer, topics.dlq, _specs(hook, 3))
        # one record per 1000 s: the first goes at once (the bucket starts with a token), then nothing
        slow = _engine(store, DlqFilter.of(webhook=hook.id), rate=0.001, heartbeat_s=0.2, dead_after_s=1.0)
        plan = await slow.plan(Window.parse("1h", None))
        task = asyncio.create_task(slow.execute(plan))
        try:
            async def running() -> Run | None:
                run = (await RunBook.load(settings)).get(plan.run_id)
                return run if run is not None and run.status == "running" else None

            first: Run = await _until(running)
            assert first.dead_after_s == 1.0 and first.claim is not None
            await _until(lambda: _count(settings, topics.deliveries, 1))

            async def beaten() -> Run | None:  # silent on progress for more than twice dead_after_s
                run = await running()
                return run if run is not None and run.heartbeat > first.heartbeat + 2 * first.dead_after_s else None

            later: Run = await _until(beaten, timeout=15)
            assert later.enqueued == 0 and later.checkpoint == first.checkpoint  # no progress was recorded
            assert sum((await _replayed(settings, topics.deliveries)).values()) == 1  # and none was made
            assert later.live(time.time(), "another-host")  # does not look dead to another process
            with pytest.raises(ReplayRefusedError, match=f"{plan.run_id} is running now"):
                await _engine(store, DlqFilter.of(webhook=hook.id)).plan(Window.parse("1h", None))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        book = await RunBook.load(settings)
        assert book.runs[plan.run_id].status == "interrupted" and book.claims == {}


async def _count(settings: Settings, topic: str, count: int) -> bool:
    return sum((await _replayed(settings, topic)).values()) >= count


def test_heartbeat_must_be_shorter_than_dead_after() -> None:
    from services.shared.errors import ConfigError

    with pytest.raises(ConfigError, match="heartbeat_s"):
        Options(heartbeat_s=90.0, dead_after_s=ledger.STALE_AFTER_S)


def test_a_claim_is_live_until_its_run_is_recorded_or_it_goes_stale() -> None:
    now = time.time()
    claim = Claim(run_id="rp_x", kind="replay", ranges={0: (0, 10)}, user="u", host="elsewhere", pid=1, at=now,
                  dead_after_s=90.0)
    assert claim.live(now, "here", {})
    assert not claim.live(now + 91, "here", {})  # its process never recorded the run: presumed dead
    recorded: dict[str, Any] = {"rp_x": SimpleNamespace(claim=claim.id)}
    assert not claim.live(now, "here", recorded)  # its run is recorded: the run record governs
    earlier: dict[str, Any] = {"rp_x": SimpleNamespace(claim="an earlier claim")}
    assert claim.live(now, "here", earlier)
    assert not claim.model_copy(update={"host": "here", "pid": 2**22 + 1}).live(now, "here", {})  # its pid is gone
    rival = claim.model_copy(update={"id": "rival", "ranges": {0: (5, 20)}})
    assert claim.competes(rival) and not claim.competes(claim)
    assert not claim.competes(rival.model_copy(update={"kind": "recover"}))
    assert not claim.competes(rival.model_copy(update={"ranges": {0: (10, 20)}}))
