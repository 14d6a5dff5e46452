"""Every log line the services write during a test: structlog's rendered JSON lines and stdlib records.

    with captured_logs() as logs:
        ...                                   # run workers
    logs.events("delivery.attempted")         # the parsed JSON lines of that event
    logs.text()                               # every line, structlog and stdlib, as one string

The services' own processors and level filter (``services.shared.logging.configure``, JSON, debug),
rendered into a buffer instead of stdout. Module-level loggers that an earlier in-process
``configure`` cached (``cache_logger_on_first_use``) are un-cached, so none writes elsewhere; the
previous configuration comes back on exit.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from structlog._config import BoundLoggerLazyProxy

from services.shared import logging as logs


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {self.format(record)}")


@dataclass
class CapturedLogs:
    buffer: io.StringIO = field(default_factory=io.StringIO)
    stdlib: _Records = field(default_factory=_Records)

    def lines(self) -> list[str]:
        return self.buffer.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        """Every structlog line, parsed (each must be one JSON object)."""
        return [orjson.loads(line) for line in self.lines()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["event"] == name]

    def text(self) -> str:
        return "\n".join(self.lines() + self.stdlib.lines)


def _uncache_service_loggers() -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith("services.") and module is not None:
            for value in vars(module).values():
                if isinstance(value, BoundLoggerLazyProxy):
                    value.__dict__.pop("bind", None)  # a cached bind holds the logger of an old config


@contextmanager
def captured_logs(level: str = "debug") -> Iterator[CapturedLogs]:
    saved = structlog.get_config()
    capture = CapturedLogs()
    root = logging.getLogger()
    saved_level = root.level
    logs.configure(level=level, fmt="json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=capture.buffer),
                        cache_logger_on_first_use=False)
    _uncache_service_loggers()
    root.addHandler(capture.stdlib)
    root.setLevel(logging.INFO)  # aiohttp, aiokafka: INFO and up (their DEBUG is per-frame noise)
    try:
        yield capture
    finally:
        root.removeHandler(capture.stdlib)
        root.setLevel(saved_level)
        structlog.configure(**saved)
        _uncache_service_loggers()
