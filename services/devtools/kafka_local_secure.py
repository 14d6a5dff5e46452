"""The local broker's secured listeners (``akece-webhooks kafka start --secure``).

Beside its PLAINTEXT listener the broker then serves, on 127.0.0.1:

- ``SASL_SSL``: TLS plus SASL/SCRAM (SCRAM-SHA-512 and -256) for the user ``akece``. Kafka creates
  SCRAM credentials when the storage is first formatted (``--add-scram``); on a data dir formatted
  before, that is a silent no-op, so ``--secure`` needs a fresh data dir the first time.
- ``MTLS``: TLS with a client certificate signed by the local CA required (``ssl.client.auth=required``).

The controller listener stays PLAINTEXT. ``openssl`` generates the material once into
``<data dir>/secure/``: a CA, the broker's certificate (SAN ``DNS:localhost,IP:127.0.0.1``;
extendedKeyUsage ``serverAuth,clientAuth``, since the broker's own self-check connects to the mTLS
listener), a client certificate, and the SCRAM password. Every listener keeps its SSL settings to
itself (``listener.name.<l>.ssl.*``): Kafka refuses a global keystore mixed with per-listener ones.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "akece"
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
SASL_LISTENER, MTLS_LISTENER = "SASL_SSL", "MTLS"
FORMATTED_MARKER = "scram-formatted"
OPENSSL_HINT = "install openssl (it generates the local CA and certificates)"

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


class CertificateError(Exception):
    """openssl is missing or failed; the message says which step."""


@dataclass(frozen=True)
class SecureFiles:
    """The certificates, keys and password of the secured listeners, in one directory."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        """The broker's key, certificate and CA in one PEM file (``ssl.keystore.type=PEM``)."""
        return self.directory / "broker-keystore.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    @property
    def password_file(self) -> Path:
        return self.directory / "scram-password"

    @property
    def formatted_marker(self) -> Path:
        """Present once the storage was formatted with the SCRAM user."""
        return self.directory / FORMATTED_MARKER

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.ca, self.keystore, self.client_cert, self.client_key,
                                         self.password_file))

    def password(self) -> str:
        return self.password_file.read_text().strip()


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertificateError(f"openssl not found: {OPENSSL_HINT}")
    done = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")


def _new_key_and_csr(work: Path, name: str, subject: str) -> None:
    _openssl("req", "-new", "-config", "openssl.cnf", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=work)


def make_ca(directory: Path, common_name: str = "akece-webhooks local CA") -> tuple[Path, Path]:
    """A self-signed CA (certificate, key) in ``directory``. Tests use a second one as an untrusted CA."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "openssl.cnf").write_text(_OPENSSL_CONFIG)
    _openssl("req", "-x509", "-config", "openssl.cnf", "-extensions", "ca", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
             "-subj", f"/CN={common_name}", cwd=directory)
    return directory / "ca.pem", directory / "ca.key"


def _issue(work: Path, name: str, subject: str, extensions: str) -> None:
    """``<name>.pem`` signed by the CA in ``work``, for ``<name>.key``."""
    _new_key_and_csr(work, name, subject)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", str(secrets.randbits(63)), "-days", "825", "-extfile", "openssl.cnf",
             "-extensions", extensions, "-out", f"{name}.pem", cwd=work)


def ensure_material(directory: Path) -> SecureFiles:
    """The secured listeners' files in ``directory``, generated once (all or nothing)."""
    files = SecureFiles(directory)
    if files.complete():
        return files
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".secure-", dir=directory.parent))
    try:
        make_ca(work)
        _issue(work, "server", "/CN=localhost", "server")
        _issue(work, "client", f"/CN={USER}-client", "client")
        keystore = "".join((work / name).read_text() for name in ("server.key", "server.pem", "ca.pem"))
        (work / "broker-keystore.pem").write_text(keystore)
        (work / "scram-password").write_text(secrets.token_urlsafe(24) + "\n")
        for leftover in ("server.csr", "client.csr", "server.key", "server.pem"):
            (work / leftover).unlink()
        for path in work.iterdir():
            path.chmod(0o600)
        if directory.exists():
            shutil.rmtree(directory)  # an incomplete earlier attempt
        work.rename(directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return files


def scram_format_arguments(files: SecureFiles) -> list[str]:
    """StorageTool arguments that create the SCRAM user (only effective on the first format)."""
    password = files.password()
    args: list[str] = []
    for mechanism in MECHANISMS:
        args += ["--add-scram", f"{mechanism}=[name={USER},password={password}]"]
    return args


def template_values(files: SecureFiles | None, sasl_port: int | None, mtls_port: int | None) -> dict[str, str]:
    """The server.properties template's secured-listener placeholders (empty without ``--secure``)."""
    if files is None or sasl_port is None or mtls_port is None:
        return {"extra_listeners": "", "extra_protocols": "", "secure_listeners": ""}
    sasl, mtls = SASL_LISTENER.lower(), MTLS_LISTENER.lower()
    lines = [f"listener.name.{sasl}.sasl.enabled.mechanisms={','.join(MECHANISMS)}"]
    lines += [f"listener.name.{sasl}.{m.lower()}.sasl.jaas.config="
              "org.apache.kafka.common.security.scram.ScramLoginModule required;" for m in MECHANISMS]
    for listener in (sasl, mtls):
        lines += [f"listener.name.{listener}.ssl.keystore.type=PEM",
                  f"listener.name.{listener}.ssl.keystore.location={files.keystore}"]
    lines += [f"listener.name.{mtls}.ssl.truststore.type=PEM",
              f"listener.name.{mtls}.ssl.truststore.location={files.ca}",
              f"listener.name.{mtls}.ssl.client.auth=required"]
    return {
        "extra_listeners": f",{SASL_LISTENER}://127.0.0.1:{sasl_port},{MTLS_LISTENER}://127.0.0.1:{mtls_port}",
        "extra_protocols": f",{SASL_LISTENER}:SASL_SSL,{MTLS_LISTENER}:SSL",
        "secure_listeners": "\n".join(["# Secured listeners (kafka start --secure)", *lines]),
    }


def client_env(files: SecureFiles, sasl_port: int, mtls_port: int) -> dict[str, dict[str, str]]:
    """The environment variables that connect the pipeline to each secured listener."""
    return {
        f"SASL_SSL (SCRAM-SHA-512) on 127.0.0.1:{sasl_port}": {
            "AKECE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{sasl_port}",
            "AKECE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "AKECE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "AKECE_KAFKA_SASL_USERNAME": USER,
            "AKECE_KAFKA_SASL_PASSWORD_FILE": str(files.password_file),
            "AKECE_KAFKA_SSL_CA_FILE": str(files.ca),
        },
        f"mTLS on 127.0.0.1:{mtls_port}": {
            "AKECE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{mtls_port}",
            "AKECE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "AKECE_KAFKA_SSL_CA_FILE": str(files.ca),
            "AKECE_KAFKA_SSL_CERT_FILE": str(files.client_cert),
            "AKECE_KAFKA_SSL_KEY_FILE": str(files.client_key),
        },
    }


def env_lines(files: SecureFiles, sasl_port: int, mtls_port: int) -> list[str]:
    """Human-readable ``export`` lines for each secured listener."""
    lines: list[str] = []
    for title, env in client_env(files, sasl_port, mtls_port).items():
        lines.append(f"{title}:")
        lines.append("  export " + " ".join(f"{k}={v}" for k, v in env.items()))
    return lines


__all__ = ["MECHANISMS", "USER", "CertificateError", "SecureFiles", "client_env", "ensure_material", "env_lines",
           "make_ca", "scram_format_arguments", "template_values"]
