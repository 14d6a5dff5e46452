"""No secret, token or signature in any log line or metric: the whole pipeline on the real broker.

The API (real tokens) creates four webhooks and rotates one's secret; the publisher sends one event;
the router fans it out; a delivery worker delivers it through a 200, a 500 then 200, a 410 and a
refused connection. Every log line of the three stages (structlog at debug, stdlib at info, and
anything printed) and the ``/metrics`` text of their three registries are searched for every
secret (``whsec_...``, its base64 key, the key's bytes as hex), every signature the receiver got
(``webhook-signature`` and ``X-Chatwoot-Signature``, whole and in parts) and every API token.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from schemas.examples import example
from services.admin.app import create_app
from services.devtools.ports import free_port
from services.publisher.publisher import Publisher
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from tests.conftest import make_settings
from tests.delivery_support import read_topic, stack
from tests.log_capture import captured_logs
from tests.receiver import Behavior, Receiver
from tests.test_router import route_until_idle

ADMIN = "admin-token-must-not-leak-4711"
ACCOUNT = "account-token-must-not-leak-0815"
WRONG = "wrong-token-must-not-leak-1234"
ACCOUNT_ID = 31
MIN_SECRET_PART = 16  # shorter fragments could match by chance (hex digits in a uuid)


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return make_settings(kafka_bootstrap, log_level="debug",
                         api={"admin_token": ADMIN, "account_tokens": f"{ACCOUNT_ID}:{ACCOUNT}"})


class Api:
    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    async def call(self, method: str, path: str, body: Any = None, token: str = ADMIN) -> tuple[int, Any]:
        data = None if body is None else orjson.dumps(body)
        async with self.client.request(method, path, data=data, headers={"api_access_token": token}) as response:
            text = await response.read()
            return response.status, orjson.loads(text) if text else None

    async def create(self, url: str, token: str = ADMIN) -> dict[str, Any]:
        status, answer = await self.call("POST", f"/api/v1/accounts/{ACCOUNT_ID}/webhooks",
                                         {"url": url, "subscriptions": ["message_created"]}, token)
        assert status == 200, answer
        webhook: dict[str, Any] = answer["payload"]["webhook"]
        return webhook


@asynccontextmanager
async def running_api(settings: Settings, table: SubscriptionTable, store: SubscriptionStore,
                      metrics: Metrics) -> AsyncIterator[Api]:
    async with TestClient(TestServer(create_app(settings, table, store, metrics))) as client:
        yield Api(client)


def secret_forms(secret: str) -> set[str]:
    key = secret.removeprefix("whsec_")
    return {secret, key, base64.b64decode(key).hex()}


def signature_forms(headers: dict[str, str]) -> set[str]:
    """Every signature value of one request: whole headers, each ``v1,`` part, the bare digests."""
    forms = {headers["webhook-signature"], headers["X-Chatwoot-Signature"],
             headers["X-Chatwoot-Signature"].removeprefix("sha256=")}
    for part in headers["webhook-signature"].split():
        forms |= {part, part.removeprefix("v1,")}
    return forms


async def test_no_secret_token_or_signature_in_logs_or_metrics(settings: Settings, receiver: Receiver,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    receiver.script("/flaky", Behavior(status=500))
    receiver.set("/gone", status=410)
    registries = {stage: Metrics(CollectorRegistry()) for stage in ("api", "router", "delivery")}
    with captured_logs() as logs:
        async with stack(settings) as s:
            s.metrics = registries["delivery"]
            async with running_api(settings, s.table, s.store, registries["api"]) as api:
                hooks = [await api.create(receiver.url("/ok")), await api.create(receiver.url("/flaky"), ACCOUNT),
                         await api.create(receiver.url("/gone")),
                         await api.create(f"http://127.0.0.1:{free_port()}/nobody")]
                status, rotated = await api.call("POST", f"/api/v1/accounts/{ACCOUNT_ID}/webhooks/"
                                                 f"{hooks[0]['id']}/rotate_secret")
                assert status == 200, rotated
                assert (await api.call("GET", f"/api/v1/accounts/{ACCOUNT_ID}/webhooks", token=WRONG))[0] == 401
                assert (await api.call("GET", f"/api/v1/accounts/{ACCOUNT_ID}/webhooks", token=ACCOUNT))[0] == 200
            async with Publisher(settings) as publisher:
                await publisher.publish(example("message_created", account_id=ACCOUNT_ID, conversation_id=9))
            await route_until_idle(settings, registries["router"])
            await s.until_idle()
            attempts = await read_topic(settings, s.topics.attempts, 1 + 2 + 1 + 3)
            stored = [s.table.get(hook["id"]) for hook in hooks]
    printed = capsys.readouterr()

    # What must not leak, gathered from the API's answers, the table and the receiver's requests.
    secrets: set[str] = {ADMIN, ACCOUNT, WRONG}
    for hook in hooks:
        assert hook["secret"].startswith("whsec_")
        secrets |= secret_forms(hook["secret"])
    for webhook in stored:
        assert webhook is not None
        for signing in webhook.secrets:
            secrets |= secret_forms(signing.secret)
    rotated_hook = stored[0]
    assert rotated_hook is not None and len(rotated_hook.secrets) == 2  # the rotation: old and new both sign
    assert [r.path for r in receiver.requests].count("/flaky") == 2 and len(receiver.requests) == 4
    for request in receiver.requests:
        assert len(request.headers["webhook-signature"].split()) == (2 if request.path == "/ok" else 1)
        secrets |= signature_forms(request.headers)
    assert all(len(secret) >= MIN_SECRET_PART for secret in secrets)

    # The places searched hold what they should, so an empty search cannot pass for a clean one.
    assert len(logs.events("delivery.attempted")) == len(attempts) == 7
    assert len(logs.events("webhook.created")) == 4 and logs.events("webhook.secret_rotated")
    assert logs.events("event.routed") and logs.events("webhook.disabled")
    delivered = registries["delivery"].registry.get_sample_value(
        "akece_webhooks_deliveries_total", {"outcome": "success", "status_class": "2xx"})
    assert delivered == 2  # /ok, and /flaky's second attempt
    assert registries["router"].registry.get_sample_value("akece_webhooks_deliveries_routed_total") == 4
    pages = {stage: generate_latest(m.registry).decode() for stage, m in registries.items()}
    assert 'route="' in pages["api"]

    searched = {"logs": logs.text(), "stdout": printed.out, "stderr": printed.err, **pages}
    leaks = {(where, secret[:12]) for where, text in searched.items() for secret in secrets if secret in text}
    assert not leaks, f"found in {sorted(leaks)}"
