"""TLS and SASL for every Kafka client, and a one-line cause when a client cannot connect.

``client_options(settings.kafka)`` is what ``services.shared.kafka`` adds to each producer,
consumer and admin client. aiokafka's ``start()`` only raises ``KafkaConnectionError("Unable to
bootstrap from ...")``; the cause (a refused password, an untrusted certificate, a closed
connection) exists only as the exception aiokafka logs at ERROR on logger ``aiokafka`` while
bootstrapping. ``bootstrap_failures()`` collects those exceptions for the current task (a
logger filter: nothing about what is logged changes) and ``explain`` turns them into one line that
names the setting to check.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.helpers import create_ssl_context

from services.shared.errors import ConfigError
from services.shared.settings_kafka import KafkaSettings

ENV = "AKECE_KAFKA_"
# X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = frozenset({62, 64})
# self-signed, self-signed in chain, unable to get (local) issuer certificate, unable to verify the first one
_UNTRUSTED = frozenset({2, 18, 19, 20, 21})
_EXPIRED = frozenset({9, 10})  # not yet valid, expired

_failures: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "kafka_bootstrap_failures", default=None)


# ---------------------------------------------------------------- client options


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """The security keyword arguments of an aiokafka producer, consumer or admin client."""
    protocol = kafka.security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(kafka)
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
                       sasl_plain_password=sasl_password(kafka))
    return options


def sasl_password(kafka: KafkaSettings) -> str:
    """The SASL password, from the setting or from its file (read each time: a rotated secret is seen)."""
    if kafka.sasl_password is not None:
        return kafka.sasl_password.get_secret_value()
    path = kafka.sasl_password_file
    if path is None:
        raise ConfigError(f"{ENV}SASL_PASSWORD or {ENV}SASL_PASSWORD_FILE is required with SASL")
    try:
        password = path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{ENV}SASL_PASSWORD_FILE={path}: cannot read it ({exc})") from exc
    if not password:
        raise ConfigError(f"{ENV}SASL_PASSWORD_FILE={path} is empty")
    return password


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    key_password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
    return _ssl_context(kafka.ssl_ca_file, kafka.ssl_cert_file, kafka.ssl_key_file, key_password,
                        kafka.ssl_check_hostname)


@functools.lru_cache(maxsize=8)
def _ssl_context(ca: Path | None, cert: Path | None, key: Path | None, key_password: str | None,
                 check_hostname: bool) -> ssl.SSLContext:
    """One context per distinct configuration (loading the system CAs costs milliseconds per client)."""
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{ENV}SSL_CA_FILE={ca}: no usable CA certificate in it ({_reason(exc)})") from exc
    if cert is not None:
        try:
            context.load_cert_chain(cert, key, key_password)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{ENV}SSL_CERT_FILE={cert}, {ENV}SSL_KEY_FILE={key}: cannot load the client "
                              f"certificate and key ({_reason(exc)}; wrong key, or an encrypted key without "
                              f"{ENV}SSL_KEY_PASSWORD?)") from exc
    context.check_hostname = check_hostname  # verification of the chain stays on either way
    return context


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# ---------------------------------------------------------------- why a client could not connect


class _BootstrapFailures(logging.Filter):
    """Copies the exception of each failed bootstrap connection into the current task's list."""

    def filter(self, record: logging.LogRecord) -> bool:
        seen = _failures.get()
        args = record.args
        if seen is not None and record.levelno >= logging.ERROR and isinstance(args, tuple) and args \
                and isinstance(args[-1], BaseException):
            seen.append(args[-1])
        return True


def _install_filter() -> None:
    logger = logging.getLogger("aiokafka")  # aiokafka.client logs on this one
    if not any(isinstance(f, _BootstrapFailures) for f in logger.filters):
        logger.addFilter(_BootstrapFailures())


@contextlib.contextmanager
def bootstrap_failures() -> Iterator[list[BaseException]]:
    """The exceptions of the connections a client starting in this block failed to open.

    aiokafka must log at ERROR for them to be seen: keep logger ``aiokafka`` at ERROR or below
    (``services.shared.cli.quiet_client_logs`` does, and stops the lines from being printed).
    """
    _install_filter()
    seen: list[BaseException] = []
    token = _failures.set(seen)
    try:
        yield seen
    finally:
        _failures.reset(token)


def explain(exc: BaseException, failures: Sequence[BaseException], protocol: str | None, *,
            answered_before: bool = False) -> str:
    """One line saying why a client could not start: the first connection failure's cause, else ``exc``.

    ``answered_before``: these settings reached the broker earlier in this process, so a closed or
    reset connection is the network or the broker going away, not a protocol mismatch."""
    if not failures:
        return str(exc) or type(exc).__name__
    return cause(failures[0], protocol, answered_before=answered_before)


def cause(error: BaseException, protocol: str | None, *, answered_before: bool = False) -> str:
    """What a failed connection means, naming the setting to check."""
    if isinstance(error, SaslAuthenticationFailed):
        return (f"SASL authentication failed ({_broker_says(error)}): check {ENV}SASL_USERNAME, "
                f"{ENV}SASL_PASSWORD(_FILE) and {ENV}SASL_MECHANISM")
    if isinstance(error, UnsupportedSaslMechanismError):
        said = _broker_says(error)
        detail = "" if said.startswith("<") else f" ({said})"  # the broker's refusal carries no text
        return f"the listener does not enable this SASL mechanism{detail}: check {ENV}SASL_MECHANISM"
    if isinstance(error, ssl.SSLCertVerificationError):
        return _certificate(error)
    if isinstance(error, ssl.SSLError):
        return (f"TLS handshake failed ({error.reason or error}): does this listener speak TLS? "
                f"(check {ENV}SECURITY_PROTOCOL={protocol or '?'})")
    closed = isinstance(error, KafkaConnectionError) and str(error).rstrip().endswith("closed")
    if (closed or isinstance(error, ConnectionResetError)) and answered_before:
        what = _broker_says(error) if closed else "connection reset"
        return (f"{what}: the broker answered these settings before, so the network or the broker went "
                f"away (a restart, a failover, a reset or dropped connection)")
    if closed:
        return f"{_broker_says(error)} by the broker: {_closed_hint(protocol)}"
    if isinstance(error, ConnectionResetError):
        return f"connection reset by the broker: {_closed_hint(protocol)}"
    return f"{type(error).__name__}: {error}" if not str(error).startswith(type(error).__name__) else str(error)


def settings_refused(failures: Sequence[BaseException]) -> bool:
    """The broker answered and refused these settings (credentials, mechanism, TLS or the protocol):
    retrying will not help, the configuration must change."""
    if not failures:
        return False
    error = failures[0]
    closed = isinstance(error, KafkaConnectionError) and str(error).rstrip().endswith("closed")
    return closed or isinstance(error, (SaslAuthenticationFailed, UnsupportedSaslMechanismError, ssl.SSLError))


def _broker_says(error: BaseException) -> str:
    """The message of an aiokafka error without its ``[Error 58] ClassName: `` prefix."""
    text = str(error)
    prefix = f"{type(error).__name__}: "
    return text.split(prefix, 1)[1] if prefix in text else text


def _certificate(error: ssl.SSLCertVerificationError) -> str:
    code, message = error.verify_code, error.verify_message
    if code in _NAME_MISMATCH:
        return (f"TLS: the broker's certificate does not name the host it was reached by "
                f"(CERTIFICATE_VERIFY_FAILED: {message}): bootstrap by a name the certificate lists, or set "
                f"{ENV}SSL_CHECK_HOSTNAME=false")
    if code in _UNTRUSTED:
        return (f"TLS: the broker's certificate is not trusted (CERTIFICATE_VERIFY_FAILED: {message}): set "
                f"{ENV}SSL_CA_FILE to the CA that signed it")
    if code in _EXPIRED:
        return f"TLS: the broker's certificate is not valid now (CERTIFICATE_VERIFY_FAILED: {message})"
    return f"TLS: the broker's certificate was refused (CERTIFICATE_VERIFY_FAILED: {message})"


def _closed_hint(protocol: str | None) -> str:
    if protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        return (f"a TLS listener does that to a {protocol} client: set {ENV}SECURITY_PROTOCOL to SSL or "
                f"SASL_SSL (and {ENV}SSL_CA_FILE)")
    if protocol == "SSL":
        return (f"the listener does not speak TLS, or requires a client certificate it trusts "
                f"({ENV}SSL_CERT_FILE, {ENV}SSL_KEY_FILE) or SASL ({ENV}SECURITY_PROTOCOL=SASL_SSL)")
    return f"check that {ENV}SECURITY_PROTOCOL={protocol or '?'} is what this listener expects"
