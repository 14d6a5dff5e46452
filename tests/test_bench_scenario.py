"""One small benchmark scenario run end to end on the session broker: the run counts what it delivered,
and leaves no topic behind unless asked to keep them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.e2e import SCENARIOS, RunConfig, ScenarioRun
from bench.receivers import nginx_binary
from services.shared import kafka
from tests.conftest import make_settings

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed (make tools)")]


async def prefixed_topics(bootstrap: str, prefix: str) -> set[str]:
    client = kafka.admin(make_settings(bootstrap))
    async with kafka.started(client):
        return {t for t in await client.list_topics() if t.startswith(prefix + ".")}


async def drain(bootstrap: str, work: Path, *, keep_topics: bool) -> tuple[dict[str, Any], list[str]]:
    said: list[str] = []
    config = RunConfig(bootstrap=bootstrap, work=work, broker_pid=None, events=300, webhooks=10, paced_s=0,
                       delivery_procs=1, keep_topics=keep_topics)
    result = await ScenarioRun(config, SCENARIOS["instant"], said.append).run()
    return result, said


async def test_a_scenario_run_deletes_its_topics_once_counted(kafka_bootstrap: str, tmp_path: Path) -> None:
    result, said = await drain(kafka_bootstrap, tmp_path, keep_topics=False)
    assert result["drain"]["delivered"] == result["drain"]["expected"] == 300, said
    assert result["parked"]["retried"] == 0 and result["parked"]["dead_lettered"] == 0
    assert await prefixed_topics(kafka_bootstrap, result["prefix"]) == set()
    assert not any("were not deleted" in line for line in said)


async def test_keep_topics_leaves_them_for_inspection(kafka_bootstrap: str, tmp_path: Path) -> None:
    result, said = await drain(kafka_bootstrap, tmp_path, keep_topics=True)
    prefix = result["prefix"]
    make_settings(kafka_bootstrap, topic_prefix=prefix)  # the module's fixture deletes this prefix's topics
    kept = await prefixed_topics(kafka_bootstrap, prefix)
    assert {f"{prefix}.events", f"{prefix}.webhooks.deliveries", f"{prefix}.webhooks.dlq"} <= kept, said
