"""The Kafka group of the settings (``AKECE_KAFKA_*``): where the brokers are, how topics are made,
how clients talk to them, and the rule that the security settings agree with one another."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

Compression = Literal["none", "gzip", "lz4", "zstd"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers (host:port, comma-separated)."
    )
    client_id: str = Field("akece-webhooks", description="Client id reported to the brokers.")
    partitions: int = Field(6, ge=1, description="Partitions of the pipeline topics created by `topics ensure`.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of created topics.")
    min_insync_replicas: int | None = Field(
        None, ge=1, description="`min.insync.replicas` of created topics: replicas that must hold a record before "
        "it is acknowledged (3 replicas: 2). Unset: the brokers' default."
    )
    request_timeout_ms: int = Field(30_000, ge=1000, description="Kafka request timeout.")
    send_timeout_s: float = Field(
        30.0, gt=0, description="Upper bound on waiting for a produce acknowledgement (the broker may be down)."
    )
    compression: Compression = Field("lz4", description=(
        "Producer compression: none, gzip, lz4 or zstd (lz4 with LZ4's fast compressor, as Kafka's own clients "
        "compress at their default level)."))
    linger_ms: int = Field(5, ge=0, description="Producer linger: how long a batch may wait to fill.")
    session_timeout_ms: int = Field(10_000, ge=1000, description="Consumer group session timeout.")
    rebalance_timeout_ms: int = Field(
        60_000, ge=1000, description="Consumer rebalance timeout; above the drain budget of a revocation."
    )
    unavailable_exit_s: float | None = Field(
        None, gt=0, description="Long-running roles ride out an unreachable broker (retrying with capped backoff, "
        "not ready meanwhile); after this many seconds without it they exit non-zero instead, for an orchestrator "
        "to restart them. Unset: never exit.",
    )
    unavailable_log_s: float = Field(
        60.0, gt=0, description="While the broker is unreachable, at most one log line per this many seconds "
        "(with the count of tries), besides one when it is lost and one when it is back.",
    )
    events_retention_ms: int = Field(
        7 * 24 * 3600 * 1000, description="Retention of the events topic (recover reads from it)."
    )
    dlq_retention_ms: int = Field(30 * 24 * 3600 * 1000, description="Retention of the dead-letter topic.")
    attempts_retention_ms: int = Field(
        7 * 24 * 3600 * 1000, description="Retention of the attempt log topic."
    )
    security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="How clients talk to the brokers: PLAINTEXT, SSL (TLS, with a client "
        "certificate for mTLS), SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: SaslMechanism = Field(
        "PLAIN", description="SASL mechanism with SASL_PLAINTEXT/SASL_SSL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    sasl_username: str | None = Field(None, description="SASL user name (required with SASL_*).")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (or `sasl_password_file`; exactly one of them with SASL_*)."
    )
    sasl_password_file: Path | None = Field(
        None, description="File holding the SASL password (a mounted secret); read when clients are built, "
        "a trailing newline is ignored."
    )
    ssl_ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates (default: the system's "
        "trusted CAs, as for Amazon MSK and Confluent Cloud)."
    )
    ssl_cert_file: Path | None = Field(
        None, description="PEM client certificate for mTLS (the key may be in the same file)."
    )
    ssl_key_file: Path | None = Field(None, description="PEM private key of the client certificate.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of an encrypted client key.")
    ssl_check_hostname: bool = Field(
        True, description="Check that a broker's certificate names the host it was reached by."
    )

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaSettings:
        problem = security_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _isr_within_replicas(self) -> KafkaSettings:
        isr, replicas = self.min_insync_replicas, self.replication_factor
        if isr is not None and isr > replicas:
            raise ValueError(f"min_insync_replicas ({isr}) cannot exceed replication_factor ({replicas}): "
                             "no record could ever be acknowledged")
        return self


def security_problem(kafka: KafkaSettings) -> str | None:
    """What is wrong with the Kafka security settings taken together (one line), or None."""
    protocol = kafka.security_protocol
    sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    env = "AKECE_KAFKA_"
    if sasl and not kafka.sasl_username:
        return f"{env}SECURITY_PROTOCOL={protocol} needs {env}SASL_USERNAME"
    if sasl and (kafka.sasl_password is None) == (kafka.sasl_password_file is None):
        return (f"{env}SECURITY_PROTOCOL={protocol} needs exactly one of {env}SASL_PASSWORD and "
                f"{env}SASL_PASSWORD_FILE" + (" (both are set)" if kafka.sasl_password is not None else ""))
    unused = [name for name, value, used in (
        ("SASL_USERNAME", kafka.sasl_username, sasl), ("SASL_PASSWORD", kafka.sasl_password, sasl),
        ("SASL_PASSWORD_FILE", kafka.sasl_password_file, sasl), ("SSL_CA_FILE", kafka.ssl_ca_file, tls),
        ("SSL_CERT_FILE", kafka.ssl_cert_file, tls), ("SSL_KEY_FILE", kafka.ssl_key_file, tls),
        ("SSL_KEY_PASSWORD", kafka.ssl_key_password, tls)) if value is not None and not used]
    if unused:
        wanted = "SASL_PLAINTEXT or SASL_SSL" if unused[0].startswith("SASL") else "SSL or SASL_SSL"
        return (f"{env}{unused[0]} is set but {env}SECURITY_PROTOCOL={protocol} does not use it "
                f"(set {env}SECURITY_PROTOCOL to {wanted}, or unset it)")
    if kafka.ssl_key_file is not None and kafka.ssl_cert_file is None:
        return f"{env}SSL_KEY_FILE needs {env}SSL_CERT_FILE (the client certificate it belongs to)"
    if kafka.ssl_key_password is not None and kafka.ssl_cert_file is None:
        return f"{env}SSL_KEY_PASSWORD needs {env}SSL_CERT_FILE and {env}SSL_KEY_FILE"
    for name, path in (("SASL_PASSWORD_FILE", kafka.sasl_password_file), ("SSL_CA_FILE", kafka.ssl_ca_file),
                       ("SSL_CERT_FILE", kafka.ssl_cert_file), ("SSL_KEY_FILE", kafka.ssl_key_file)):
        if path is not None and not path.is_file():
            return f"{env}{name}={path}: no such file"
        if path is not None and not os.access(path, os.R_OK):
            return f"{env}{name}={path}: not readable by this user"
    return None


__all__ = ["Compression", "KafkaSettings", "SaslMechanism", "SecurityProtocol", "security_problem"]
