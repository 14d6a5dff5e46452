"""Alert rules, scrape config and dashboard: checked and unit-tested with the real promtool, and every
metric they query is one the services export.

promtool comes from Debian's ``prometheus`` package (``make tools`` installs it); without it these
tests fail rather than skip, because untested alert rules are how pages go silent.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from services.shared.metrics import Metrics
from services.shared.runtime import Supervisor
from services.shared.settings import DEFAULT_RUNBOOK_BASE_URL
from tests.promql_names import exported_metrics, expressions, metric_names, recorded_names, referenced_metrics

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "akece-webhooks.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
JOBS = {"akece-api", "akece-router", "akece-delivery"}
# Series Prometheus adds to every scrape; not on any /metrics page.
SCRAPE_SERIES = {"up"}


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail("promtool not found: run `make tools` (Debian package `prometheus`)")
    return found


def run_promtool(*args: str | Path) -> str:
    result = subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=120,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# --- promtool -----------------------------------------------------------------------------------

def test_promtool_check_rules() -> None:
    assert "SUCCESS" in run_promtool("check", "rules", ALERTS)


def test_promtool_check_config() -> None:
    out = run_promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert "alerts.yml" in out  # the rule file is found and checked with the config


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS
    assert "SUCCESS" in run_promtool("test", "rules", *RULE_TESTS)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test") or []:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert (firing | quiet) <= names, f"tests name alerts that do not exist: {(firing | quiet) - names}"
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


def test_scrape_config_has_one_job_per_role_and_loads_the_rules() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} >= JOBS
    assert config["rule_files"] == ["alerts.yml"]


# --- annotations and the runbook ------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_is_labelled_annotated_and_has_a_runbook_section() -> None:
    anchors = {github_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines()
               if line.startswith("## ")}
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        notes = rule["annotations"]
        assert notes.get("summary") and notes.get("description"), name
        url = notes["runbook_url"]
        assert url.startswith(f"{DEFAULT_RUNBOOK_BASE_URL}#"), f"{name}: runbook_url must be absolute, under the base"
        assert url.partition("#")[2] in anchors, f"{name}: no runbook section for {url}"
        assert url.partition("#")[2] == github_anchor(name), f"{name}: the section is named after the alert"


def runbook_sections() -> dict[str, str]:
    """Each ``## `` section of the runbook, by title."""
    sections: dict[str, str] = {}
    title = ""
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            sections[title] = ""
        elif title:
            sections[title] += line + "\n"
    return sections


def test_every_alert_section_gives_akece_webhooks_commands() -> None:
    sections = runbook_sections()
    for rule in alert_rules():
        body = sections[rule["alert"]]
        assert "**First commands:**" in body, rule["alert"]
        assert "akece-webhooks " in body, f"{rule['alert']}: no akece-webhooks command to run"


def test_invalid_events_section_says_how_to_inspect_and_recover() -> None:
    body = runbook_sections()["AkeceWebhooksInvalidEventsSpike"]
    assert "kcat " in body and ".events.invalid" in body
    assert "akece-webhooks recover " in body and "akece-webhooks publish " in body
    assert "no `akece-webhooks` command that re-publishes" in body  # said plainly, not left to guess


# --- every queried metric is exported ---------------------------------------------------------------

def registry_with_every_series() -> CollectorRegistry:
    """A fresh registry, each labelled metric touched once so its series appear."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*("sample" for _ in value._labelnames))
    return registry


def exposition_with_every_metric() -> str:
    """A fresh registry's /metrics text, each labelled metric touched once so its series appear."""
    return generate_latest(registry_with_every_series()).decode()


# Labels that would make a series per customer or per record: unbounded, and a leak of who calls whom.
FORBIDDEN_LABELS = {"url", "account_id", "account", "webhook_id", "webhook", "delivery_id", "event_id"}


def test_no_metric_is_labelled_by_url_account_webhook_or_record() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    collectors = [c for c in registry._collector_to_names if isinstance(c, MetricWrapperBase)]
    assert len(collectors) >= 25  # every metric of the module, not an empty registry
    for collector in collectors:
        assert not FORBIDDEN_LABELS & set(collector._labelnames), (collector._name, collector._labelnames)
    # What is exposed, too (histogram ``le``, the build info's keys): every sample once each labelled
    # metric has a series.
    exposed = {name for family in registry_with_every_series().collect() for sample in family.samples
               for name in sample.labels}
    assert "le" in exposed and "outcome" in exposed
    assert not FORBIDDEN_LABELS & exposed, sorted(FORBIDDEN_LABELS & exposed)


def test_rules_and_dashboard_query_only_exported_metrics() -> None:
    exported = exported_metrics(exposition_with_every_metric()) | SCRAPE_SERIES
    for where, expr in expressions([ALERTS, DASHBOARD]):
        missing = metric_names(expr) - exported - recorded_names([ALERTS])
        assert not missing, f"{where} queries {sorted(missing)}, which no service exports"
    referenced = referenced_metrics([ALERTS, DASHBOARD])
    assert referenced <= exported
    # The check has teeth: the important families are queried at all.
    for name in ("akece_webhooks_deliveries_total", "akece_webhooks_end_to_end_latency_seconds_bucket",
                 "akece_webhooks_consumer_lag", "akece_webhooks_dead_letters_total", "up"):
        assert name in referenced


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (outcome) (rate(akece_webhooks_deliveries_total{outcome="success", job=~"$job"}[$__rate_interval]))',
     {"akece_webhooks_deliveries_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket[5m]))) > 1e3", {"a_seconds_bucket"}),
    ("a:b:rate5m < 0.9 and on() b_total offset 5m > bool 0", {"a:b:rate5m", "b_total"}),
    ('absent(up{job="akece-router"}) or sum without (instance) (c) / ignoring(x) group_left d',
     {"up", "c", "d"}),
    ('label_replace(x, "dst", "$1", "src", "(.*)") unless y @ start()', {"x", "y"}),
    ("max_over_time(gauge[1h:5m]) - deriv(other[15m])", {"gauge", "other"}),
])
def test_metric_name_tokenizer(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_misspelled_metric_is_caught() -> None:
    exported = exported_metrics(exposition_with_every_metric())
    assert "akece_webhooks_deliveries" not in exported  # the counter is only exposed with _total
    assert metric_names("rate(akece_webhooks_deliveries[5m])") - exported == {"akece_webhooks_deliveries"}


# --- the dashboard ----------------------------------------------------------------------------------

def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_dashboard_is_provisionable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "akece-webhooks" and dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert yaml.safe_load((provisioning / "dashboards" / "akece-webhooks.yml").read_text())["providers"]
    assert yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]


def test_dashboard_has_the_panels_sres_need() -> None:
    queries = " ".join(t["expr"] for p in dashboard_panels() for t in p["targets"])
    for needed in ("akece_webhooks_deliveries_total", "akece_webhooks_first_attempts_total",
                   "histogram_quantile(0.99, sum by (le) (rate(akece_webhooks_end_to_end_latency_seconds_bucket",
                   "histogram_quantile(0.99, sum by (le) (rate(akece_webhooks_attempt_duration_seconds_bucket",
                   "akece_webhooks_retries_scheduled_total", "akece_webhooks_dead_letters_total",
                   "akece_webhooks_consumer_lag", "akece_webhooks_in_flight", "akece_webhooks_circuits_open",
                   "akece_webhooks_paused_partitions", "akece_webhooks_router_fanout",
                   "akece_webhooks_routing_latency_seconds", "akece_webhooks_events_invalid_total",
                   "akece_webhooks_api_requests_total"):
        assert needed in queries, needed


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query, as a recording rule, with Grafana's variables filled in."""
    substitutions = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s", "$job": ".*",
                     "$instance": ".*"}
    rules = []
    for index, (where, expr) in enumerate(expressions([DASHBOARD])):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:query:{index}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"{len(rules)} rules found" in run_promtool("check", "rules", path)


# --- what the alerts read is set by the processes ------------------------------------------------------

class _ReadyWorker:
    name = "probe"

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.started.set()
        await stop.wait()

    def ready(self) -> bool:
        return True


async def test_supervisor_exports_worker_readiness() -> None:
    """AkeceWebhooksWorkerNotReady reads akece_webhooks_worker_ready: the supervisor must set it."""
    worker = _ReadyWorker()
    supervisor = Supervisor([worker], metrics=Metrics(CollectorRegistry()), metrics_host="127.0.0.1",
                            metrics_port=0, shutdown_deadline=5)
    task = asyncio.create_task(supervisor.run(install_signals=False))
    try:
        await worker.started.wait()
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{supervisor.bound_port}/metrics") as response:
            text = await response.text()
    finally:
        supervisor.stop.set()
        await task
    assert 'akece_webhooks_worker_up{role="probe"} 1.0' in text
    assert 'akece_webhooks_worker_ready{role="probe"} 1.0' in text, \
        "the supervisor never sets akece_webhooks_worker_ready, so AkeceWebhooksWorkerNotReady cannot fire"
