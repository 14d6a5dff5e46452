"""The Helm chart (deploy/helm/akece-webhooks): linted, rendered with the default values and with the
plain, MSK and Strimzi values files, and validated with kubernetes-validate --strict against the two
newest Kubernetes versions it knows. Custom resources it has no schema for (KEDA, Prometheus Operator,
Strimzi) are checked here instead: the PrometheusRule is the rules file (promtool checks it), the
KafkaTopics are the topics ``topics ensure`` creates, the ScaledObjects read the right lag.

Helm v4 is built by ``make tools`` (``go install helm.sh/helm/v4/cmd/helm@v4.3.2`` into build/bin).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv
from pydantic import BaseModel

from services.contract.topics import topic_specs
from services.shared.alerts import render_rules
from services.shared.settings import DEFAULT_RUNBOOK_BASE_URL, Settings
from tests.test_alert_rules import run_promtool

ROOT = Path(__file__).resolve().parent.parent
HELM_DIR = ROOT / "deploy" / "helm"
CHART = HELM_DIR / "akece-webhooks"
VALUES = {"default": None, **{name: HELM_DIR / f"values-{name}.yaml" for name in ("plain", "msk", "strimzi")}}
# Custom resources kubernetes-validate has no schema for; checked by the tests below instead.
CRDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule", "KafkaTopic"}
ROLES = ("api", "router", "delivery")
MOUNT = "/etc/akece-webhooks/kafka"  # where the chart mounts the Kafka credential files


def helm() -> str:
    for candidate in (ROOT / "build" / "bin" / "helm", shutil.which("helm")):
        if candidate and Path(candidate).exists():
            version = subprocess.run([str(candidate), "version", "--short"], capture_output=True, text=True,
                                     timeout=30, check=False).stdout
            if version.startswith("v4."):
                return str(candidate)
    if shutil.which("go") is None:
        pytest.skip("Helm v4 is built with Go, and no `go` is installed here")
    pytest.fail("helm v4 not found: `make tools` builds it into build/bin (go install helm.sh/helm/v4/cmd/helm@v4.3.2)")


def values_args(name: str) -> list[str]:
    path = VALUES[name]
    return ["--values", str(path)] if path else []


def template(*args: str) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart as release akece-webhooks in namespace webhooks."""
    return subprocess.run([helm(), "template", "akece-webhooks", str(CHART), "--namespace", "webhooks", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@cache
def rendered(name: str) -> list[dict[str, Any]]:
    result = template(*values_args(name))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(name: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(name) if doc["kind"] == kind]


def by_name(name: str, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(name, kind)}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


# --- the chart's copies of the rules and dashboard --------------------------------------------------

@pytest.mark.parametrize(("copy", "source"), [
    ("files/alerts.yml", "deploy/prometheus/alerts.yml"),
    ("files/akece-webhooks.json", "deploy/grafana/dashboards/akece-webhooks.json"),
])
def test_chart_files_are_the_sources(copy: str, source: str) -> None:
    assert (CHART / copy).read_bytes() == (ROOT / source).read_bytes(), \
        f"deploy/helm/akece-webhooks/{copy} differs from {source}: copy it again (`make chart-files`)"


# --- lint, render, validate ------------------------------------------------------------------------

@pytest.mark.parametrize("name", VALUES)
def test_helm_lint_strict(name: str) -> None:
    result = subprocess.run([helm(), "lint", "--strict", str(CHART), *values_args(name)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def newest_kubernetes_versions() -> list[str]:
    versions = sorted(set(kv.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
    assert len(versions) >= 2
    return versions[-2:]


@pytest.mark.parametrize("name", VALUES)
def test_manifests_validate_strictly(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = rendered(name)
    core = [doc for doc in docs if doc["kind"] not in CRDS]
    skipped = sorted({f"{doc['kind']} ({doc['apiVersion']})" for doc in docs if doc["kind"] in CRDS})
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    cli = Path(sys.executable).parent / "kubernetes-validate"
    for version in newest_kubernetes_versions():
        result = subprocess.run([str(cli), "--strict", "--kubernetes-version", version, str(path)],
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count(" passed for resource ") == len(core), result.stdout
        for doc in docs:
            if doc["kind"] in CRDS:  # no schema there: the CRD kinds are checked by the tests below
                with pytest.raises(kv.SchemaNotFoundError):
                    kv.validate(doc, version, strict=True)
    with capsys.disabled():
        print(f"\n{name}: {len(core)} resources valid for Kubernetes {', '.join(newest_kubernetes_versions())}; "
              f"not validated (no schema in kubernetes-validate): {', '.join(skipped) or 'none'}")


# --- what every deployment needs ---------------------------------------------------------------------

@pytest.mark.parametrize("name", VALUES)
def test_one_deployment_per_role_with_probes_resources_and_a_pdb(name: str) -> None:
    deployments = by_name(name, "Deployment")
    assert set(deployments) == {f"akece-webhooks-{role}" for role in ROLES}
    pdbs = {doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
            for doc in of_kind(name, "PodDisruptionBudget")}
    assert pdbs == set(ROLES)
    for role in ROLES:
        pod = deployments[f"akece-webhooks-{role}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [{"api": "api", "router": "router", "delivery": "deliver"}[role]]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True
        if role != "api":  # one process per pod (not one per node core); scaled by replicas
            assert env_of(container)[f"AKECE_{role.upper()}_PROCESSES"] == "1"
    delivery = deployments["akece-webhooks-delivery"]["spec"]["template"]["spec"]
    grace = int(env_of(delivery["containers"][0])["AKECE_DELIVERY_SHUTDOWN_GRACE_S"])
    assert delivery["terminationGracePeriodSeconds"] > grace  # the drain finishes before the kubelet kills


def settings_env_names(model: type[BaseModel] = Settings, prefix: str = "AKECE_") -> set[str]:
    names = set()
    for field, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_env_names(annotation, f"{prefix}{field.upper()}_")
        else:
            names.add(f"{prefix}{field.upper()}")
    return names


@pytest.mark.parametrize("name", VALUES)
def test_every_variable_the_chart_sets_is_a_setting(name: str) -> None:
    known = settings_env_names()
    for kind in ("Deployment", "Job"):
        for doc in of_kind(name, kind):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                unknown = set(env_of(container)) - known
                assert not unknown, f"{doc['metadata']['name']} sets {sorted(unknown)}, which no setting reads"


def test_topics_job_is_a_pre_install_and_pre_upgrade_hook() -> None:
    (job,) = of_kind("default", "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics", "ensure"]
    assert not of_kind("strimzi", "Job")  # Strimzi's Topic Operator creates them instead


# --- secrets and Kafka security ------------------------------------------------------------------------

def test_msk_uses_scram_over_tls_with_the_password_from_a_file() -> None:
    api = by_name("msk", "Deployment")["akece-webhooks-api"]["spec"]["template"]["spec"]
    env = env_of(api["containers"][0])
    assert env["AKECE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["AKECE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["AKECE_KAFKA_SASL_USERNAME"] == {"secretKeyRef": {"name": "akece-webhooks-msk-scram", "key": "username"}}
    assert env["AKECE_KAFKA_SASL_PASSWORD_FILE"] == "/etc/akece-webhooks/kafka/sasl-password"
    assert "AKECE_KAFKA_SASL_PASSWORD" not in env and "AKECE_KAFKA_SSL_CA_FILE" not in env  # Amazon's CAs: system
    assert env["AKECE_API_ADMIN_TOKEN"]["secretKeyRef"]["name"] == "akece-webhooks-api-tokens"
    (volume,) = [v for v in api["volumes"] if v["name"] == "kafka-credentials"]
    assert volume["projected"]["sources"][0]["secret"]["name"] == "akece-webhooks-msk-scram"
    assert not of_kind("msk", "Secret")  # existing Secrets only


def test_strimzi_uses_mutual_tls_from_the_cluster_ca_and_the_kafka_user() -> None:
    router = by_name("strimzi", "Deployment")["akece-webhooks-router"]["spec"]["template"]["spec"]
    env = env_of(router["containers"][0])
    assert env["AKECE_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert env["AKECE_KAFKA_SSL_CA_FILE"] == "/etc/akece-webhooks/kafka/ca.crt"
    assert env["AKECE_KAFKA_SSL_CERT_FILE"] == "/etc/akece-webhooks/kafka/client.crt"
    assert env["AKECE_KAFKA_SSL_KEY_FILE"] == "/etc/akece-webhooks/kafka/client.key"
    assert env["AKECE_KAFKA_SSL_CHECK_HOSTNAME"] == "true"
    (volume,) = [v for v in router["volumes"] if v["name"] == "kafka-credentials"]
    secrets = {s["secret"]["name"] for s in volume["projected"]["sources"]}
    assert secrets == {"my-cluster-cluster-ca-cert", "akece-webhooks"}


def test_sasl_without_credentials_is_refused_in_one_line() -> None:
    result = template("--set", "kafka.securityProtocol=SASL_SSL")
    assert result.returncode != 0
    assert "set kafka.sasl.username and kafka.sasl.password, or name a Secret in kafka.sasl.existingSecret" \
        in result.stderr


def test_chart_made_secrets_hold_the_values() -> None:
    result = template("--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.username=svc",
                      "--set", "kafka.sasl.password=pw", "--set", "apiTokens.adminToken=tok",
                      "--set", "apiTokens.accountTokens=1:a")
    assert result.returncode == 0, result.stderr
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Secret"}
    assert secrets["akece-webhooks-api-tokens"]["stringData"] == {"admin-token": "tok", "account-tokens": "1:a"}
    sasl = secrets["akece-webhooks-kafka-sasl"]
    assert sasl["stringData"] == {"username": "svc", "password": "pw"}
    assert "pre-install" in sasl["metadata"]["annotations"]["helm.sh/hook"]  # exists before the topics Job
    assert "pw" not in json.dumps(of_kind("default", "Deployment"))


# --- monitoring -------------------------------------------------------------------------------------------

def test_prometheus_rule_is_the_rules_file_with_the_runbook_base(tmp_path: Path) -> None:
    (rule,) = of_kind("msk", "PrometheusRule")
    base = yaml.safe_load((HELM_DIR / "values-msk.yaml").read_text())["runbookBaseUrl"]
    source = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    assert rule["spec"] == yaml.safe_load(render_rules(source, base))
    path = tmp_path / "rule.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    assert "SUCCESS" in run_promtool("check", "rules", path)
    (default_rule,) = of_kind("plain", "PrometheusRule")
    assert default_rule["spec"] == yaml.safe_load(render_rules(source, DEFAULT_RUNBOOK_BASE_URL))


def test_service_monitor_gives_the_job_names_the_alerts_use() -> None:
    (monitor,) = of_kind("plain", "ServiceMonitor")
    label = monitor["spec"]["jobLabel"]
    services = of_kind("plain", "Service")
    assert {svc["metadata"]["labels"][label] for svc in services} == {"akece-api", "akece-router", "akece-delivery"}
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert all(any(p["name"] == "metrics" for p in svc["spec"]["ports"]) for svc in services)


def test_dashboard_config_map_is_the_dashboard() -> None:
    (config_map,) = [cm for cm in of_kind("plain", "ConfigMap") if cm["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    source = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "akece-webhooks.json").read_text())
    assert json.loads(config_map["data"]["akece-webhooks.json"]) == source


# --- KEDA --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["plain", "msk", "strimzi"])
def test_scaled_objects_follow_first_attempt_lag_capped_at_the_partitions(name: str) -> None:
    values = yaml.safe_load(VALUES[name].read_text())  # type: ignore[union-attr]
    partitions = values["kafka"]["partitions"]
    scaled = by_name(name, "ScaledObject")
    expected = {"akece-webhooks-router": ("akece.router", "akece.events"),
                "akece-webhooks-delivery": ("akece.delivery", "akece.webhooks.deliveries")}
    assert set(scaled) == set(expected)
    for object_name, (group, topic) in expected.items():
        spec = scaled[object_name]["spec"]
        assert spec["scaleTargetRef"]["name"] == object_name
        assert spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"]) == (group, topic)
        assert ".retry." not in trigger["metadata"]["topic"]
        assert trigger["metadata"]["allowIdleConsumers"] == "false"
    deployments = by_name(name, "Deployment")
    assert "replicas" not in deployments["akece-webhooks-delivery"]["spec"]  # KEDA owns it
    if name == "msk":
        assert scaled["akece-webhooks-router"]["spec"]["triggers"][0]["metadata"]["sasl"] == "scram_sha512"
        (auth,) = of_kind("msk", "TriggerAuthentication")
        assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"username", "password"}
    if name == "strimzi":
        (auth,) = of_kind("strimzi", "TriggerAuthentication")
        assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"ca", "cert", "key"}


def test_plain_delivery_autoscaling_is_capped_at_the_partition_count() -> None:
    # values-plain.yaml asks for 12 delivery replicas on 6 partitions.
    assert by_name("plain", "ScaledObject")["akece-webhooks-delivery"]["spec"]["maxReplicaCount"] == 6


# --- Strimzi topics -------------------------------------------------------------------------------------------

def strimzi_topics(*extra: str) -> dict[str, dict[str, Any]]:
    result = template("--values", str(VALUES["strimzi"]), *extra)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "KafkaTopic"]
    return {d["spec"]["topicName"]: d for d in docs}


@pytest.mark.parametrize("schedule", [None, [1, 2, 90, 86400]])
def test_kafka_topics_are_the_topics_of_topics_ensure(schedule: list[int] | None) -> None:
    extra = ["--set", f"retrySchedule={{{','.join(map(str, schedule))}}}"] if schedule else []
    topics = strimzi_topics(*extra)
    settings = Settings(kafka={"partitions": 12}, **({"retry": {"schedule": schedule}} if schedule else {}))
    specs = {spec.name: spec for spec in topic_specs(settings)}
    assert set(topics) == set(specs)
    for name, spec in specs.items():
        topic = topics[name]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "my-cluster"
        assert topic["spec"]["partitions"] == spec.partitions, name
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"] == spec.config, name


def settings_from(container: dict[str, Any], files: Path) -> Settings:
    """The settings a container of the chart starts with: its variables (a Secret's value replaced by a
    sample), its mounted credential files written under ``files``."""
    env = {}
    for key, value in env_of(container).items():
        if isinstance(value, dict):
            value = f"sample-{key.lower()}"
        elif value.startswith(MOUNT):
            path = files / Path(value).name
            path.write_text("sample")
            value = str(path)
        env[key] = value
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("AKECE_")]:
            del os.environ[key]
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("name", VALUES)
def test_every_container_starts_with_settings_the_model_accepts(name: str, tmp_path: Path) -> None:
    """No typo in a name or a format: each rendered environment passes the settings' own checks
    (security settings that fit together, files that exist)."""
    containers = {doc["metadata"]["name"]: doc["spec"]["template"]["spec"]["containers"][0]
                  for kind in ("Deployment", "Job") for doc in of_kind(name, kind)}
    for container_name, container in containers.items():
        settings = settings_from(container, tmp_path)
        assert settings.metrics.port == 9100, container_name
        assert settings.retry.schedule == [5, 300, 1800, 7200, 18000, 36000, 36000]
    delivery = settings_from(containers["akece-webhooks-delivery"], tmp_path)
    assert delivery.delivery.max_in_flight == 10000 and delivery.delivery.shutdown_grace_s == 20
    protocol = {"default": "PLAINTEXT", "plain": "PLAINTEXT", "msk": "SASL_SSL", "strimzi": "SSL"}[name]
    assert delivery.kafka.security_protocol == protocol
    if name == "msk":
        assert delivery.kafka.sasl_mechanism == "SCRAM-SHA-512"


# --- the runbook speaks of what the chart ships ---------------------------------------------------------

def test_runbook_names_the_charts_deployments_and_labels() -> None:
    text = (ROOT / "docs" / "runbook.md").read_text()
    assert "systemctl" not in text  # no units are shipped
    deployments = by_name("default", "Deployment")
    named = set(re.findall(r"deploy/(akece-webhooks-[a-z]+)", text)) - {"akece-webhooks-<role>"}
    assert named and named <= set(deployments), named - set(deployments)
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] | d["metadata"]["labels"] for d in deployments.values()]
    selectors = re.findall(r"-l ([\w./-]+=[\w-]+)", text)
    assert selectors
    for selector in selectors:
        key, _, value = selector.partition("=")
        assert any(labels.get(key) == value for labels in pod_labels), f"no pod of the chart has {selector}"


def test_deploy_guide_uses_values_the_chart_has() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    for path in set(re.findall(r"deploy/helm/values-[a-z]+\.yaml", text)):
        assert (ROOT / path).exists(), path
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    keys = set(re.findall(r"--set ([\w.]+)=", text)) | set(re.findall(r"`((?:kafka|delivery|router|api|apiTokens|"
                                                                     r"monitoring|strimzi|topicsJob)\.[\w.]+)`", text))
    assert keys
    for key in keys:
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"docs/deploy.md names {key}, which values.yaml lacks"
            node = node[part]
