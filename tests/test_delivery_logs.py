"""The ``delivery.attempted`` log event, on the real broker: exactly one per attempt, every field there.

Four webhooks: one answers 200, one 500 then 200 (a retry), one 410 (dead letter, webhook disabled),
one refuses connections (three attempts, then the dead-letter topic). The attempts topic is the
reference: every record on it has one log line with the same delivery, attempt and outcome.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.devtools.ports import free_port
from services.shared.settings import Settings
from tests.delivery_support import delivery, make_webhook, produce, read_topic, stack
from tests.log_capture import captured_logs
from tests.receiver import Behavior, Receiver

FIELDS = ("delivery_id", "event_id", "webhook_id", "account_id", "attempt", "status", "duration_ms", "outcome",
          "next_delay_ms")


async def test_one_delivery_attempted_event_per_attempt_with_every_field(settings: Settings,
                                                                          receiver: Receiver) -> None:
    receiver.script("/flaky", Behavior(status=500))
    receiver.set("/gone", status=410)
    async with stack(settings) as s:
        hooks = {name: make_webhook(receiver.url(f"/{name}"), account_id=7) for name in ("ok", "flaky", "gone")}
        hooks["refused"] = make_webhook(f"http://127.0.0.1:{free_port()}/nobody", account_id=7)
        await s.add(*hooks.values())
        items = {name: delivery(hook) for name, hook in hooks.items()}
        await produce(settings, list(items.values()))
        with captured_logs(level="info") as logs:
            await s.until_idle()
        attempts = [orjson.loads(r.value) for r in await read_topic(settings, s.topics.attempts, 7)]

    logged = logs.events("delivery.attempted")
    assert len(logged) == len(attempts) == 1 + 2 + 1 + 3
    for line in logged:
        missing = [name for name in FIELDS if name not in line]
        assert not missing, (missing, line)
    by_attempt = {(line["delivery_id"], line["attempt"]): line for line in logged}
    assert len(by_attempt) == len(logged)  # no attempt logged twice
    for record in attempts:
        line = by_attempt[record["delivery_id"], record["attempt"]]
        for name in ("event_id", "webhook_id", "status", "outcome", "next_delay_ms"):
            assert line[name] == record[name], (name, line, record)
        assert str(line["account_id"]) == str(record["account_id"]) == "7"
        assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0

    def story(name: str) -> list[tuple[Any, ...]]:
        item = items[name]
        lines = sorted((x for x in logged if x["delivery_id"] == item.delivery_id), key=lambda x: x["attempt"])
        assert {(x["event_id"], x["webhook_id"]) for x in lines} == {(item.event_id, hooks[name].id)}
        return [(x["attempt"], x["status"], x["outcome"], x["next_delay_ms"]) for x in lines]

    assert story("ok") == [(1, 200, "success", None)]
    assert story("flaky") == [(1, 500, "retry", 1000), (2, 200, "success", None)]
    assert story("gone") == [(1, 410, "dead_letter", None)]
    assert story("refused") == [(1, None, "retry", 1000), (2, None, "retry", 2000), (3, None, "dead_letter", None)]
    levels = {x["outcome"]: x["level"] for x in logged}
    assert levels == {"success": "info", "retry": "info", "dead_letter": "warning"}
