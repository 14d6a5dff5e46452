"""``make run`` (``akece-webhooks demo``) as a newcomer sees it: a real process on the real broker.

It must show the demo events arrive signed at the healthy endpoint, the broken endpoint's deliveries
retried and dead-lettered, stop cleanly on Ctrl-C (SIGINT), and work again when run a second time
(the demo webhooks already exist then).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid

from services.devtools.ports import free_port

DEMO_EVENTS = 7
ACCOUNT = re.compile(r"\[account\] delivered=(\d+) retried=(\d+) dead-lettered=(\d+)")


async def run_demo(kafka_bootstrap: str, prefix: str) -> tuple[list[str], int]:
    """Run the demo until every demo event is delivered and dead-lettered, then press Ctrl-C."""
    api_port, metrics_port, receiver_port = free_port(), free_port(), free_port()
    env = {**os.environ, "AKECE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "AKECE_TOPIC_PREFIX": prefix,
           "AKECE_API_HOST": "127.0.0.1", "AKECE_API_PORT": str(api_port),
           "AKECE_METRICS_HOST": "127.0.0.1", "AKECE_METRICS_PORT": str(metrics_port), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "demo", "--receiver-port", str(receiver_port), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(90):
            while True:
                raw = await proc.stdout.readline()
                assert raw, "the demo exited early:\n" + "\n".join(lines[-30:])
                line = raw.decode().rstrip()
                lines.append(line)
                found = ACCOUNT.search(line)
                if found and int(found[1]) >= DEMO_EVENTS and int(found[3]) >= DEMO_EVENTS:
                    break
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            rest, _ = await proc.communicate()
        lines += rest.decode().splitlines()
        return lines, proc.returncode or 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_make_run_demo_shows_signed_deliveries_retries_and_dead_letters_twice(kafka_bootstrap: str) -> None:
    prefix = f"demo{uuid.uuid4().hex[:8]}"
    for run in (1, 2):
        lines, code = await run_demo(kafka_bootstrap, prefix)
        text = "\n".join(lines)
        assert code == 0, f"run {run} exit {code}:\n{text[-3000:]}"
        healthy = [line for line in lines if "200 /hooks/crm" in line]
        broken = [line for line in lines if "500 /hooks/broken" in line]
        assert len(healthy) >= DEMO_EVENTS, text[-3000:]
        assert all("standard-webhooks ok, chatwoot ok" in line for line in healthy + broken), text[-3000:]
        assert len(broken) >= 2 * DEMO_EVENTS, "each failing delivery is tried again before the DLQ"
        assert "dlq_reason=exhausted" in text
        assert "pipeline stopped" in lines[-1] or "pipeline stopped" in text
        assert "Traceback" not in text, text[-3000:]
        console = r"console +http://127\.0\.0\.1:\d+/app/ +\(sign in with demo-account-1-token"
        assert re.search(console, text), text[:3000]
