"""Every receiver in ``examples/receivers/`` verifies real deliveries and refuses forged ones.

One pipeline (real broker, real delivery worker) serves every receiver; each receiver example runs as
its own process with its webhook's secret. Deliveries are written to the deliveries topic as the
router writes them and signed by the delivery worker; what each receiver answered is read back
from the attempt log, where a user sees it (``status``, ``response_excerpt``).

- a delivery verifies (200 ``processed``); the same delivery again (as a replay sends it) is
  answered 200 ``duplicate``;
- a request the worker signed, replayed with a tampered body, is refused (401), and so is the same
  body signed more than 5 minutes ago (signed by the worker's signing code with an old timestamp:
  the worker only signs with its own clock);
- after a rotation, while the old secret overlaps, Standard Webhooks receivers that still hold it
  verify (both signatures are sent) and Chatwoot ones refuse (only the current secret signs that
  header); once the old secret stopped signing, every receiver holding it refuses.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from services.contract.topics import Topics
from services.delivery.signing import request_headers
from services.shared.settings import Settings
from services.shared.webhooks import SigningSecret, Webhook, new_secret
from tests import toolchains
from tests.conftest import make_settings
from tests.delivery_support import delivery, make_webhook, produce, read_topic
from tests.pipeline_support import Pipeline, running_pipeline
from tests.receiver import Receiver

EXAMPLES = toolchains.ROOT / "examples" / "receivers"
START_TIMEOUT_S = 30.0
STALE_S = 6 * 60


@dataclass
class Command:
    argv: list[str]
    cwd: Path
    env: dict[str, str]


def python(script: str, tmp: Path) -> Command:
    return Command([sys.executable, script], EXAMPLES / "python", {"DEDUP_DB": str(tmp / "dedup.sqlite3")})


def node(script: str, _: Path) -> Command:
    modules = toolchains.node_modules(EXAMPLES / "node", "receivers")
    return Command(["node", script], EXAMPLES / "node", {"NODE_PATH": str(modules)})


def go(_: Path) -> Command:
    return Command([str(toolchains.go_binary(EXAMPLES / "go", "receiver"))], EXAMPLES / "go", {})


# name -> (scheme, command builder)
RECEIVERS: dict[str, tuple[str, Callable[[Path], Command]]] = {
    "python-standardwebhooks": ("standard", lambda tmp: python("standard_webhooks_receiver.py", tmp)),
    "python-chatwoot": ("chatwoot", lambda tmp: python("chatwoot_receiver.py", tmp)),
    "node-standardwebhooks": ("standard", lambda tmp: node("standard-webhooks.js", tmp)),
    "node-chatwoot": ("chatwoot", lambda tmp: node("chatwoot.js", tmp)),
    "go-standardwebhooks": ("standard", go),
}



class Running:
    """A receiver example running as a process, listening on a free port."""

    def __init__(self, command: Command, secret: str) -> None:
        self.command = command
        self.secret = secret
        self.url = ""
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Running:
        env = {**os.environ, **self.command.env, "WEBHOOK_SECRET": self.secret, "HOST": "127.0.0.1", "PORT": "0"}
        self._process = process = await asyncio.create_subprocess_exec(
            *self.command.argv, cwd=self.command.cwd, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert process.stdout is not None
        try:
            line = (await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)).decode()
        except TimeoutError:
            line = ""
        if not line.startswith("listening on http://"):
            await self.__aexit__()
            assert process.stderr is not None
            pytest.fail(f"{self.command.argv} did not start: {line!r} {(await process.stderr.read()).decode()}")
        self.url = line.split()[-1] + "/hooks/akece"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()


@dataclass
class Setup:
    pipeline: Pipeline
    capture: Receiver


@pytest.fixture(scope="module")
async def setup(kafka_bootstrap: str) -> AsyncIterator[Setup]:
    async with Receiver() as capture, running_pipeline(make_settings(kafka_bootstrap)) as pipeline:
        yield Setup(pipeline, capture)


async def attempts_of(settings: Settings, delivery_id: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The first ``count`` attempt log records of a delivery, in log order (waits for them)."""
    records = await read_topic(settings, Topics.from_settings(settings).attempts, count, timeout,
                               where=lambda r: orjson.loads(r.value)["delivery_id"] == delivery_id)
    return [orjson.loads(r.value) for r in records[:count]]


async def deliver(setup: Setup, webhook: Webhook, *, again: int = 1) -> list[dict[str, Any]]:
    """One delivery, written ``again`` times (the same record, as a replay writes it): its first attempts."""
    record = delivery(webhook)
    await produce(setup.pipeline.settings, [record] * again)
    return await attempts_of(setup.pipeline.settings, record.delivery_id, again)


def answer(attempt: dict[str, Any]) -> tuple[int | None, str]:
    excerpt = orjson.loads(attempt["response_excerpt"] or "{}")
    return attempt["status"], excerpt.get("status") or excerpt.get("error") or ""


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """Status and the lower-cased reason (``status`` or ``error``) a receiver answered."""
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        payload = orjson.loads(await response.read())
        return response.status, (payload.get("status") or payload.get("error") or "").lower()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECEIVERS))
async def test_receiver_example_verifies_deliveries_and_refuses_forgeries(name: str, setup: Setup,
                                                                         tmp_path: Path) -> None:
    scheme, build = RECEIVERS[name]
    command = await asyncio.to_thread(build, tmp_path)  # builds (cached) off the loop the pipeline runs on
    old, new = new_secret(), new_secret()
    webhook = make_webhook("http://127.0.0.1:9/not-yet")
    webhook.secrets = [SigningSecret(secret=old, created_at="2026-01-01T00:00:00.000Z")]
    async with Running(command, old) as receiver:
        try:
            await check_receiver(setup, name, scheme, receiver, webhook, new)
        finally:  # its retries would only meet a closed port from now on
            for webhook_id in (webhook.id, webhook.id + 1):
                await setup.pipeline.store.delete(webhook_id)


async def check_receiver(setup: Setup, name: str, scheme: str, receiver: Running, webhook: Webhook,
                         new: str) -> None:
    """The checks of the module docstring, for one running receiver example."""
    old = webhook.secrets[0].secret
    webhook.url = receiver.url
    await setup.pipeline.add(webhook)

    first, again = await deliver(setup, webhook, again=2)
    assert answer(first) == (200, "processed")
    assert answer(again) == (200, "duplicate")

    # A request the worker signed with this secret, captured, then forged.
    capture = webhook.model_copy(update={"id": webhook.id + 1, "url": setup.capture.url(f"/{name}")})
    await setup.pipeline.add(capture)
    await deliver(setup, capture)
    signed = await setup.capture.first(lambda r: r.path == f"/{name}")
    assert await post(receiver.url, signed.body, signed.headers) == (200, "processed")  # as sent: authentic
    tampered = signed.body.replace(b'"content":"', b'"content":"tampered ', 1)
    assert tampered != signed.body
    status, reason = await post(receiver.url, tampered, signed.headers)
    assert (status, "signature" in reason) == (401, True), reason
    stale = request_headers(delivery_id=signed.headers["webhook-id"] + "-stale",
                            timestamp=int(time.time()) - STALE_S, body=signed.body, secrets=[old])
    status, reason = await post(receiver.url, signed.body, stale)  # validly signed, but for another time
    assert (status, "timestamp" in reason) == (401, True), reason

    # Rotation: the new secret signs; the old one overlaps for an hour, then stops signing.
    overlap = [SigningSecret(secret=new, created_at="2026-01-02T00:00:00.000Z"),
               SigningSecret(secret=old, created_at="2026-01-01T00:00:00.000Z", expires_at=time.time() + 3600)]
    await setup.pipeline.add(webhook.model_copy(update={"secrets": overlap}))
    (during,) = await deliver(setup, webhook)
    assert answer(during) == ((200, "processed") if scheme == "standard" else (401, "signature mismatch"))
    rotated_out = [overlap[0], overlap[1].model_copy(update={"expires_at": time.time() - 1})]
    await setup.pipeline.add(webhook.model_copy(update={"secrets": rotated_out}))
    (after,) = await deliver(setup, webhook)
    assert answer(after)[0] == 401
    assert "signature" in answer(after)[1].lower()
