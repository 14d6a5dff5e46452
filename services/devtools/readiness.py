"""Whether a local broker serves: the readiness probes its start waits on.

They talk to the broker's own PLAINTEXT listener before any settings exist (not pipeline clients,
which ``services.shared.kafka`` builds with the security settings), except ``secured_serve``, which
connects through each secured listener exactly as the pipeline would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from services.devtools import kafka_local_secure as secure
from services.devtools.kafka_errors import LocalKafkaError
from services.devtools.ports import port_in_use


async def serves(bootstrap: str) -> bool:
    """One readiness probe: a broker is listed in metadata and a scratch topic can be created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    scratch = f"akece-ready-{uuid.uuid4().hex[:12]}"
    try:
        await admin.start()
        cluster: dict[str, Any] = await admin.describe_cluster()
        if not cluster.get("brokers"):
            return False
        created = await admin.create_topics([NewTopic(scratch, 1, 1)])
        if any(error_code not in (0, 36) for _, error_code, *_ in created.topic_errors):
            return False
        await admin.delete_topics([scratch])
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


async def wait_serving(bootstrap: str, port: int, exit_code: Callable[[], int | None], budget: float) -> None:
    """Probe until the broker serves; raise LocalKafkaError if it dies or the budget runs out."""
    deadline = time.monotonic() + budget
    while exit_code() is None:
        if port_in_use(port) and await serves(bootstrap):
            return
        if time.monotonic() > deadline:
            raise LocalKafkaError(f"the broker did not serve {bootstrap} within {budget:g} s")
        await asyncio.sleep(0.2)
    raise LocalKafkaError(f"the broker process exited during startup (exit code {exit_code()})")


async def secured_serve(files: secure.SecureFiles, sasl_port: int, mtls_port: int) -> None:
    """Describe the cluster through each secured listener with the pipeline's own client settings."""
    from services.shared import kafka
    from services.shared.settings import Settings
    from services.shared.settings_kafka import KafkaSettings

    for env in secure.client_env(files, sasl_port, mtls_port).values():
        fields = {name.removeprefix("AKECE_KAFKA_").lower(): value for name, value in env.items()}
        settings = Settings.model_construct(kafka=KafkaSettings(**fields, request_timeout_ms=10_000))
        async with kafka.started(kafka.admin(settings)) as admin:
            await admin.describe_cluster()


async def wait_brokers(bootstrap: str, count: int, budget: float) -> None:
    """Wait until the cluster's metadata lists ``count`` brokers."""
    deadline = time.monotonic() + budget
    seen = 0
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            seen = len((await admin.describe_cluster()).get("brokers") or [])
            if seen >= count:
                return
        except (TimeoutError, KafkaError, OSError):
            pass
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise LocalKafkaError(f"the cluster at {bootstrap} lists {seen} of {count} brokers after {budget:g} s")


def refuse_running_loop() -> None:
    """start() blocks and runs its probe with asyncio.run: not on a thread that runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise LocalKafkaError("LocalKafka.start() blocks: in async code use `await kafka.start_async()` "
                          "or `async with LocalKafka(...)`")


__all__ = ["refuse_running_loop", "secured_serve", "serves", "wait_brokers", "wait_serving"]
