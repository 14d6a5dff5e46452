"""Hostile receivers (``tests/hostile.py``: raw sockets on 127.0.0.1) against the delivery worker, real broker.

For each hostile behaviour, one webhook points at it while four healthy webhooks take their deliveries
alongside: each hostile attempt is classified (its error class in the attempts topic, or
``circuit_open`` once the webhook's circuit opened), none is the worker's ``internal`` failure, the
worker keeps running, every healthy delivery arrives, and the process's RSS grows by less than
``RSS_GROWTH_BOUND_MB`` over what it held when the test began (the worker runs in the test process,
whose own size after hundreds of earlier tests is not the worker's). The healthy webhooks' throughput
with and without the hostile receiver is measured (one batch alone, then one alongside the hostile
deliveries, on the same worker; the hostile server runs in its own process, so its work is not
counted) and written to ``build/reliability/hostile-receivers.json`` (reported, never asserted: no
timing assertions). The scenario ``none`` is the baseline.

The unit tests at the end pin the sender's error texts (``services/delivery/http.py``, ``http_wire.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.contract import attempts
from services.delivery.http import HttpSender
from services.shared.netguard import NetworkGuard
from services.shared.settings import HttpSettings, Settings
from services.shared.webhooks import Webhook
from tests.conftest import make_settings
from tests.delivery_support import delivery, make_webhook, produce, read_topic, stack
from tests.hostile import BEHAVIORS, HostileServer
from tests.receiver import Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

HEALTHY_WEBHOOKS = 4
HEALTHY_EACH = 1000
WARM_UP_EACH = 200  # a first batch, not measured: the worker assigned, its connections open
HOSTILE_DELIVERIES = 30
HOSTILE_TIMEOUT_S = 3.0  # the hostile webhook's total timeout (its own setting), so slow ones end in time
RSS_GROWTH_BOUND_MB = 200  # a 1 GiB gzip bomb or an endless body read whole would be far past it
WAIT_S = 120.0
FIGURES: dict[str, dict[str, Any]] = {}
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "build" / "reliability" / "hostile-receivers.json"

# What a hostile receiver's attempts must be classified as: error classes (None: a response with a status).
EXPECTED: dict[str, set[str | None]] = {
    "slowloris": {"timeout"},
    "endless_body": {None},  # a 200: acknowledged after reading at most max_response_bytes
    "invalid_http": {"protocol_error"},
    "redirect_loop": {"http_status"},  # a 302 is not followed: a failed attempt
    "huge_headers": {"protocol_error"},
    "reset_mid_body": {"payload_error"},
    "gzip_bomb": {None},  # a 200: at most max_response_bytes read, and decompressed to at most that
    "untrusted_tls": {"tls"},
    "unicode_status": {"protocol_error"},
    "odd_retry_after": {"http_status", "protocol_error"},  # one form (NUL in the value) is not HTTP at all
}


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(orjson.dumps(FIGURES, option=orjson.OPT_INDENT_2).decode())
        for name, figures in FIGURES.items():
            print(f"hostile {name}: {figures}")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@contextlib.asynccontextmanager
async def peak_rss() -> AsyncIterator[list[float]]:
    """Samples this process's RSS every 50 ms; ``[peak, at start]`` when done."""
    peak = [rss_mb()]
    peak.append(peak[0])
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        done.set()
        await task


async def hostile_attempts(settings: Settings, topic: str, webhook_id: int, count: int) -> list[attempts.AttemptRecord]:
    """The first ``count`` attempt records of ``webhook_id`` (waits for them)."""
    key = attempts.key(webhook_id)
    records = await read_topic(settings, topic, count, WAIT_S,
                               where=lambda m: m.key == key and attempts.decode(m.value) is not None)
    return [record for record in map(attempts.decode, (m.value for m in records)) if record is not None]


@contextlib.asynccontextmanager
async def hostile_server(name: str) -> AsyncIterator[str | None]:
    """The URL of ``name``'s server, running in its own process (``python -m tests.hostile``)."""
    if name == "none":
        yield None
        return
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.hostile", name,
                                                   stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                   cwd=ROOT)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(WAIT_S):
            line = await process.stdout.readline()
        assert line, f"the {name} server did not start"
        yield str(orjson.loads(line)["url"])
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def healthy_batch(settings: Settings, receiver: Receiver, healthy: list[Webhook], seq: int,
                        each: int = HEALTHY_EACH) -> tuple[float, float]:
    """Deliveries per second of one batch of ``each`` deliveries per healthy webhook, all arrived, and this
    process's CPU milliseconds per delivery (less sensitive than the rate to other load on the machine)."""
    good = [delivery(hook, conversation=n % 50, seq=seq + n) for n in range(each) for hook in healthy]
    before = len([r for r in receiver.requests if r.path.startswith("/ok/")])
    started, cpu = time.perf_counter(), time.process_time()
    await produce(settings, good)
    await receiver.wait_for(before + len(good), timeout=WAIT_S, prefix="/ok/")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    arrived = {r.headers["X-Chatwoot-Delivery"] for r in receiver.requests if r.path.startswith("/ok/")}
    assert {d.delivery_id for d in good} <= arrived, "a healthy delivery is missing"
    return len(good) / elapsed, cpu * 1000 / len(good)


@pytest.mark.parametrize("name", ["none", *BEHAVIORS])
async def test_a_hostile_receiver_is_classified_and_costs_the_others_little(kafka_bootstrap: str, receiver: Receiver,
                                                                            name: str) -> None:
    """One worker: a warm-up batch, a batch of healthy deliveries alone, then one with the hostile receiver's
    deliveries in flight (``none``: a second batch alone, which shows the measurement's noise)."""
    settings = make_settings(kafka_bootstrap)
    async with stack(settings) as s, hostile_server(name) as url, peak_rss() as peak:
        healthy = [make_webhook(receiver.url(f"/ok/{n}")) for n in range(HEALTHY_WEBHOOKS)]
        hostile = None if url is None else make_webhook(url, total_timeout_s=HOSTILE_TIMEOUT_S, connect_timeout_s=1.0)
        await s.add(*healthy, *([hostile] if hostile else []))
        async with s.running():
            await healthy_batch(settings, receiver, healthy, -HEALTHY_EACH, WARM_UP_EACH)  # assigned, connected, warm
            alone, cpu_alone = await healthy_batch(settings, receiver, healthy, 0)
            if hostile is not None:  # first, so they are in flight while the healthy ones go
                await produce(settings, [delivery(hostile, conversation=n, seq=n) for n in range(HOSTILE_DELIVERIES)])
            alongside, cpu_alongside = await healthy_batch(settings, receiver, healthy, HEALTHY_EACH)
            found = [] if hostile is None else await hostile_attempts(settings, s.topics.attempts, hostile.id,
                                                                      HOSTILE_DELIVERIES)
    classes = {a.error_class for a in found}
    figures: dict[str, Any] = {
        "healthy_per_batch": HEALTHY_EACH * HEALTHY_WEBHOOKS, "healthy_per_s_alone": round(alone, 1),
        "healthy_per_s_alongside": round(alongside, 1), "ratio": round(alongside / alone, 3),
        "cpu_ms_per_delivery_alone": round(cpu_alone, 3), "cpu_ms_per_delivery_alongside": round(cpu_alongside, 3),
        "peak_rss_mb": round(peak[0], 1), "rss_growth_mb": round(peak[0] - peak[1], 1),
        "hostile_attempts_read": len(found),
        "error_classes": sorted(map(str, classes)), "statuses": sorted({str(a.status) for a in found}),
    }
    FIGURES[name] = figures
    if name != "none":
        assert classes & EXPECTED[name], (name, figures)  # its own class, and at most the circuit it opened
        assert classes <= EXPECTED[name] | {"circuit_open"}, (name, figures)
    assert peak[0] - peak[1] < RSS_GROWTH_BOUND_MB, figures


# --- what the campaign changed in the attempt's error text ----------------------------------------------
async def _post(name: str) -> tuple[str | None, str | None]:
    async with HostileServer(BEHAVIORS[name]) as server, \
            HttpSender(HttpSettings(total_timeout_s=5, connect_timeout_s=2), NetworkGuard(["127.0.0.0/8"])) as sender:
        result = await sender.post(server.url, b"{}", {"Content-Type": "application/json"})
    return result.error_class, result.error_message


async def test_an_unparsable_answer_is_named_as_such_not_as_a_status() -> None:
    """An answer that is not HTTP names the parser's reason (never ``status 400`` as if the receiver had
    answered 400, as an earlier client's error did), and 100 KB of headers (one of them 60 KB) are refused."""
    assert await _post("invalid_http") == (
        "protocol_error", "ProtocolError, invalid response: Expected HTTP/, RTSP/ or ICE/, host 127.0.0.1")
    error_class, message = await _post("huge_headers")
    assert error_class == "protocol_error" and message is not None
    assert message == "ProtocolError, invalid response: a header longer than 8190 bytes, host 127.0.0.1"
    assert "bbbb" not in message  # none of the receiver's bytes


async def test_an_untrusted_certificate_names_the_reason_and_no_borrowed_errno() -> None:
    """An SSL error's ``errno`` is OpenSSL's code (1), not an OS errno: the message said ``errno 1 (EPERM)``."""
    assert await _post("untrusted_tls") == (
        "tls", "SSLCertVerificationError, self-signed certificate, host 127.0.0.1")
