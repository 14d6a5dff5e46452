"""The one settings model. Environment variables use the ``AKECE_`` prefix; groups nest with ``_``.

``AKECE_KAFKA_BOOTSTRAP_SERVERS`` sets ``kafka.bootstrap_servers``, ``AKECE_API_PORT`` sets
``api.port``, ``AKECE_RETRY_SCHEDULE=1,2`` sets ``retry.schedule``. The README's configuration
table is generated from this model (``python -m services.shared.settings README.md``, by
``settings_table``). The Kafka group and its security rule are in ``settings_kafka``.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.shared.settings_kafka import KafkaSettings

DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)
# Where docs/runbook.md is published. deploy/prometheus/alerts.yml links its sections under this base;
# `akece-webhooks alerts render` and the Helm chart's `runbookBaseUrl` put yours in its place.
DEFAULT_RUNBOOK_BASE_URL = "https://github.com/akece/akece-webhooks/blob/main/docs/runbook.md"


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)]
LogFormat = Literal["auto", "json", "console"]
RouterValidation = Literal["full", "structural"]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ApiSettings(BaseModel):
    host: str = Field("0.0.0.0", description="Address the management API listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the management API.")
    admin_token: SecretStr | None = Field(
        None, description="Token that may act on every account (header api_access_token or Bearer); "
        "at least 16 characters."
    )
    account_tokens: SecretStr | None = Field(
        None,
        description="Per-account tokens: `account_id:token` pairs, comma-separated, or `@/path/file` "
        "with one pair per line (a line starting with `#` is a comment). Tokens: at least 16 characters, "
        "each unique, none equal to the admin token; anything else is refused at start.",
    )
    secret_overlap_s: int = Field(
        24 * 3600, ge=0, description="How long a rotated-out signing secret keeps signing."
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body the API accepts.")
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="How long in-flight API requests may finish after SIGTERM."
    )
    max_webhooks_per_account: int = Field(
        100, ge=1, description="Most webhooks an account may have; a create beyond it is a 422."
    )
    max_window_s: int = Field(
        7 * 24 * 3600, ge=60, description="Longest time window (since to until) of the deliveries, dead-letter, "
        "replay and recover routes; a longer one is a 400."
    )
    max_scans_per_account: int = Field(
        2, ge=1, description="Topic scans (deliveries, dead letters, replay and recover plans) one account may "
        "run at once; beyond it a 429 with Retry-After."
    )


class HttpSettings(BaseModel):
    connect_timeout_s: float = Field(5.0, gt=0, description="Connect timeout of a delivery attempt.")
    total_timeout_s: float = Field(15.0, gt=0, description="Total timeout of a delivery attempt.")
    max_response_bytes: int = Field(
        64 * 1024, ge=0, description="Most of a response body read and kept for the attempt record."
    )
    header_prefix: str = Field(
        "X-Chatwoot", description="Prefix of the Chatwoot-compatible headers (-Delivery, -Timestamp, -Signature)."
    )
    pool_size: int = Field(512, ge=1, description="Most open connections of the shared HTTP pool.")
    idle_timeout_s: float = Field(
        15.0, gt=0, description="A pooled connection idle this long is closed. The pool reuses its most recently "
        "used connection first, so after a burst it shrinks back to what the load needs within about twice this.",
    )


class RetrySettings(BaseModel):
    schedule: Annotated[list[float], NoDecode] = Field(
        list(DEFAULT_RETRY_SCHEDULE),
        description="Delays in seconds before each retry, comma-separated; one retry topic per distinct delay.",
    )
    jitter: float = Field(0.2, ge=0, le=1, description="Relative jitter applied to each retry delay (0.2 = ±20%).")

    @field_validator("schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("schedule")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("retry schedule must be a non-empty list of positive seconds")
        return value


class DeliverySettings(BaseModel):
    max_in_flight: int = Field(
        10_000, ge=1, description="Records a worker holds in memory; past it, fetching pauses."
    )
    max_in_flight_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="Bytes of records (value, key, headers) a worker holds in "
        "memory; past it, fetching pauses, as past `max_in_flight` records. One fetch (up to 1 MiB per partition) "
        "may go beyond it.",
    )
    max_concurrency: int = Field(512, ge=1, description="Concurrent HTTP requests per worker process.")
    per_webhook_concurrency: int = Field(
        10, ge=1, description="Bulkhead: concurrent requests to one webhook per worker."
    )
    per_webhook_backlog: int = Field(
        500, ge=1, description="Records of one webhook waiting in a worker that mean it is not keeping up, once "
        "they stayed that many for `per_webhook_backlog_s`.",
    )
    per_webhook_backlog_s: float = Field(
        10.0, ge=0, description="After this long at or above `per_webhook_backlog`, an unhealthy webhook's new "
        "records move to their next retry tier as a failed attempt (`webhook_backlog`) instead of filling the "
        "memory all share. Unhealthy: no success since its backlog filled, most recent attempts failing, or "
        "answering in `per_webhook_slow_s` or more. A healthy webhook's backlog is never shed.",
    )
    per_webhook_slow_s: float = Field(
        1.0, gt=0, description="A webhook whose recent attempts take this long on average is slow: its backlog "
        "may be shed (see `per_webhook_backlog_s`).",
    )
    shutdown_grace_s: float = Field(
        20.0, ge=0, description="How long in-flight deliveries may finish after SIGTERM."
    )
    auto_disable_after_s: int = Field(
        5 * 24 * 3600, ge=60, description="A webhook failing without a success this long is disabled."
    )
    processes: int | None = Field(
        None, ge=1, description="Processes of `akece-webhooks deliver`, one consumer-group member each (the "
        "`--processes` flag wins). Unset: the CPUs this process may use (affinity and cgroup CPU quota). 1: one "
        "process, no parent (one per container is usual; scale by replicas).",
    )


class CircuitSettings(BaseModel):
    failure_threshold: int = Field(
        20, ge=1, description="Consecutive failures that open a webhook's circuit."
    )
    open_s: float = Field(30.0, gt=0, description="How long an open circuit waits before a half-open probe.")


class RouterSettings(BaseModel):
    validation: RouterValidation = Field(
        "structural", description="Event validation on routing: `full` (pydantic models) or `structural`."
    )
    max_event_bytes: int = Field(
        1_000_000, ge=1024, description="Largest event body routed. The deliveries, retry and dead-letter topics "
        "must accept it plus 40 KiB of headers (`max.message.bytes`); router and workers check at start."
    )
    batch_size: int = Field(2000, ge=1, description="Most records fetched per routing batch.")
    processes: int | None = Field(
        None, ge=1, description="Processes of `akece-webhooks router`, one consumer-group member each (the "
        "`--processes` flag wins). Unset: the CPUs this process may use. 1: one process, no parent.",
    )
    batches_in_flight: int = Field(
        2, ge=1, description="Routing batches produced whose acknowledgements may still be outstanding while the "
        "router fetches and produces the next (1: wait for each batch's acknowledgements first). Offsets are "
        "committed in batch order, each only after its own acknowledgements."
    )
    fetch_wait_ms: int = Field(
        10, ge=0, le=500, description="While a router process takes 1,000 events/s or more, each of its fetches "
        "waits up to this long to gather them (fewer, larger batches: fewer requests for the router, the broker and "
        "the delivery workers; the median latency grows by about this much). Below 500/s, and at 0, a fetch "
        "returns as soon as any event is there."
    )


class MetricsSettings(BaseModel):
    host: str = Field("0.0.0.0", description="Address of the /metrics, /healthz, /readyz server.")
    port: int = Field(9100, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AKECE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
    )

    topic_prefix: str = Field("akece", description="Prefix of every topic name.")
    allowed_private_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs exempt from the private-network guard (comma-separated), e.g. 127.0.0.0/8 in development.",
    )
    log_level: LogLevel = Field("info", description="Log level: debug, info, warning, error.")
    log_format: LogFormat = Field(
        "auto", description="`json`, `console`, or `auto` (JSON when stdout is not a terminal)."
    )
    runbook_base_url: str = Field(
        DEFAULT_RUNBOOK_BASE_URL,
        description="Absolute URL of the runbook (docs/runbook.md as your team publishes it); the alert rules' "
        "`runbook_url`s are this plus `#<alert>` (`akece-webhooks alerts render`, the chart's `runbookBaseUrl`).",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    circuit: CircuitSettings = Field(default_factory=CircuitSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @field_validator("allowed_private_cidrs", mode="before")
    @classmethod
    def _parse_cidrs(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("runbook_base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.fragment:
            raise ValueError("runbook base URL must be an absolute http(s) URL without a #fragment")
        return value

    @field_validator("allowed_private_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value


def describe_invalid(exc: ValidationError) -> str:
    """A settings validation error in one line: each problem with the environment variable it concerns."""
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if message.startswith("AKECE_"):
            problems.append(message)
            continue
        name = "AKECE_" + "_".join(str(part) for part in error["loc"]).upper()
        value = error.get("input")
        shown = f"={value}" if isinstance(value, str | int | float) and "SECRET" not in name and \
            "PASSWORD" not in name and "TOKEN" not in name else ""
        problems.append(f"{name}{shown}: {message}")
    return "; ".join(problems)


if __name__ == "__main__":
    from services.shared.settings_table import render_readme

    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    readme.write_text(render_readme(readme.read_text()))
    sys.stdout.write(f"configuration table written to {readme}\n")
