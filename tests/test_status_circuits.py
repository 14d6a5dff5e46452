"""``status`` shows open circuits across workers, read from the attempt log (real worker, real receiver)."""

from __future__ import annotations

from services.ops import status as status_mod
from services.shared.output import plain_text
from tests.conftest import make_settings
from tests.delivery_support import delivery, make_webhook, produce, stack
from tests.receiver import Behavior, Receiver


async def test_status_lists_the_webhooks_whose_circuit_is_open(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, circuit={"failure_threshold": 3, "open_s": 600},
                             delivery={"per_webhook_concurrency": 1})
    receiver.set("/dead", status=500)
    receiver.script("/recovered", Behavior(status=500), Behavior(status=500))  # then 200: closed again
    async with stack(settings) as s:
        dead, healthy, recovered = (make_webhook(receiver.url(p), account_id=a)
                                    for p, a in (("/dead", 7), ("/ok", 8), ("/recovered", 9)))
        await s.add(dead, healthy, recovered)
        await produce(settings, [delivery(dead, conversation=c) for c in range(5)]
                      + [delivery(healthy, conversation=c) for c in range(3)]
                      + [delivery(recovered, conversation=1)])
        await s.until_idle()
        assert len(receiver.for_path("/dead")) == 3, "the circuit opened after three failures"

        report = await status_mod.collect(settings, s.table)
        assert report.circuits is not None
        [circuit] = report.circuits.circuits
        assert (circuit.webhook_id, circuit.account_id) == (dead.id, "7")
        assert circuit.skipped and circuit.last_error == "HTTP 500"
        assert circuit.failures >= 3 and circuit.failing_since is not None
        screen = plain_text(status_mod.render(report))
        assert "Open circuits (1, from the attempt log of the last 15 min)" in screen
        assert str(dead.id) in screen and str(healthy.id) not in screen.split("Open circuits")[1]
        [listed] = status_mod.to_json(report)["open_circuits"]
        assert listed["webhook_id"] == dead.id and listed["skipped_by_circuit"] is True
