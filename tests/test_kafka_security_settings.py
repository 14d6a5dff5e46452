"""Kafka security settings without a broker: names, validation in one line, client options, causes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from services import cli
from services.devtools.kafka_local_secure import ensure_material
from services.shared import kafka
from services.shared.errors import ConfigError
from services.shared.kafka_security import cause, client_options, explain, sasl_password
from services.shared.settings import Settings

ENV_PREFIX = "AKECE_"


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a client certificate and key (the same files ``kafka start --secure`` makes)."""
    return ensure_material(tmp_path_factory.mktemp("tls") / "secure").directory


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_environment_names(monkeypatch: pytest.MonkeyPatch, material: Path) -> None:
    (material / "pw").write_text("s3cret-pw\n")
    env = {"AKECE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "AKECE_KAFKA_SASL_MECHANISM": "scram-sha-512",
           "AKECE_KAFKA_SASL_USERNAME": "svc", "AKECE_KAFKA_SASL_PASSWORD_FILE": str(material / "pw"),
           "AKECE_KAFKA_SSL_CA_FILE": str(material / "ca.pem"), "AKECE_KAFKA_SSL_CHECK_HOSTNAME": "false"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    k = Settings().kafka
    assert (k.security_protocol, k.sasl_mechanism, k.sasl_username) == ("SASL_SSL", "SCRAM-SHA-512", "svc")
    assert k.sasl_password_file == material / "pw" and k.ssl_ca_file == material / "ca.pem"
    assert k.ssl_check_hostname is False
    assert sasl_password(k) == "s3cret-pw"  # the file's trailing newline is not part of it


def test_defaults_are_plaintext_with_hostname_checks_on() -> None:
    k = Settings().kafka
    assert k.security_protocol == "PLAINTEXT" and k.ssl_check_hostname is True
    assert client_options(k) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(("env", "expected"), [
    ({"SECURITY_PROTOCOL": "TLS"},
     "AKECE_KAFKA_SECURITY_PROTOCOL=TLS: Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "GSSAPI", "SASL_USERNAME": "u", "SASL_PASSWORD": "p"},
     "AKECE_KAFKA_SASL_MECHANISM=GSSAPI: Input should be 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_PASSWORD": "p"},
     "AKECE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs AKECE_KAFKA_SASL_USERNAME"),
    ({"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_USERNAME": "u"},
     "AKECE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs exactly one of AKECE_KAFKA_SASL_PASSWORD and "
     "AKECE_KAFKA_SASL_PASSWORD_FILE"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u", "SASL_PASSWORD": "p", "SASL_PASSWORD_FILE": "{ca}"},
     "AKECE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs exactly one of AKECE_KAFKA_SASL_PASSWORD and "
     "AKECE_KAFKA_SASL_PASSWORD_FILE (both are set)"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u", "SASL_PASSWORD_FILE": "/nonexistent/pw"},
     "AKECE_KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw: no such file"),
    ({"SECURITY_PROTOCOL": "SSL", "SSL_CA_FILE": "/nonexistent/ca.pem"},
     "AKECE_KAFKA_SSL_CA_FILE=/nonexistent/ca.pem: no such file"),
    ({"SASL_USERNAME": "u", "SASL_PASSWORD": "p"},
     "AKECE_KAFKA_SASL_USERNAME is set but AKECE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use it (set "
     "AKECE_KAFKA_SECURITY_PROTOCOL to SASL_PLAINTEXT or SASL_SSL, or unset it)"),
    ({"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_USERNAME": "u", "SASL_PASSWORD": "p", "SSL_CA_FILE": "{ca}"},
     "AKECE_KAFKA_SSL_CA_FILE is set but AKECE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use it (set "
     "AKECE_KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL, or unset it)"),
    ({"SECURITY_PROTOCOL": "SSL", "SSL_KEY_FILE": "{ca}"},
     "AKECE_KAFKA_SSL_KEY_FILE needs AKECE_KAFKA_SSL_CERT_FILE (the client certificate it belongs to)"),
])
def test_a_bad_combination_is_refused_at_start_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], material: Path,
        env: dict[str, str], expected: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"AKECE_KAFKA_{key}", value.format(ca=material / "ca.pem"))
    code = cli.main(["topics", "ensure"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"akece-webhooks: invalid configuration: {expected}\n"


def test_the_password_never_appears_in_a_refusal(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AKECE_KAFKA_SASL_PASSWORD", "hunter2-very-secret")
    assert cli.main(["topics", "ensure"]) == 2
    err = capsys.readouterr().err
    assert "AKECE_KAFKA_SASL_PASSWORD is set but" in err and "hunter2" not in err


async def test_every_kind_of_client_gets_tls_and_sasl(material: Path) -> None:
    settings = Settings(kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                               "sasl_username": "svc", "sasl_password": "pw", "ssl_ca_file": material / "ca.pem"})
    producer, consumer, admin = (kafka.producer(settings), kafka.consumer(settings, "t", group_id="g"),
                                 kafka.admin(settings))
    try:
        for client in (producer.client, consumer._client, admin._client):
            assert client._security_protocol == "SASL_SSL"
            assert (client._sasl_mechanism, client._sasl_plain_username, client._sasl_plain_password) == \
                ("SCRAM-SHA-256", "svc", "pw")
            context: ssl.SSLContext = client._ssl_context
            assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True
            assert any("akece-webhooks local CA" in str(c.get("subject")) for c in context.get_ca_certs())
            assert kafka.client_protocol(producer) == "SASL_SSL"
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()


def test_mtls_without_hostname_checks_still_verifies_the_chain(material: Path) -> None:
    options = client_options(Settings(kafka={
        "security_protocol": "SSL", "ssl_ca_file": material / "ca.pem", "ssl_cert_file": material / "client.pem",
        "ssl_key_file": material / "client.key", "ssl_check_hostname": False}).kafka)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    context: ssl.SSLContext = options["ssl_context"]
    assert context.check_hostname is False and context.verify_mode == ssl.CERT_REQUIRED


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(material: Path) -> None:
    settings = Settings(kafka={"security_protocol": "SSL", "ssl_cert_file": material / "client.pem",
                               "ssl_key_file": material / "ca.key"})
    with pytest.raises(ConfigError, match=r"cannot load the client certificate and key \(KEY_VALUES_MISMATCH"):
        kafka.producer(settings)


def test_an_empty_password_file_is_a_config_error(material: Path) -> None:
    (material / "empty").write_text("\n")
    settings = Settings(kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u",
                               "sasl_password_file": material / "empty"})
    with pytest.raises(ConfigError, match=r"AKECE_KAFKA_SASL_PASSWORD_FILE=.* is empty"):
        kafka.admin(settings)


# ---------------------------------------------------------------- causes


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.verify_code, error.verify_message = code, message
    return error


def test_causes_name_the_setting_to_check() -> None:
    mismatch = cause(_verify_error(64, "IP address mismatch, certificate is not valid for '10.0.0.5'."), "SSL")
    assert mismatch.startswith("TLS: the broker's certificate does not name the host it was reached by "
                               "(CERTIFICATE_VERIFY_FAILED: IP address mismatch")
    assert mismatch.endswith("or set AKECE_KAFKA_SSL_CHECK_HOSTNAME=false")
    assert "not valid now" in cause(_verify_error(10, "certificate has expired"), "SSL")
    untrusted = cause(_verify_error(19, "self-signed certificate in certificate chain"), "SASL_SSL")
    assert untrusted.endswith("set AKECE_KAFKA_SSL_CA_FILE to the CA that signed it")
    refused = SaslAuthenticationFailed("Authentication failed: Invalid username or password")
    assert cause(refused, "SASL_SSL") == (
        "SASL authentication failed (Authentication failed: Invalid username or password): check "
        "AKECE_KAFKA_SASL_USERNAME, AKECE_KAFKA_SASL_PASSWORD(_FILE) and AKECE_KAFKA_SASL_MECHANISM")
    closed = KafkaConnectionError("Connection at b-1.example:9096 closed")
    assert "a TLS listener does that to a PLAINTEXT client" in cause(closed, "PLAINTEXT")
    assert "requires a client certificate it trusts" in cause(closed, "SSL")
    assert cause(ConnectionRefusedError(111, "Connect call failed"), "PLAINTEXT") == \
        "ConnectionRefusedError: [Errno 111] Connect call failed"


def test_a_connection_lost_after_the_broker_answered_is_not_blamed_on_the_settings() -> None:
    """Toxiproxy's reset_peer made a running worker log 'a TLS listener does that to a PLAINTEXT client':
    once the same settings reached the broker, a closed or reset connection is a network or broker fault."""
    closed = KafkaConnectionError("Connection at 127.0.0.1:9092 closed")
    for error in (closed, ConnectionResetError(104, "Connection reset by peer")):
        line = cause(error, "PLAINTEXT", answered_before=True)
        assert "TLS" not in line and "SECURITY_PROTOCOL" not in line, line
        assert "the broker answered these settings before, so the network or the broker went away" in line
    assert cause(closed, "PLAINTEXT", answered_before=True).startswith("Connection at 127.0.0.1:9092 closed: ")
    assert explain(closed, [closed], "SSL", answered_before=True) == cause(closed, "SSL", answered_before=True)
    assert "a TLS listener does that" in explain(closed, [closed], "PLAINTEXT")  # first contact: still the hint


def test_without_a_recorded_failure_the_client_error_stands() -> None:
    error = KafkaConnectionError("Unable to bootstrap from [('h', 1)]")
    assert explain(error, [], "PLAINTEXT") == str(error)
    assert explain(error, [SaslAuthenticationFailed("x")], "SASL_SSL").startswith("SASL authentication failed")
