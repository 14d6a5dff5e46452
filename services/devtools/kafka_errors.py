"""What goes wrong with the local broker, said in one line."""

from __future__ import annotations

from services.shared.errors import AkeceError

HOST = "127.0.0.1"  # every local broker listens here only


class LocalKafkaError(AkeceError):
    """The local broker could not be resolved, started, stopped or wiped. The message says why."""


class PortInUseError(LocalKafkaError):
    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} is in use on {HOST}: stop what listens there or pick another port")
        self.port = port


__all__ = ["HOST", "LocalKafkaError", "PortInUseError"]
