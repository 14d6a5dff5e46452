"""No input stops the delivery worker, and no error text repeats a URL: real broker, real receivers.

- Poison inputs, table-driven: webhook URLs stored before the one URL rule that the sender cannot
  parse, receivers answering with odd Retry-After values, headers, status lines and bodies, and
  records with a null body or odd headers. The worker stays up, every other webhook's deliveries
  arrive, each poison delivery ends in the DLQ with its reason and error class.
- A URL carrying secrets (credentials, path, query) failing every way: no secret in the logs, the
  attempts topic, the DLQ or /metrics.
- Bounds: the in-flight byte budget pauses fetching; a webhook disabled (or deleted) loses its circuit
  state; a retry-tier record whose due time lies far ahead is held at most its tier's delay.

Retry schedule 1 s, 2 s, no jitter (three attempts). Tests wait for events, never for time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import generate_latest

from services.contract import headers as h
from services.delivery import attempt as attempt_module
from services.devtools.ports import free_port
from services.shared import kafka
from services.shared.settings import Settings
from tests.conftest import make_settings
from tests.delivery_support import Delivery, committed, delivery, make_webhook, produce, read_topic, stack
from tests.log_capture import captured_logs
from tests.raw_receiver import RawReceiver
from tests.receiver import Receiver

WAIT_S = 60.0


def answer(status_line: str, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [status_line.encode(), *headers, b"Content-Length: %d" % len(body), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# What a receiver sends (path -> bytes on the wire) and what the poison delivery must end as.
@dataclass(frozen=True)
class Answer:
    wire: bytes
    error_class: str
    retry_after: bool = False  # a 429/503 whose Retry-After must be ignored (the schedule's 1 s applies)


ANSWERS = {
    "/retry-after/superscript": Answer(answer("HTTP/1.1 429 Slow Down", "Retry-After: ²".encode()), "http_status",
                                       True),
    "/retry-after/arabic-digit": Answer(answer("HTTP/1.1 503 Busy", "Retry-After: ٣".encode()), "http_status", True),
    "/retry-after/exponent": Answer(answer("HTTP/1.1 429 Slow Down", b"Retry-After: 1e3"), "http_status", True),
    "/retry-after/negative": Answer(answer("HTTP/1.1 429 Slow Down", b"Retry-After: -1"), "http_status", True),
    "/retry-after/huge": Answer(answer("HTTP/1.1 429 Slow Down", b"Retry-After: " + b"9" * 400), "http_status", True),
    "/retry-after/bad-date": Answer(answer("HTTP/1.1 503 Busy", b"Retry-After: Sun, 06 Nov 1994 99:99:99 GMT"),
                                    "http_status", True),
    "/retry-after/twice": Answer(answer("HTTP/1.1 429 Slow Down", b"Retry-After: 1", b"Retry-After: x"),
                                 "http_status"),
    "/header/not-utf8": Answer(answer("HTTP/1.1 500 Oops", b"X-Odd: \xff\xfe\x80"), "http_status"),
    "/header/too-long": Answer(answer("HTTP/1.1 200 OK", b"X-Long: " + b"a" * 20_000), "protocol_error"),
    "/status/999": Answer(answer("HTTP/1.1 999 Odd"), "http_status"),
    "/status/garbage": Answer(answer("HTTP/1.1 2x0 OK"), "protocol_error"),
    "/body/not-utf8": Answer(answer("HTTP/1.1 500 Oops", body=b"\xff\xfe\x00\x80 not text"), "http_status"),
}

# Stored before the one URL rule (the API refuses them now); the sender cannot parse them.
POISON_URLS = {
    "backslash-user": "http://a\\@hooks.example.com/",
    "backslash-host": "https://hooks.example.com\\@x/",
    "soft-hyphen": "http://ex\u00adample.com/",
    "bracket-then-text": "http://[::1]x@hooks.example.com/",
    "empty-brackets": "http://[]@",
    "colon-in-user": "http://a%3Ab:pw@127.0.0.1:9/",
    "non-canonical-ip": "http://127.1:9/",
}


async def produce_raw(settings: Settings, records: Sequence[tuple[bytes | None, bytes | None, h.Headers]],
                      topic: str) -> None:
    async with kafka.started(kafka.producer(settings)) as producer:
        acks = [await producer.send(topic, value=value, key=key, headers=headers) for key, value, headers in records]
        await asyncio.gather(*acks)


async def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """A bounded wait on state the worker updates from its own timers (its gauges: every 0.5 s)."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"no {what} within {timeout}s")


def dlq_by_delivery(records: list[Any]) -> dict[str, dict[str, str]]:
    return {h.to_dict(r.headers)[h.DELIVERY_ID]: h.to_dict(r.headers) for r in records}


async def test_poison_inputs_end_in_the_dlq_and_everyone_else_is_delivered(settings: Settings,
                                                                           receiver: Receiver) -> None:
    async with stack(settings) as s, RawReceiver({p: a.wire for p, a in ANSWERS.items()}) as raw:
        healthy = [make_webhook(receiver.url(f"/ok/{n}")) for n in range(3)]
        by_url = {name: make_webhook(url) for name, url in POISON_URLS.items()}
        by_answer = {path: make_webhook(raw.url(path)) for path in ANSWERS}
        null_body, bad_attempt, bad_webhook_id = (make_webhook(receiver.url(f"/record/{n}")) for n in range(3))
        await s.add(*healthy, *by_url.values(), *by_answer.values(), null_body, bad_attempt, bad_webhook_id)

        poisons: dict[str, tuple[Delivery, str, str | None]] = {}  # delivery id -> (delivery, reason, class)
        for name, hook in by_url.items():
            poisons[name] = (delivery(hook), "invalid_url", "invalid_url")
        for path, hook in by_answer.items():
            poisons[path] = (delivery(hook), "exhausted", ANSWERS[path].error_class)
        poisons["null-body"] = (delivery(null_body), "exhausted", "internal")
        poisons["attempt--5"] = (delivery(bad_attempt), "malformed_record", None)
        poisons["webhook-id-abc"] = (delivery(bad_webhook_id), "malformed_record", None)
        records: list[tuple[bytes | None, bytes | None, h.Headers]] = [
            (d.key, d.value, d.headers) for name, (d, _, _) in poisons.items()
            if name not in ("null-body", "attempt--5", "webhook-id-abc")]
        records.append((poisons["null-body"][0].key, None, poisons["null-body"][0].headers))
        records.append((poisons["attempt--5"][0].key, poisons["attempt--5"][0].value,
                        h.replace(poisons["attempt--5"][0].headers, {h.ATTEMPT: "-5"})))
        records.append((poisons["webhook-id-abc"][0].key, poisons["webhook-id-abc"][0].value,
                        h.replace(poisons["webhook-id-abc"][0].headers, {h.WEBHOOK_ID: "abc"})))
        # Due at infinity: held at most the longest tier (2 s), then delivered like any other.
        forever = delivery(healthy[0], seq=99)
        records.append((forever.key, forever.value, h.replace(forever.headers, {h.DUE_AT: "inf"})))
        good = [delivery(hook, seq=n) for hook in healthy for n in range(4)]

        async with s.running():
            await produce_raw(settings, records, s.topics.deliveries)  # the poison first, in every partition
            await produce(settings, good)
            arrived = await receiver.wait_for(len(good) + 1, timeout=WAIT_S, prefix="/ok/")
            dead = dlq_by_delivery(await read_topic(settings, s.topics.dlq, len(poisons), timeout=WAIT_S))
            attempts = [orjson.loads(r.value) for r in await read_topic(
                settings, s.topics.attempts, len(POISON_URLS) + 3 * (len(ANSWERS) + 1) + len(good) + 1,
                timeout=WAIT_S)]

    assert {r.headers["webhook-id"] for r in arrived} == {d.delivery_id for d in [*good, forever]}
    wrong = {name: (dead.get(d.delivery_id, {}).get(h.DLQ_REASON), dead.get(d.delivery_id, {}).get(h.LAST_ERROR_CLASS))
             for name, (d, reason, klass) in poisons.items()
             if (dead.get(d.delivery_id, {}).get(h.DLQ_REASON), dead.get(d.delivery_id, {}).get(h.LAST_ERROR_CLASS))
             != (reason, klass)}
    assert not wrong, f"dead-lettered with another reason/class than expected: {wrong}"
    for name in POISON_URLS:  # permanent: never retried, never sent
        assert dead[poisons[name][0].delivery_id][h.ATTEMPTS] == "0", name
    first = {(a["delivery_id"], a["attempt"]): a for a in attempts}
    for path, spec in ANSWERS.items():
        if spec.retry_after:  # ignored: the schedule's first delay, not the header's
            assert first[poisons[path][0].delivery_id, 1]["next_delay_ms"] == 1000, path
    assert s.sample("akece_webhooks_internal_errors_total", stage="delivery") == 3  # the null body, 3 attempts


# --- no secret in any error text --------------------------------------------------------------------------
SECRETS = ("SECRETUSER", "SECRETPASS", "SECRETPATH", "SECRETQUERY")
SECRET_TAIL = "/hook/SECRETPATH?token=SECRETQUERY"


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full: connections to it time out (SYNs dropped), never refused."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in (*fillers, server):
            sock.close()


async def test_no_secret_of_a_url_in_logs_attempts_dlq_or_metrics(settings: Settings, receiver: Receiver) -> None:
    receiver.set("/hook/SECRETPATH", status=500)
    with unanswered_port() as silent:
        async with stack(settings) as s:
            userinfo = "SECRETUSER:SECRETPASS@"
            hooks = {
                "connect_timeout": make_webhook(f"http://{userinfo}127.0.0.1:{silent}{SECRET_TAIL}",
                                                connect_timeout_s=0.3),
                "refused": make_webhook(f"http://{userinfo}127.0.0.1:{free_port()}{SECRET_TAIL}"),
                "http_500": make_webhook(f"http://{userinfo}127.0.0.1:{receiver.port}{SECRET_TAIL}"),
                "invalid_url": make_webhook(f"http://{userinfo}ex\u00adample.com{SECRET_TAIL}"),
                "internal": make_webhook(f"http://{userinfo}127.0.0.1:{receiver.port}{SECRET_TAIL}"),
            }
            await s.add(*hooks.values())
            items = {name: delivery(hook) for name, hook in hooks.items()}
            records = [(d.key, None if name == "internal" else d.value, d.headers) for name, d in items.items()]
            with captured_logs(level="debug") as logs:
                await produce_raw(settings, records, s.topics.deliveries)
                await s.until_idle()
            attempts = await read_topic(settings, s.topics.attempts, 4 * 3 + 1)
            dead = await read_topic(settings, s.topics.dlq, len(items))
            exposition = generate_latest(s.metrics.registry).decode()

    classes = {a["error_class"] for a in (orjson.loads(r.value) for r in attempts)}
    assert {"connect_timeout", "connection_refused", "http_status", "invalid_url", "internal"} <= classes
    texts = {
        "logs": logs.text(),
        "attempts topic": "\n".join(r.value.decode() for r in attempts),
        "dlq headers": "\n".join(f"{k}={v!r}" for r in dead for k, v in r.headers),
        "metrics": exposition,
    }
    for where, text in texts.items():
        leaked = [secret for secret in SECRETS if secret in text]
        assert not leaked, f"{leaked} in the {where}: " + next(
            line for line in text.splitlines() if any(secret in line for secret in leaked))
    error = next(orjson.loads(r.value) for r in attempts if orjson.loads(r.value)["error_class"] == "connect_timeout")
    assert error["error_message"] == "ConnectionTimeoutError, host 127.0.0.1"


# --- bounds ---------------------------------------------------------------------------------------------------
async def test_in_flight_byte_budget_pauses_fetching(kafka_bootstrap: str, receiver: Receiver) -> None:
    budget = 1024 * 1024
    settings = make_settings(kafka_bootstrap, kafka={"bootstrap_servers": kafka_bootstrap, "partitions": 1,
                                                     "linger_ms": 1},
                             delivery={"max_in_flight_bytes": budget, "max_concurrency": 2})
    receiver.set("/held", hold=True)
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/held"))
        await s.add(hook)
        body = orjson.dumps({"event": "message_created", "account": {"id": 1}, "pad": "x" * 60_000})
        items = [delivery(hook, body=body, seq=n) for n in range(60)]  # ~3.6 MB, far above the 1 MiB budget
        await produce(settings, items)
        async with s.running() as worker:
            await receiver.wait_for(1, timeout=WAIT_S, path="/held")  # one key: one request at a time
            await until(lambda: s.sample("akece_webhooks_paused_partitions") >= 1, "paused partition")
            held = worker.max_in_flight_bytes_seen
            assert budget <= held <= budget + len(body) + 1024, held  # one record beyond at most
            assert worker.max_in_flight_seen < len(items)
            receiver.release("/held")
            receiver.set("/held")
            await receiver.wait_for(len(items), timeout=WAIT_S, path="/held")


async def test_disabling_a_webhook_drops_its_circuit(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, circuit={"failure_threshold": 2, "open_s": 600})
    receiver.set("/flaky", status=500)
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/flaky"))
        await s.add(hook)
        async with s.running() as worker:
            await produce(settings, [delivery(hook, seq=n) for n in range(2)])
            await receiver.wait_for(2, timeout=WAIT_S, path="/flaky")
            # Two failures: the circuit opens (for 10 minutes).
            await until(lambda: s.sample("akece_webhooks_circuits_open") == 1, "open circuit")
            await s.store.set_enabled(hook.id, False, "paused by its owner")
            await until(lambda: s.sample("akece_webhooks_circuits_open") == 0, "circuit dropped")
            receiver.set("/flaky", status=200)
            await s.store.set_enabled(hook.id, True, None)
            fresh = delivery(hook, seq=9)
            await produce(settings, [fresh])
            # Sent, not skipped by a circuit left open (it would stay open for 10 minutes).
            await until(lambda: fresh.delivery_id in {r.headers["webhook-id"] for r in receiver.for_path("/flaky")},
                        "attempt of the delivery after the webhook was enabled again")
            assert worker.ready()
            # Exported at 0 from the start, so that the alert's increase() sees a first error.
            registry = s.metrics.registry
            assert registry.get_sample_value("akece_webhooks_internal_errors_total", {"stage": "delivery"}) == 0


async def test_a_due_time_far_ahead_holds_a_tier_partition_only_for_its_delay(settings: Settings,
                                                                             receiver: Receiver) -> None:
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/later"))
        await s.add(hook)
        tier = s.topics.retry(1)
        now = time.time()
        ahead, behind = delivery(hook, seq=1), delivery(hook, seq=2)  # one key: one partition, in this order
        records = [(ahead.key, ahead.value, h.replace(ahead.headers, {h.ATTEMPT: 2, h.DUE_AT: now + 3600})),
                   (behind.key, behind.value, h.replace(behind.headers, {h.ATTEMPT: 2, h.DUE_AT: now + 0.5}))]
        async with s.running():
            await produce_raw(settings, records, tier)
            # A producer clock an hour ahead (the due time) holds the tier 1 s (its delay), not an hour.
            arrived = await receiver.wait_for(2, timeout=15, path="/later")
        assert [r.headers["webhook-id"] for r in arrived] == [ahead.delivery_id, behind.delivery_id]
        assert arrived[0].time - now < 10


async def test_a_record_too_large_even_for_the_dlq_is_named_and_left_without_stopping_the_worker(
        kafka_bootstrap: str, receiver: Receiver) -> None:
    """A delivery record over what AKECE_ROUTER_MAX_EVENT_BYTES allows (another producer wrote it, or the limit
    was lowered after it was routed), refused by its receiver: the producer refuses its retry record, and its
    dead letter too. It stays where it is, named by an error line with its offset, and the worker goes on
    (stopping, it would meet the same record each time it ran again)."""
    settings = make_settings(kafka_bootstrap, router={"max_event_bytes": 300_000})
    receiver.set("/refuses", status=500)
    async with stack(settings) as s:
        refuses, fine = make_webhook(receiver.url("/refuses")), make_webhook(receiver.url("/fine"))
        await s.add(refuses, fine)
        big, after = delivery(refuses, body=orjson.dumps({"content": "x" * 500_000})), delivery(fine)
        with captured_logs() as logs:
            await produce_raw(settings, [(big.key, big.value, big.headers)], s.topics.deliveries)
            await produce(settings, [after])
            worker = await s.until_idle()
        [line] = logs.events("delivery.too_large_to_dead_letter")
        done = await committed(settings, worker.group_id, s.topics.deliveries)
    assert [len(r.body) for r in receiver.for_path("/refuses")] == [len(big.value)]
    assert [r.headers["webhook-id"] for r in receiver.for_path("/fine")] == [after.delivery_id]
    assert line["topic"] == s.topics.deliveries and line["size"] == len(big.value)
    assert line["delivery_id"] == big.delivery_id and line["level"] == "error"
    assert sum(done.values()) == 2  # both committed: the worker is past it
    assert s.sample("akece_webhooks_internal_errors_total", stage="delivery") >= 1
    assert s.sample("akece_webhooks_dead_letters_total", reason="internal") == 0


async def test_an_error_while_concluding_is_the_records_failure(settings: Settings, receiver: Receiver,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug hit after the attempt (here: building the attempt log record for one webhook) is that record's
    ``internal`` failure; if concluding the ``internal`` failure fails too, the record is dead-lettered as it is."""
    async with stack(settings) as s:
        ok, twice, always = (make_webhook(receiver.url(f"/c/{n}")) for n in range(3))
        await s.add(ok, twice, always)
        real = attempt_module.records.attempt_record

        def attempt_record(meta: Any, result: Any, **kwargs: Any) -> bytes:
            if meta.webhook_id == always.id or (meta.webhook_id == twice.id and result.error_class != "internal"):
                raise RuntimeError("a bug")
            return real(meta, result, **kwargs)

        monkeypatch.setattr(attempt_module.records, "attempt_record", attempt_record)
        items = [delivery(hook) for hook in (twice, always, ok)]
        async with s.running():
            await produce(settings, items)
            await receiver.wait_for(1, timeout=WAIT_S, path="/c/0")
            dead = dlq_by_delivery(await read_topic(settings, s.topics.dlq, 2, timeout=WAIT_S))
    assert dead[items[1].delivery_id][h.DLQ_REASON] == "internal"  # concluding as internal failed as well
    assert dead[items[0].delivery_id][h.DLQ_REASON] == "exhausted"  # internal, by the schedule
    assert dead[items[0].delivery_id][h.LAST_ERROR_CLASS] == "internal"
    assert dead[items[0].delivery_id][h.LAST_ERROR] == "RuntimeError: a bug"


async def test_a_broker_away_while_concluding_is_ridden_out_not_the_records_failure(
        settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the network-fault campaign (a 60 s black hole): aiokafka's ``send()`` raises ``KafkaTimeoutError``
    when its buffer stays full because the broker is away (``send_batch()``, which writes the attempt log, the
    same when its partition's queue does not drain). That is the broker's condition: the worker stops
    (to be run again once the broker answers) and the record is redone, never concluded as ``internal`` and
    dead-lettered although its receiver answered 200."""
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/away"))
        await s.add(hook)
        item = delivery(hook)
        await produce(settings, [item])
        real_send, real_send_batch = AIOKafkaProducer.send, AIOKafkaProducer.send_batch
        refused: list[str] = []

        def refuse(topic: str) -> None:
            if topic == s.topics.attempts and not refused:
                refused.append(topic)
                raise KafkaTimeoutError("the buffer stayed full: the broker is away")

        async def send(producer: AIOKafkaProducer, topic: str, *args: Any, **kwargs: Any) -> Any:
            refuse(topic)
            return await real_send(producer, topic, *args, **kwargs)

        async def send_batch(producer: AIOKafkaProducer, batch: Any, topic: str, **kwargs: Any) -> Any:
            refuse(topic)
            return await real_send_batch(producer, batch, topic, **kwargs)

        monkeypatch.setattr(AIOKafkaProducer, "send", send)
        monkeypatch.setattr(AIOKafkaProducer, "send_batch", send_batch)
        with captured_logs() as logs, pytest.raises(KafkaTimeoutError):
            async with asyncio.timeout(WAIT_S):
                await s.worker().run(asyncio.Event())
        assert refused and len(receiver.for_path("/away")) == 1
        assert not logs.events("delivery.internal_error") and not logs.events("delivery.dead_lettered_as_is")
        assert s.sample("akece_webhooks_internal_errors_total", stage="delivery") == 0
        await s.until_idle()  # the next run redoes the record: delivered again, with the same id
    assert [r.headers["webhook-id"] for r in receiver.for_path("/away")] == [item.delivery_id] * 2
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        assert sum((await kafka.end_offsets(consumer, s.topics.dlq)).values()) == 0
