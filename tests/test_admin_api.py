"""The management API over HTTP, against the real broker: CRUD, validation, auth, restart, rotation.

Each test gets its own topics (``settings`` below adds API tokens to the shared per-test settings).
DNS answers come from a fake resolver so the private-address rules are tested without a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate as validate_openapi
from prometheus_client import CollectorRegistry

from schemas import DEFAULT_SUBSCRIPTIONS, EVENT_NAMES
from services.admin import openapi
from services.admin.app import ApiWorker, create_app
from services.admin.routes import ROUTES
from services.admin.service import AccountLocks, WebhookService
from services.admin.validation import url_error
from services.console import is_console_page
from services.contract.topics import Topics
from services.shared import kafka
from services.shared.auth import Principal, TokenAuthenticator, parse_account_tokens, token_from_headers
from services.shared.errors import ConfigError, TransportError
from services.shared.metrics import Metrics
from services.shared.netguard import NetworkGuard
from services.shared.runtime import Supervisor
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import Webhook
from tests.conftest import make_settings
from tests.test_subscriptions import LiveTable, running_store, running_table

ADMIN = "admin-token-0123456789"
ONE = "account-one-token"
TWO = "account-two-token"
DNS = {"localhost": ["127.0.0.1", "::1"], "internal.test": ["10.9.8.7"], "metadata.test": ["169.254.169.254"]}
PUBLIC_IP = "93.184.215.14"


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return with_tokens(kafka_bootstrap)


def with_tokens(bootstrap: str, **overrides: Any) -> Settings:
    api = {"admin_token": ADMIN, "account_tokens": f"1:{ONE},2:{TWO}", **overrides.pop("api", {})}
    return make_settings(bootstrap, api=api, **overrides)


def fake_guard(settings: Settings) -> NetworkGuard:
    async def resolve(host: str) -> list[str]:
        if host in DNS:
            return DNS[host]
        if host.endswith(".example.com"):
            return [PUBLIC_IP]
        raise TransportError("dns", f"cannot resolve {host}")

    return NetworkGuard(settings.allowed_private_cidrs, resolver=resolve)


@dataclass
class Api:
    client: TestClient[Any, Any]
    live: LiveTable
    metrics: Metrics

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = ADMIN,
                   raw: bytes | None = None) -> tuple[int, Any]:
        headers = {"api_access_token": token} if token else {}
        data = raw if raw is not None else None if body is None else orjson.dumps(body)
        async with self.client.request(method, path, data=data, headers=headers) as response:
            text = await response.read()
            return response.status, orjson.loads(text) if text else None

    async def create(self, account: int, body: Any, *, token: str = ADMIN) -> dict[str, Any]:
        status, answer = await self.call("POST", f"/api/v1/accounts/{account}/webhooks", body, token=token)
        assert status == 200, answer
        return answer["payload"]["webhook"]  # type: ignore[no-any-return]


@asynccontextmanager
async def running_api(settings: Settings, clock: Callable[[], float] = time.time) -> AsyncIterator[Api]:
    async with running_store(settings) as (live, store):
        metrics = Metrics(CollectorRegistry())
        app = create_app(settings, live.table, store, metrics, guard=fake_guard(settings), clock=clock)
        async with TestClient(TestServer(app)) as client:
            yield Api(client, live, metrics)


@pytest.fixture
async def api(settings: Settings, topics: Topics) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


HOOKS = "/api/v1/accounts/1/webhooks"


# --- CRUD ------------------------------------------------------------------------------------------
async def test_crud_round_trip(api: Api) -> None:
    created = await api.create(1, {"webhook": {"url": "https://crm.example.com/hooks", "name": "CRM",
                                               "subscriptions": ["message_created", "contact_created"]}})
    assert created["secret"].startswith("whsec_") and len(created["secret"]) == 50
    assert created["url"] == "https://crm.example.com/hooks" and created["account_id"] == 1
    assert created["subscriptions"] == ["message_created", "contact_created"]
    assert created["enabled"] is True and created["disabled_reason"] is None
    assert 0 < created["id"] < 2**53
    masked = f"whsec_…{created['secret'][-4:]}"

    status, listing = await api.call("GET", HOOKS)
    assert status == 200
    assert listing == {"payload": {"webhooks": [{**created, "secret": masked}]}}
    status, shown = await api.call("GET", f"{HOOKS}/{created['id']}")
    assert (status, shown["payload"]["webhook"]["secret"]) == (200, masked)

    status, patched = await api.call("PATCH", f"{HOOKS}/{created['id']}",
                                     {"name": "CRM v2", "subscriptions": ["message_updated"], "x_unknown": 1})
    hook = patched["payload"]["webhook"]
    assert status == 200 and hook["name"] == "CRM v2" and hook["subscriptions"] == ["message_updated"]
    assert hook["url"] == created["url"] and hook["secret"] == masked and hook["created_at"] == created["created_at"]
    status, put = await api.call("PUT", f"{HOOKS}/{created['id']}", {"webhook": {"url": "https://b.example.com/"}})
    assert status == 200 and put["payload"]["webhook"]["url"] == "https://b.example.com/"

    async with api.client.delete(f"{HOOKS}/{created['id']}", headers={"api_access_token": ADMIN}) as response:
        assert response.status == 200 and await response.read() == b""
    assert await api.call("GET", f"{HOOKS}/{created['id']}") == (404, {"error": "Resource could not be found"})
    assert (await api.call("PATCH", f"{HOOKS}/{created['id']}", {"name": "x"}))[0] == 404
    assert (await api.call("DELETE", f"{HOOKS}/{created['id']}"))[0] == 404
    assert await api.call("GET", HOOKS) == (200, {"payload": {"webhooks": []}})


async def test_bare_body_and_default_subscriptions(api: Api) -> None:
    created = await api.create(1, {"url": "https://n8n.example.com/webhook/abc"})
    assert created["subscriptions"] == list(DEFAULT_SUBSCRIPTIONS)
    assert len(created["subscriptions"]) == 8
    assert created["name"] is None
    every = await api.create(1, {"url": "https://all.example.com/", "subscriptions": list(EVENT_NAMES)})
    assert len(every["subscriptions"]) == 12


async def test_enable_disable_and_timeouts(api: Api) -> None:
    created = await api.create(1, {"url": "https://a.example.com/", "connect_timeout_s": 2, "total_timeout_s": 9.5})
    assert (created["connect_timeout_s"], created["total_timeout_s"]) == (2.0, 9.5)
    path = f"{HOOKS}/{created['id']}"
    _, off = await api.call("PATCH", path, {"enabled": False})
    assert off["payload"]["webhook"]["enabled"] is False
    assert off["payload"]["webhook"]["disabled_reason"] == "disabled_by_api"
    assert api.live.table.matching(1, "message_created") == ()
    _, off = await api.call("PATCH", path, {"enabled": False, "disabled_reason": "maintenance"})
    assert off["payload"]["webhook"]["disabled_reason"] == "maintenance"
    _, on = await api.call("PATCH", path, {"enabled": True})
    assert (on["payload"]["webhook"]["enabled"], on["payload"]["webhook"]["disabled_reason"]) == (True, None)
    assert [w.id for w in api.live.table.matching(1, "message_created")] == [created["id"]]
    _, cleared = await api.call("PATCH", path, {"connect_timeout_s": None})
    assert "connect_timeout_s" not in cleared["payload"]["webhook"]


# --- validation ------------------------------------------------------------------------------------
TOO_LONG = "https://x.example.com/" + "a" * 2030
INVALID = [
    ({"url": "ftp://files.example.com/x"}, "Url is invalid", ["url"]),
    ({"url": "not a url"}, "Url is invalid", ["url"]),
    ({"url": "http://"}, "Url is invalid", ["url"]),
    ({"url": "https://exa mple.com/"}, "Url is invalid", ["url"]),
    ({"url": "https://example.com:99999/"}, "Url is invalid", ["url"]),
    ({"url": 42}, "Url is invalid", ["url"]),
    ({"name": "no url"}, "Url is invalid", ["url"]),
    ({"url": TOO_LONG}, "Url is too long (maximum is 2048 characters)", ["url"]),
    ({"url": "https://a.example.com/", "subscriptions": ["message_created", "nope"]},
     "Subscriptions Invalid events", ["subscriptions"]),
    ({"url": "https://a.example.com/", "subscriptions": []}, "Subscriptions Invalid events", ["subscriptions"]),
    ({"url": "https://a.example.com/", "subscriptions": "message_created"},
     "Subscriptions Invalid events", ["subscriptions"]),
    ({"url": "mailto:x@example.com", "subscriptions": ["x"]},
     "Url is invalid, Subscriptions Invalid events", ["url", "subscriptions"]),
    ({"url": "https://a.example.com/", "enabled": "yes"}, "Enabled is invalid", ["enabled"]),
    ({"url": "https://a.example.com/", "name": "n" * 256}, "Name is too long (maximum is 255 characters)",
     ["name"]),
]


@pytest.mark.parametrize(("body", "message", "attributes"), INVALID)
async def test_validation_errors_in_chatwoots_shape(api: Api, body: dict[str, Any], message: str,
                                                    attributes: list[str]) -> None:
    assert await api.call("POST", HOOKS, body) == (422, {"message": message, "attributes": attributes})
    assert len(api.live.table) == 0


async def test_unparseable_json_is_400(api: Api) -> None:
    status, body = await api.call("POST", HOOKS, raw=b'{"url": "https://a.example.com/"')
    assert status == 400 and "not valid JSON" in body["message"]
    status, body = await api.call("POST", HOOKS, raw=b"[1, 2]")
    assert status == 400 and body["message"] == "Request body must be a JSON object"
    created = await api.create(1, {"url": "https://a.example.com/"})
    status, body = await api.call("PATCH", f"{HOOKS}/{created['id']}", raw=b"{oops")
    assert status == 400


async def test_duplicate_url_in_one_account(api: Api) -> None:
    first = await api.create(1, {"url": "https://dup.example.com/hook"})
    taken = {"message": "Url has already been taken", "attributes": ["url"]}
    assert await api.call("POST", HOOKS, {"url": "https://dup.example.com/hook"}) == (422, taken)
    await api.create(2, {"url": "https://dup.example.com/hook"})  # another account may use it
    second = await api.create(1, {"url": "https://other.example.com/hook"})
    assert await api.call("PATCH", f"{HOOKS}/{second['id']}", {"url": first["url"]}) == (422, taken)
    status, same = await api.call("PATCH", f"{HOOKS}/{first['id']}", {"url": first["url"], "name": "ok"})
    assert status == 200 and same["payload"]["webhook"]["name"] == "ok"


PRIVATE = ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.0.0.5/hook",
           "http://169.254.169.254/latest/meta-data", "http://[::1]/hook", "http://[::ffff:10.0.0.1]/",
           "http://0.0.0.0:9000/", "https://internal.test/hook", "http://metadata.test/",
           "http://100.64.1.1/", "http://[fd00:ec2::254]/"]


@pytest.mark.parametrize("url", PRIVATE)
async def test_private_network_urls_are_refused(kafka_bootstrap: str, url: str) -> None:
    settings = with_tokens(kafka_bootstrap, allowed_private_cidrs=[])
    await kafka.ensure_topics(settings)
    async with running_api(settings) as api:
        private = {"message": "Url points to a private network address", "attributes": ["url"]}
        assert await api.call("POST", HOOKS, {"url": url}) == (422, private)
        created = await api.create(1, {"url": "https://public.example.com/"})
        assert await api.call("PATCH", f"{HOOKS}/{created['id']}", {"url": url}) == (422, private)


async def test_allowlist_admits_its_ranges_only(kafka_bootstrap: str) -> None:
    settings = with_tokens(kafka_bootstrap, allowed_private_cidrs=["10.0.0.0/8"])
    await kafka.ensure_topics(settings)
    async with running_api(settings) as api:
        await api.create(1, {"url": "http://10.1.2.3:8080/hook"})
        await api.create(1, {"url": "https://internal.test/hook"})  # resolves to 10.9.8.7
        status, body = await api.call("POST", HOOKS, {"url": "http://192.168.1.10/hook"})
        assert (status, body["message"]) == (422, "Url points to a private network address")


def test_url_rules() -> None:
    assert url_error("https://example.com") is None
    assert url_error("HTTP://user:pass@example.com:8443/p?q=1#f") is None
    assert url_error("https://bücher.example/") is None
    assert url_error("http://[2606:4700::1111]/x") is None
    assert url_error("https://" + "a" * 2050) == "Url is too long (maximum is 2048 characters)"
    for bad in ("", "//example.com", "https://-bad.example/", "https://exa<mple.com/", "javascript:alert(1)",
                "https://example.com/\n"):
        assert url_error(bad) == "Url is invalid", bad


# --- auth ------------------------------------------------------------------------------------------
async def test_authentication_and_account_isolation(api: Api) -> None:
    unauthorized = (401, {"error": "Invalid Access Token"})
    assert await api.call("GET", HOOKS, token=None) == unauthorized
    assert await api.call("GET", HOOKS, token="wrong") == unauthorized
    assert await api.call("POST", HOOKS, {"url": "https://a.example.com/"}, token="wrong") == unauthorized
    assert await api.call("GET", HOOKS, token=ONE) == (200, {"payload": {"webhooks": []}})

    mine = await api.create(1, {"url": "https://one.example.com/"}, token=ONE)
    theirs = await api.create(2, {"url": "https://two.example.com/"}, token=TWO)
    not_found = (404, {"error": "Resource could not be found"})
    two = "/api/v1/accounts/2/webhooks"
    assert await api.call("GET", two, token=ONE) == not_found
    assert await api.call("POST", two, {"url": "https://x.example.com/"}, token=ONE) == not_found
    assert await api.call("GET", f"{two}/{theirs['id']}", token=ONE) == not_found
    assert await api.call("PATCH", f"{two}/{theirs['id']}", {"name": "x"}, token=ONE) == not_found
    assert await api.call("DELETE", f"{two}/{theirs['id']}", token=ONE) == not_found
    assert await api.call("POST", f"{two}/{theirs['id']}/rotate_secret", token=ONE) == not_found
    assert await api.call("GET", f"{HOOKS}/{theirs['id']}", token=ONE) == not_found  # wrong account in path
    assert await api.call("GET", f"{HOOKS}/{theirs['id']}", token=ADMIN) == not_found

    for account, hook in ((1, mine), (2, theirs)):
        status, _ = await api.call("GET", f"/api/v1/accounts/{account}/webhooks/{hook['id']}", token=ADMIN)
        assert status == 200
    headers = {"Authorization": f"Bearer {TWO}"}
    async with api.client.get(two, headers=headers) as response:
        assert response.status == 200
        assert [w["id"] for w in (await response.json())["payload"]["webhooks"]] == [theirs["id"]]


def test_token_parsing(tmp_path: Any) -> None:
    a, b, c = "token-a-0123456789", "token-b-0123456789", "token-c-0123456789"
    assert parse_account_tokens(f"1:{a}, 2:{b},1:{c}") == {a: 1, b: 2, c: 1}
    path = tmp_path / "tokens"
    path.write_text("# account tokens\n3:tok-three-0123456789\n4:tok:with:colons:0123\n\n")
    assert parse_account_tokens(f"@{path}") == {"tok-three-0123456789": 3, "tok:with:colons:0123": 4}
    for bad in ("nocolon", "x:token", "5:", f"@{tmp_path / 'missing'}"):
        with pytest.raises(ConfigError):
            parse_account_tokens(bad)
    auth = TokenAuthenticator("adm", {"a": 1})
    assert auth.authenticate("adm") == Principal(None)
    assert auth.authenticate("a") == Principal(1)
    assert auth.authenticate("b") is None and auth.authenticate(None) is None
    assert token_from_headers({"api_access_token": " t "}) == "t"
    assert token_from_headers({"Authorization": "Bearer t2"}) == "t2"
    assert token_from_headers({"Authorization": "Basic abc"}) is None


async def test_tokens_never_reach_the_logs(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    created = await api.create(1, {"url": "https://logs.example.com/path/secret-path-token"})
    await api.call("POST", f"{HOOKS}/{created['id']}/rotate_secret")
    await api.call("GET", HOOKS, token="wrong-token-value")
    out = capsys.readouterr()
    logged = out.out + out.err
    for secret in (ADMIN, ONE, "wrong-token-value", created["secret"], "secret-path-token"):
        assert secret not in logged


# --- durability ------------------------------------------------------------------------------------
async def test_restart_restores_webhooks_and_keeps_deletes(settings: Settings, topics: Topics) -> None:
    async with running_api(settings) as api:
        kept = [await api.create(1, {"url": f"https://r{i}.example.com/"}) for i in range(3)]
        gone = await api.create(1, {"url": "https://gone.example.com/"})
        assert (await api.call("DELETE", f"{HOOKS}/{gone['id']}"))[0] == 200
        secrets = {h["id"]: api.live.table.get(h["id"]).active_secrets(time.time()) for h in kept}  # type: ignore[union-attr]
        _, before = await api.call("GET", HOOKS)
    async with running_api(settings) as fresh:
        assert await fresh.call("GET", HOOKS) == (200, before)
        assert [w["id"] for w in before["payload"]["webhooks"]] == sorted(h["id"] for h in kept)
        assert (await fresh.call("GET", f"{HOOKS}/{gone['id']}"))[0] == 404
        for webhook_id, active in secrets.items():
            assert fresh.live.table.get(webhook_id).active_secrets(time.time()) == active  # type: ignore[union-attr]


async def test_two_instances_see_each_others_writes(settings: Settings, topics: Topics) -> None:
    async with running_api(settings) as one, running_api(settings) as two:
        created = await one.create(1, {"url": "https://shared.example.com/"})
        await two.live.until(lambda: two.live.table.get(created["id"]) is not None, timeout=5)
        status, shown = await two.call("GET", f"{HOOKS}/{created['id']}")
        assert status == 200 and shown["payload"]["webhook"]["url"] == created["url"]
        assert (await two.call("POST", HOOKS, {"url": created["url"]}))[0] == 422  # the duplicate is seen
        await two.call("PATCH", f"{HOOKS}/{created['id']}", {"name": "renamed by two"})
        await one.live.until(lambda: one.live.table.get(created["id"]).name == "renamed by two",  # type: ignore[union-attr]
                             timeout=5)
        await one.call("DELETE", f"{HOOKS}/{created['id']}")
        await two.live.until(lambda: two.live.table.get(created["id"]) is None, timeout=5)
        assert (await two.call("GET", f"{HOOKS}/{created['id']}"))[0] == 404


# --- rotation --------------------------------------------------------------------------------------
async def test_rotation_keeps_both_secrets_during_the_overlap(kafka_bootstrap: str) -> None:
    settings = with_tokens(kafka_bootstrap, api={"secret_overlap_s": 1})
    await kafka.ensure_topics(settings)
    now = [time.time()]  # the service's clock, moved by the test
    async with running_api(settings, clock=lambda: now[0]) as api:
        created = await api.create(1, {"url": "https://rotate.example.com/"})
        old = created["secret"]
        status, answer = await api.call("POST", f"{HOOKS}/{created['id']}/rotate_secret")
        new = answer["payload"]["webhook"]["secret"]
        assert status == 200 and new.startswith("whsec_") and new != old
        rotated_at = now[0]

        def active(at: float) -> list[str]:
            hook = api.live.table.get(created["id"])
            assert hook is not None
            return hook.active_secrets(at)

        assert active(rotated_at) == [new, old]  # both sign during the overlap, the new one first
        assert active(rotated_at + 0.99) == [new, old]
        assert active(rotated_at + 1.0) == [new]  # the old one is gone after the 1 s overlap
        _, shown = await api.call("GET", f"{HOOKS}/{created['id']}")
        assert shown["payload"]["webhook"]["secret"] == f"whsec_…{new[-4:]}"

        now[0] = rotated_at + 5  # a later rotation drops what has expired and keeps the live one
        _, again = await api.call("POST", f"{HOOKS}/{created['id']}/rotate_secret")
        newest = again["payload"]["webhook"]["secret"]
        stored = api.live.table.get(created["id"])
        assert stored is not None and [s.secret for s in stored.secrets] == [newest, new]
        assert active(now[0]) == [newest, new] and active(now[0] + 1) == [newest]


async def test_rotation_overlap_on_the_wall_clock(kafka_bootstrap: str) -> None:
    settings = with_tokens(kafka_bootstrap, api={"secret_overlap_s": 1})
    await kafka.ensure_topics(settings)
    async with running_api(settings) as api:
        created = await api.create(1, {"url": "https://wall.example.com/"})
        _, answer = await api.call("POST", f"{HOOKS}/{created['id']}/rotate_secret")
        new = answer["payload"]["webhook"]["secret"]
        hook = api.live.table.get(created["id"])
        assert hook is not None and hook.active_secrets(time.time()) == [new, created["secret"]]
        expiry = max(s.expires_at or 0 for s in hook.secrets)
        assert 0 < expiry - time.time() <= 1
        await asyncio.sleep(expiry - time.time() + 0.01)  # exactly until the recorded expiry, no guess
        assert hook.active_secrets(time.time()) == [new]


# --- operations ------------------------------------------------------------------------------------
async def test_openapi_document_is_valid_and_lists_every_route(api: Api) -> None:
    status, served = await api.call("GET", "/openapi.json", token=None)
    assert status == 200
    assert served == orjson.loads(openapi.PATH.read_bytes()) == orjson.loads(openapi.render())
    validate_openapi(served)
    documented = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    served_routes = {(r.method, r.resource.canonical) for r in api.client.app.router.routes()
                     if r.method != "HEAD" and r.resource is not None and not is_console_page(r.resource.canonical)}
    assert served_routes == documented
    assert {(r.method, r.path) for r in ROUTES} <= documented


async def test_health_metrics_and_unknown_routes(api: Api) -> None:
    assert (await api.call("GET", "/healthz", token=None))[0] == 200
    assert (await api.call("GET", "/readyz", token=None))[0] == 200
    await api.call("GET", HOOKS)
    async with api.client.get("/metrics") as response:
        text = await response.text()
    assert 'route="/api/v1/accounts/{account_id}/webhooks",status_class="2xx"' in text
    assert (await api.call("GET", "/api/v1/nothing"))[0] == 404
    status, body = await api.call("DELETE", HOOKS)
    assert status == 405 and "error" in body
    status, body = await api.call("POST", HOOKS, raw=b'{"url": "' + b"x" * 70_000 + b'"}')
    assert status == 413 and "error" in body


async def test_requests_wait_for_the_table(settings: Settings, topics: Topics) -> None:
    async with kafka.started(kafka.producer(settings)) as producer:
        table = SubscriptionTable(settings)  # never started: still loading
        app = create_app(settings, table, SubscriptionStore(settings, table, producer), Metrics(CollectorRegistry()))
        async with TestClient(TestServer(app)) as client:
            async with client.get(HOOKS, headers={"api_access_token": ADMIN}) as response:
                assert response.status == 503
            async with client.get("/readyz") as response:
                assert response.status == 503


async def test_worker_serves_on_port_zero_and_drains_on_stop(settings: Settings, topics: Topics) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_dns(_: str) -> list[str]:
        entered.set()
        await release.wait()
        return [PUBLIC_IP]

    metrics = Metrics(CollectorRegistry())
    stop = asyncio.Event()
    async with kafka.started(kafka.producer(settings)) as producer:
        table = SubscriptionTable(settings)
        worker = ApiWorker(settings, table, SubscriptionStore(settings, table, producer), metrics,
                           guard=NetworkGuard([], resolver=slow_dns))
        supervisor = Supervisor([table, worker], metrics=metrics, metrics_host="127.0.0.1", metrics_port=0,
                                shutdown_deadline=15, stop=stop)
        worker.bind_health(supervisor.states)
        running = asyncio.create_task(supervisor.run(install_signals=False))
        port = await worker.wait_serving()
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(headers={"api_access_token": ADMIN}) as http:
            async with asyncio.timeout(30):
                while not worker.ready():
                    await table.wait_ready()
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["workers"] == {"subscriptions": True, "api": True}
            post = asyncio.create_task(http.post(f"{base}{HOOKS}", json={"url": "https://slow.example.com/"}))
            await entered.wait()  # the request is in flight
            stop.set()
            await asyncio.sleep(0.1)  # let shutdown begin while the request waits on DNS
            release.set()
            response = await post
            assert response.status == 200
            created = (await response.json())["payload"]["webhook"]
            response.release()
        assert await running == 0
    async with running_store(settings) as (live, _):
        assert live.table.get(created["id"]) is not None  # the in-flight write landed


class StuckTable(SubscriptionTable):
    """Ready, but never applies anything: every write's wait for it times out."""

    def ready(self) -> bool:
        return True


async def test_a_stored_write_not_yet_visible_is_a_clear_503(settings: Settings, topics: Topics) -> None:
    async with kafka.started(kafka.producer(settings)) as producer:
        table = StuckTable(settings)
        store = SubscriptionStore(settings, table, producer, apply_timeout_s=0.2)
        app = create_app(settings, table, store, Metrics(CollectorRegistry()), guard=fake_guard(settings))
        async with TestClient(TestServer(app)) as client, client.post(
                HOOKS, json={"url": "https://late.example.com/"}, headers={"api_access_token": ADMIN}) as response:
            status, body = response.status, await response.json()
    assert status == 503, body
    assert body["stored"] is True and "stored but is not yet visible" in body["error"]
    assert "Do not repeat it" in body["error"]  # a repeated create would make a second webhook
    async with running_table(settings) as live:  # it is durable: a table that does follow the topic has it
        stored = live.table.get(body["webhook_id"])
        assert stored is not None and stored.url == "https://late.example.com/"


class InstantStore:
    async def put(self, webhook: Webhook) -> Webhook:
        return webhook


async def test_account_locks_serialize_and_are_dropped_when_free() -> None:
    locks = AccountLocks()
    order: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(name: str, account: int = 1) -> None:
        async with locks.hold(account):
            order.append(f"{name} in")
            if name == "first":
                entered.set()
                await release.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(hold("first"))
    await entered.wait()
    second, cancelled = asyncio.create_task(hold("second")), asyncio.create_task(hold("cancelled"))
    await asyncio.sleep(0)  # one loop turn: both now wait on the lock
    cancelled.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    assert len(locks) == 1  # held by the first, awaited by the second: kept
    await hold("other", account=2)  # another account is not blocked
    assert len(locks) == 1
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first in", "other in", "other out", "first out", "second in", "second out"]
    assert len(locks) == 0
    with pytest.raises(RuntimeError):
        async with locks.hold(3):
            raise RuntimeError("a failed write")
    assert len(locks) == 0

    settings = make_settings("127.0.0.1:9")  # the service over a store that needs no broker
    service = WebhookService(SubscriptionTable(settings), cast(SubscriptionStore, InstantStore()),
                             fake_guard(settings), secret_overlap_s=60)
    await asyncio.gather(*(service.create(account, {"url": "https://many.example.com/"})
                           for account in range(1, 201)))
    assert len(service._locks) == 0  # 200 accounts written, none remembered


# --- CLI -------------------------------------------------------------------------------------------
def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers, "PATH": "/usr/bin:/bin",
           "AKECE_TOPIC_PREFIX": settings.topic_prefix, "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8"}
    return subprocess.run([sys.executable, "-m", "services", "webhooks", *args], text=True,
                          capture_output=True, env=env, timeout=90, check=False)


async def test_cli_mirror(settings: Settings, topics: Topics) -> None:
    loop = asyncio.get_running_loop()

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await loop.run_in_executor(None, lambda: _cli(settings, *args))

    made = await cli("create", "--account", "5", "--url", "http://127.0.0.1:9/hook", "--name", "ops",
                     "--subscriptions", "message_created,contact_created", "--json")
    assert made.returncode == 0, made.stderr
    hook = orjson.loads(made.stdout)
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) == 50
    assert hook["subscriptions"] == ["message_created", "contact_created"]

    listed = await cli("list", "--account", "5", "--json")
    assert [h["secret"] for h in orjson.loads(listed.stdout)] == [f"whsec_…{hook['secret'][-4:]}"]
    table = await cli("list")
    assert str(hook["id"]) in table.stdout and "http://127.0.0.1:9/hook" in table.stdout

    updated = await cli("update", str(hook["id"]), "--disable", "--reason", "maintenance", "--json")
    assert orjson.loads(updated.stdout)["disabled_reason"] == "maintenance"
    rotated = await cli("rotate-secret", str(hook["id"]), "--json")
    assert orjson.loads(rotated.stdout)["secret"] not in (hook["secret"], None)

    refused = await cli("create", "--account", "5", "--url", "http://10.0.0.1/")
    assert refused.returncode == 2 and "Url points to a private network address" in refused.stderr
    duplicate = await cli("create", "--account", "5", "--url", "http://127.0.0.1:9/hook")
    assert duplicate.returncode == 2 and "Url has already been taken" in duplicate.stderr
    assert (await cli("delete", str(hook["id"]))).returncode == 0
    assert (await cli("delete", str(hook["id"]))).returncode == 4
    assert orjson.loads((await cli("list", "--json")).stdout) == []


async def test_api_process_exits_zero_on_sigterm(settings: Settings, topics: Topics) -> None:
    env = {"AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers, "PATH": "/usr/bin:/bin",
           "AKECE_TOPIC_PREFIX": settings.topic_prefix, "AKECE_API_HOST": "127.0.0.1", "AKECE_API_PORT": "0",
           "AKECE_METRICS_HOST": "127.0.0.1", "AKECE_METRICS_PORT": "0", "AKECE_API_ADMIN_TOKEN": ADMIN,
           "AKECE_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services", "api", env=env,
                                                   stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            port = None
            while port is None:
                line = orjson.loads(await process.stdout.readline())
                port = line.get("port") if line.get("event") == "api.listening" else None
            async with aiohttp.ClientSession(headers={"api_access_token": ADMIN}) as http:
                while True:  # ready once the table has caught up
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                    await process.stdout.readline()  # the next log line (subscriptions.ready)
                async with http.post(f"http://127.0.0.1:{port}{HOOKS}", json={"url": "https://p.example.com/"}) as r:
                    assert r.status == 200
            process.send_signal(signal.SIGTERM)
            await process.stdout.read()
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
