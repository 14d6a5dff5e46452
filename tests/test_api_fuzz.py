"""Schemathesis against the running API: ``akece-webhooks api`` as a real process on the real broker.

Every operation of the served ``/openapi.json`` is called with generated requests (valid ones and,
where the document allows, invalid ones), once with the admin token and once with account 1's
token. Each answer must not be a 5xx, must match the document (status code, content type, headers,
body schema) and must not reveal another account: with account 1's token, no 2xx names account 2's
path or webhook. Path parameters are drawn from the seeded webhooks of both accounts as well as
from arbitrary numbers and digit-like text (Unicode digits included), so cross-account probes and
odd ids are tried, not only the numbers schemathesis would make.

Bounded: ``MAX_EXAMPLES`` per operation, token and generation mode keep the module near a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.admin import openapi
from services.replay.window import reader
from services.shared import kafka
from tests.conftest import make_settings
from tests.test_admin_api import running_api, with_tokens

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ADMIN = "fuzz-admin-token-0123456789"
ONE = "fuzz-account-one-token"
TWO = "fuzz-account-two-token"
MAX_EXAMPLES = 50
OPERATIONS = [(path, method, op["operationId"]) for path, methods in openapi.build()["paths"].items()
              for method, op in methods.items()]


@dataclass
class RunningApi:
    base: str
    seeded: dict[int, list[int]]  # account -> its webhook ids, made before fuzzing
    lines: list[dict[str, Any]] = field(default_factory=list)  # the process's log, read as it runs

    def ids_not_of(self, account: int) -> set[int]:
        return {i for a, ids in self.seeded.items() if a != account for i in ids}


def _env(bootstrap: str, prefix: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "AKECE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AKECE_TOPIC_PREFIX": prefix,
            "AKECE_API_HOST": "127.0.0.1", "AKECE_API_PORT": "0", "AKECE_METRICS_HOST": "127.0.0.1",
            "AKECE_METRICS_PORT": "0", "AKECE_API_ADMIN_TOKEN": ADMIN,
            "AKECE_API_ACCOUNT_TOKENS": f"1:{ONE},2:{TWO}", "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
            "AKECE_LOG_FORMAT": "json", "AKECE_LOG_LEVEL": "info"}


def _read_lines(stream: Any, into: list[dict[str, Any]], events: queue.Queue[dict[str, Any]]) -> None:
    for raw in stream:  # drained to the end, so the process never blocks on a full pipe
        with contextlib.suppress(orjson.JSONDecodeError):
            line = orjson.loads(raw)
            into.append(line)
            events.put(line)


@pytest.fixture(scope="module")
def api_process(kafka_bootstrap: str) -> Iterator[RunningApi]:
    settings = make_settings(kafka_bootstrap)
    asyncio.run(kafka.ensure_topics(settings))
    process = subprocess.Popen([sys.executable, "-m", "services", "api"], env=_env(kafka_bootstrap,
                               settings.topic_prefix), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[dict[str, Any]] = []
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines, events), daemon=True)
    reader.start()
    try:
        base = f"http://127.0.0.1:{_port_when_ready(events, process)}"
        seeded = {account: [_create(base, account, n) for n in range(2)] for account in (1, 2)}
        yield RunningApi(base, seeded, lines)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)


def _port_when_ready(events: queue.Queue[dict[str, Any]], process: subprocess.Popen[bytes]) -> int:
    port, ready, deadline = None, False, time.monotonic() + 60
    while not (port and ready):
        assert process.poll() is None, "the API process exited"
        assert time.monotonic() < deadline, "the API did not get ready within 60 s"
        with contextlib.suppress(queue.Empty):
            line = events.get(timeout=1)
            port = line["port"] if line.get("event") == "api.listening" else port
            ready = ready or line.get("event") == "subscriptions.ready"
    assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
    return int(port)


def _create(base: str, account: int, n: int) -> int:
    response = requests.post(f"{base}/api/v1/accounts/{account}/webhooks", timeout=30,
                             headers={"api_access_token": ADMIN},
                             json={"url": f"http://127.0.0.1:9/a{account}-{n}", "name": f"seed {n}"})
    assert response.status_code == 200, response.text
    return int(response.json()["payload"]["webhook"]["id"])


@pytest.fixture(scope="module")
def schema(api_process: RunningApi) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_process.base}/openapi.json")


def no_cross_account(account: int, others: set[int]) -> Any:
    """A check: with ``account``'s token, no 2xx answers another account's path or shows its webhook."""
    def check(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
        if not 200 <= response.status_code < 300 or "account_id" not in case.path_parameters:
            return None
        path_account, path_id = str(case.path_parameters["account_id"]), str(case.path_parameters.get("id", ""))
        assert path_account == str(account), f"account {account}'s token was answered {response.status_code} " \
                                             f"on account {path_account}'s path"
        assert not (path_id.isdigit() and int(path_id) in others), \
            f"account {account}'s token reached another account's webhook {path_id}"
        body = response.json() if response.content else None
        payload = body.get("payload") if isinstance(body, dict) else None
        shown = [payload.get("webhook"), *(payload.get("webhooks") or [])] if isinstance(payload, dict) else []
        for hook in filter(None, shown):
            assert hook.get("account_id") == account and hook.get("id") not in others, \
                f"account {account}'s token was shown webhook {hook.get('id')} of account {hook.get('account_id')}"
        return True
    return check


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, ignored_auth]
# Odd path values: Unicode digits (int() refuses some that str.isdigit() accepts), letters, huge numbers.
ODD_TEXT = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=20) | st.text(min_size=1, max_size=20)


def _path_values(api: RunningApi, names: list[str]) -> st.SearchStrategy[dict[str, Any] | None]:
    ids = [i for hooks in api.seeded.values() for i in hooks]
    choices = {"account_id": st.one_of(st.sampled_from([1, 2]), st.integers(), ODD_TEXT),
               "id": st.one_of(st.sampled_from(ids), st.integers(), ODD_TEXT),
               "replay_id": st.one_of(st.uuids().map(str), ODD_TEXT)}
    given_values = st.fixed_dictionaries({name: choices[name] for name in names})
    return st.none() | given_values if names else st.none()  # None: schemathesis draws them


@pytest.mark.parametrize("who", ["admin", "account"])
@pytest.mark.parametrize(("path", "method", "operation_id"), OPERATIONS, ids=[o[2] for o in OPERATIONS])
def test_every_answer_matches_the_document(api_process: RunningApi, schema: schemathesis.BaseSchema, path: str,
                                           method: str, operation_id: str, who: str) -> None:
    api = api_process
    operation = schema[path][method.upper()]
    token = ADMIN if who == "admin" else ONE
    headers = {"api_access_token": token}
    checks = CHECKS + ([no_cross_account(1, api.ids_not_of(1))] if who == "account" else [])
    names = [p.name for p in operation.path_parameters]
    http = requests.Session()
    logged = len(api.lines)

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(data=st.data(), mode=st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
    def probe(data: st.DataObject, mode: GenerationMode) -> None:
        fixed = data.draw(_path_values(api, names), label="path")
        case = data.draw(operation.as_strategy(mode, path_parameters=fixed), label="case")
        response = case.call(base_url=api.base, session=http, headers=headers, timeout=30)
        case.validate_response(response, checks=checks, headers=headers)

    probe()
    internal = [line for line in api.lines[logged:] if line.get("event") == "api.internal_error"]
    assert not internal, internal


# --- what the fuzzing found, pinned -----------------------------------------------------------------
# str.isdigit() takes them; int() refuses "²" (a 500 before) and reads ARABIC-INDIC DIGIT ONE as 1
ODD_DIGITS = ("²", "\u0661", "12³")


async def test_unicode_digits_in_ids_and_limits_are_a_404_or_400_never_a_500(kafka_bootstrap: str) -> None:
    settings = with_tokens(kafka_bootstrap)
    await kafka.ensure_topics(settings)
    async with running_api(settings) as api:
        hook = (await api.create(1, {"url": "https://h.example.com/"}))["id"]
        base = "/api/v1/accounts"
        for odd in ODD_DIGITS:
            for path in (f"{base}/{odd}/webhooks", f"{base}/1/webhooks/{odd}", f"{base}/{odd}/webhooks/{hook}",
                         f"{base}/1/webhooks/{odd}/deliveries", f"{base}/{odd}/webhooks/{hook}/dead_letters",
                         f"{base}/1/webhooks/{odd}/rotate_secret"):
                method = "POST" if path.endswith("rotate_secret") else "GET"
                assert await api.call(method, path) == (404, {"error": "Resource could not be found"}), path
            for route in ("deliveries", "dead_letters"):
                status, answer = await api.call("GET", f"{base}/1/webhooks/{hook}/{route}?limit={odd}")
                assert (status, answer["message"]) == (400, "limit must be 1..1000"), route
        assert (await api.call("GET", f"{base}/1/webhooks/{hook}/deliveries?limit=99999999999999999999"))[0] == 400


async def test_a_group_less_consumer_closed_at_once_stops_whole_and_raises_nothing_of_its_own(
        kafka_bootstrap: str) -> None:
    """aiokafka's group-less consumer, stopped before its internal task ran once, raises that task's
    CancelledError from ``stop()`` before closing its fetcher: a scan refused right after its consumer
    started dropped the API's connection, and its fetch loop kept running."""
    settings = make_settings(kafka_bootstrap)
    await kafka.ensure_topics(settings)
    before = asyncio.all_tasks()
    async with kafka.started(reader(settings)):
        pass
    with pytest.raises(LookupError, match="mine"):
        async with kafka.started(reader(settings)):
            raise LookupError("mine")
    left = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()}
    assert not left, left
