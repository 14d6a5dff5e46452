"""The local broker's ports on this machine: free ones, taken ones, and the ones a start picks."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Any

from services.devtools.kafka_errors import HOST, LocalKafkaError, PortInUseError

DEFAULT_PORT = 9092
BOOTSTRAP_ENV = "AKECE_KAFKA_BOOTSTRAP_SERVERS"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    """True when binding 127.0.0.1:port fails the way Kafka's own bind would (SO_REUSEADDR, like Java)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def default_port() -> int:
    """The port of $AKECE_KAFKA_BOOTSTRAP_SERVERS when it points at this machine, else 9092."""
    first = os.environ.get(BOOTSTRAP_ENV, "").split(",")[0].strip()
    match = re.fullmatch(r"(?:\w+://)?(127\.0\.0\.1|localhost):(\d+)", first)
    return int(match.group(2)) if match else DEFAULT_PORT


def broker_ports(port: int | None, controller_port: int | None, previous: Mapping[str, Any]) -> tuple[int, int]:
    """The PLAINTEXT and controller ports of a start: given, else ``default_port()`` and the previous
    start's controller port (else a free one); refused when they clash or are taken."""
    port = port or default_port()
    controller_port = controller_port or _previous_controller_port(port, previous)
    if port == controller_port:
        raise LocalKafkaError(f"the broker and controller ports must differ (both {port})")
    for candidate in (port, controller_port):
        if port_in_use(candidate):
            raise PortInUseError(candidate)
    return port, controller_port


def secure_ports(port: int, controller_port: int, sasl_ssl_port: int | None, mtls_port: int | None,
                 previous: Mapping[str, Any]) -> tuple[int, int]:
    """SASL_SSL and mTLS ports: given, else the previous start's, else port+1 and port+2, else free ones."""
    taken = {port, controller_port}
    chosen: list[int] = []
    for given, key, offset in ((sasl_ssl_port, "sasl_ssl_port", 1), (mtls_port, "mtls_port", 2)):
        if given is not None:
            if given in taken or port_in_use(given):
                raise PortInUseError(given)
            candidate = given
        else:
            options = [previous.get(key), port + offset]
            candidate = next((c for c in options if isinstance(c, int) and c not in taken
                              and not port_in_use(c)), None) or free_port()
        taken.add(candidate)
        chosen.append(candidate)
    return chosen[0], chosen[1]


def _previous_controller_port(port: int, previous: Mapping[str, Any]) -> int:
    controller_port = previous.get("controller_port")
    if isinstance(controller_port, int) and controller_port != port and not port_in_use(controller_port):
        return controller_port
    return free_port()


__all__ = ["BOOTSTRAP_ENV", "DEFAULT_PORT", "HOST", "broker_ports", "default_port", "free_port", "port_in_use",
           "secure_ports"]
