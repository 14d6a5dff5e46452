"""Settings: environment names operators rely on, and the README table generated from the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contract.topics import Topics, format_delay, topic_specs
from services.shared.settings import Settings
from services.shared.settings_table import render_readme

README = Path(__file__).resolve().parent.parent / "README.md"


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "AKECE_KAFKA_BOOTSTRAP_SERVERS": "10.0.0.1:9092", "AKECE_TOPIC_PREFIX": "acme",
        "AKECE_API_PORT": "8181", "AKECE_API_ADMIN_TOKEN": "s3cret", "AKECE_RETRY_SCHEDULE": "1, 2.5",
        "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8,10.0.0.0/8", "AKECE_METRICS_PORT": "9200",
        "AKECE_CIRCUIT_FAILURE_THRESHOLD": "3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "10.0.0.1:9092"
    assert settings.topic_prefix == "acme"
    assert settings.api.port == 8181
    assert settings.api.admin_token is not None and settings.api.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.retry.schedule == [1.0, 2.5]
    assert settings.allowed_private_cidrs == ["127.0.0.0/8", "10.0.0.0/8"]
    assert settings.metrics.port == 9200
    assert settings.circuit.failure_threshold == 3


@pytest.mark.parametrize(("name", "value"), [
    ("AKECE_RETRY_SCHEDULE", "1,-2"), ("AKECE_ALLOWED_PRIVATE_CIDRS", "not-a-cidr"), ("AKECE_API_PORT", "x"),
])
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError):
        Settings()


def test_readme_configuration_table_is_generated_from_the_model() -> None:
    text = README.read_text()
    assert render_readme(text) == text, "run `make config-table`"


def test_topic_names_and_retry_tiers() -> None:
    topics = Topics.from_settings(Settings(retry={"schedule": [5, 300, 1800, 7200, 18000, 36000, 36000]}))
    assert topics.events == "akece.events"
    assert topics.dlq == "akece.webhooks.dlq"
    assert list(topics.retry_topics) == [f"akece.webhooks.retry.{d}" for d in ("5s", "5m", "30m", "2h", "5h", "10h")]
    assert format_delay(0.5) == "500ms" and format_delay(90) == "90s"
    compacted = {s.name for s in topic_specs(Settings()) if s.config.get("cleanup.policy") == "compact"}
    assert compacted == {"akece.webhooks.subscriptions", "akece.webhooks.replays"}
