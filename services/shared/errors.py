"""The error tree. Each class says whether retrying can help.

    AkeceError
    ├── ConfigError                 permanent: fix the settings
    ├── KafkaUnavailableError       retriable: the broker is down or unreachable
    │   └── BrokerUnreachableError  retriable: refused at once, the broker is known to be away
    ├── ValidationError             permanent: the input is wrong (names the field)
    └── DeliveryError               an attempt failed before a response (its ``error_class`` names why;
        │                           ``delivery.policy.next_step`` decides what follows)
        ├── TransportError          timeout, refused, reset, DNS, TLS
        └── BlockedDestinationError the network guard refused the address
"""

from __future__ import annotations


class AkeceError(Exception):
    retriable = False


class ConfigError(AkeceError):
    pass


class KafkaUnavailableError(AkeceError):
    retriable = True


class KafkaSettingsRefusedError(KafkaUnavailableError):
    """The broker answered and refused the connection settings (credentials, TLS, protocol). One-shot
    commands exit 2 on it; the long-running roles keep retrying (a restarting broker can look alike)."""


class BrokerUnreachableError(KafkaUnavailableError):
    """Nothing was attempted: the process knows the broker is away (its probes fail)."""


class ValidationError(AkeceError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DeliveryError(AkeceError):
    error_class = "error"


class TransportError(DeliveryError):
    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


class BlockedDestinationError(DeliveryError):
    error_class = "blocked_destination"
