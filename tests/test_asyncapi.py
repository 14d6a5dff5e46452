"""``schemas/asyncapi.yaml``: valid for the official AsyncAPI parser, and saying what the code does.

The parser (npm ``@asyncapi/parser``, installed once under ``build/node/asyncapi``) validates the
document and resolves its references to ``schemas/json/``; the other tests compare the document with
the code itself (topic names, header constants, the records the stages write, the pydantic models),
deriving each expected set from the code rather than from a copy, so neither can change alone.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import orjson
import pytest
import yaml
from pydantic import BaseModel

from schemas import EVENT_MODELS, EVENT_NAMES
from schemas.generate import JSON_DIR, schema_id
from services.contract import headers as h
from services.contract.deliveries import DeliveryMeta, first_attempt_headers
from services.contract.topics import Topics, format_delay
from services.delivery import ping, records
from services.delivery.attempt import INTERNAL
from services.delivery.policy import PERMANENT, AttemptResult, Retry
from services.replay.runs import Claim, Run
from services.router import core
from services.router.core import IncomingEvent, Invalid, route
from services.shared.settings import Settings
from tests import toolchains

DOCUMENT = toolchains.ROOT / "schemas" / "asyncapi.yaml"
Json = dict[str, Any]


@pytest.fixture(scope="module")
def parsed() -> Json:
    """What the official parser makes of the document (``tests/asyncapi/validate.js``)."""
    modules = toolchains.node_modules(toolchains.ROOT / "tests" / "asyncapi", "asyncapi")
    done = subprocess.run(["node", str(toolchains.ROOT / "tests" / "asyncapi" / "validate.js"), str(DOCUMENT)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "NODE_PATH": str(modules)})
    assert done.returncode == 0, done.stderr
    result: Json = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def doc() -> Json:
    loaded: Json = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def schema(doc: Json, name: str) -> Json:
    found: Json = doc["components"]["schemas"][name]
    return found


def props(node: Json) -> set[str]:
    """Property names of a schema, through ``allOf``."""
    return set(node.get("properties", {})).union(*(props(part) for part in node.get("allOf", [])))


def local(doc: Json, node: Json) -> Json:
    """A ``#/components/...`` reference followed; anything else as it is."""
    ref = node.get("$ref", "")
    if not ref.startswith("#/"):
        return node
    for part in ref[2:].split("/"):
        doc = doc[part]
    return doc


# --- the official parser -----------------------------------------------------------------------------
def test_the_official_parser_finds_no_error(parsed: Json) -> None:
    assert parsed["errors"] == []


def test_events_channel_carries_the_twelve_events_with_their_json_schemas(parsed: Json) -> None:
    assert parsed["channels"]["events"]["messages"] == list(EVENT_NAMES)
    for event in EVENT_NAMES:
        message = parsed["messages"][event]
        payload = message["payload"]  # resolved from schemas/json/ by the parser
        on_disk = orjson.loads((JSON_DIR / f"{event}.json").read_bytes())
        assert payload["$id"] == schema_id(event) == on_disk["$id"]
        assert (payload["title"], payload["required"]) == (EVENT_MODELS[event].__name__, on_disk["required"])
        base, own = message["headers"]["allOf"]
        assert own["properties"]["ce_type"]["const"] == event
        assert tuple(base["required"]) == h.CLOUDEVENT_REQUIRED


# --- the document against the code -------------------------------------------------------------------
def test_channel_addresses_are_the_topics_under_the_default_prefix(doc: Json) -> None:
    defaults = Settings()
    topics = Topics.from_settings(defaults)
    addresses = {name: channel["address"] for name, channel in doc["channels"].items()}
    assert addresses == {"events": topics.events, "invalid": topics.invalid, "deliveries": topics.deliveries,
                         "retry": f"{defaults.topic_prefix}.webhooks.retry.{{delay}}", "deadLetters": topics.dlq,
                         "attempts": topics.attempts, "replays": topics.replays}
    delays = [format_delay(d) for d in topics.retry_delays]
    assert doc["components"]["parameters"]["delay"]["examples"] == delays
    assert [addresses["retry"].format(delay=d) for d in delays] == list(topics.retry_topics)
    events = doc["channels"]["events"]["bindings"]["kafka"]
    assert (events["partitions"], events["topicConfiguration"]["retention.ms"]) == (
        defaults.kafka.partitions, defaults.kafka.events_retention_ms)


def test_cloudevents_headers_are_the_ones_the_router_reads(doc: Json) -> None:
    ce = schema(doc, "CloudEventHeaders")
    assert tuple(ce["required"]) == h.CLOUDEVENT_REQUIRED
    assert set(ce["properties"]) == {h.CE_SPECVERSION, h.CE_ID, h.CE_SOURCE, h.CE_TYPE, h.CE_TIME, h.CE_ACCOUNT_ID,
                                     h.CONTENT_TYPE}
    assert ce["properties"][h.CE_TYPE]["enum"] == list(EVENT_NAMES)


def _first_attempt() -> h.Headers:
    return first_attempt_headers(event_id="e", event_type="message_created", account_id="1", webhook_id=7,
                                 event_time="2026-01-01T00:00:00Z", routed_time="2026-01-01T00:00:01Z")


def _meta() -> DeliveryMeta:
    return DeliveryMeta.from_headers(h.to_dict(_first_attempt()))


def test_delivery_headers_are_the_ones_the_router_writes_and_the_worker_requires(doc: Json) -> None:
    written = [name for name, _ in _first_attempt()]
    delivery = schema(doc, "DeliveryHeaders")
    assert set(delivery["properties"]) == {*written, h.REPLAY_ID, h.RECOVER_ID}
    required = set()
    for name in written:  # required: what DeliveryMeta.from_headers cannot do without
        try:
            DeliveryMeta.from_headers({k: v for k, v in h.to_dict(_first_attempt()).items() if k != name})
        except (KeyError, ValueError):
            required.add(name)
    assert set(delivery["required"]) == required


def test_retry_and_dead_letter_headers_are_the_ones_the_worker_writes(doc: Json) -> None:
    first = {name for name, _ in _first_attempt()}
    retried: set[str] = set()
    dead: set[str] = set()
    for failed in (AttemptResult(status=500, body=b"no", duration_s=0.1), AttemptResult(error_class="timeout")):
        retried |= {n for n, _ in records.retry_headers(_first_attempt(), _meta(), failed, Retry(5, 5, 105), 100.0)}
        dead |= {n for n, _ in records.dlq_headers(_first_attempt(), _meta(), failed, "exhausted", 100.0, 101.0)}
    story = props(schema(doc, "AttemptStory"))
    assert story == (retried & dead) - first
    assert props(local(doc, schema(doc, "RetryHeaders")["allOf"][2])) == retried - first - story
    extra = local(doc, schema(doc, "DeadLetterHeaders")["allOf"][2])
    assert set(extra["properties"]) == dead - first - story
    assert set(extra["properties"]["akece_dlq_reason"]["enum"]) == {"exhausted", "malformed_record", INTERNAL,
                                                                    *PERMANENT}


def test_invalid_headers_are_the_ones_the_router_adds(doc: Json) -> None:
    result = route(IncomingEvent("akece.events", 0, 5, None, b"{}", []), lambda *_: (), routed_time="t")
    assert isinstance(result, Invalid)
    invalid = schema(doc, "InvalidHeaders")
    assert set(invalid["properties"]) == set(invalid["required"]) == {name for name, _ in result.headers}
    assert invalid["properties"]["akece_invalid_reason"]["enum"] == [
        core.MISSING_HEADER, core.BAD_HEADER, core.BAD_KEY, core.UNKNOWN_EVENT_TYPE, core.TOO_LARGE, core.NOT_JSON,
        core.SCHEMA_INVALID, core.NO_ACCOUNT, core.ACCOUNT_MISMATCH, core.INTERNAL]


def test_attempt_record_fields_are_the_ones_the_worker_logs(doc: Json) -> None:
    record = orjson.loads(records.attempt_record(_meta(), AttemptResult(status=200), outcome="success",
                                                 next_delay_s=None, dlq_reason=None, started_at=100.0,
                                                 response_limit=100))
    attempt = schema(doc, "AttemptRecord")
    assert set(attempt["properties"]) == set(record)
    assert set(attempt["properties"]["outcome"]["enum"]) == {"success", "retry", "dead_letter", ping.OUTCOME}


@pytest.mark.parametrize(("name", "model"), [("ReplayRun", Run), ("ReplayClaim", Claim)])
def test_replay_records_are_the_ledger_models(doc: Json, name: str, model: type[BaseModel]) -> None:
    described = schema(doc, name)
    assert set(described["properties"]) == set(model.model_fields)
    assert described["required"] == list(model.model_fields)  # model_dump_json writes every field
