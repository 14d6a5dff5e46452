"""The services' log lines: ``info`` on its fused path writes what structlog's own path writes."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import orjson
import pytest
import structlog

from services.shared import logging as logs

TIME = re.compile(r'"timestamp": ?"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"')


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    saved = structlog.get_config()
    buffer = io.StringIO()
    logs.configure(level="info", fmt="json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer), cache_logger_on_first_use=False)
    try:
        yield buffer
    finally:
        structlog.configure(**saved)
        structlog.contextvars.clear_contextvars()


def lines(buffer: io.StringIO) -> list[str]:
    return [TIME.sub('"timestamp": "T"', line) for line in buffer.getvalue().splitlines()]


def test_an_info_line_is_the_line_structlogs_own_path_writes(out: io.StringIO) -> None:
    log = logs.get("test").bind(bound="yes")
    structlog.contextvars.bind_contextvars(process=1, bound="from the context")
    assert type(log).__name__ == "FusedInfo"
    structlogs_own = type(log).__mro__[1].info
    fields = {"delivery_id": "d1", "webhook_id": 7, "status": 200, "duration_ms": 1.5, "error": None}
    log.info("delivery.attempted", **fields)
    structlogs_own(log, "delivery.attempted", **fields)
    fields["big"] = 2**70  # past 64 bits: orjson refuses it, the standard library writes it
    log.info("delivery.attempted", **fields)
    structlogs_own(log, "delivery.attempted", **fields)
    plain, plain_standard, fused, standard = lines(out)
    assert plain == plain_standard
    assert fused == standard
    assert '"big": 1180591620717411303424' in fused
    assert list(orjson.loads(fused.replace(str(2**70), "0"))) == [
        "bound", "delivery_id", "webhook_id", "status", "duration_ms", "error", "big", "event", "process", "level",
        "timestamp"]


def test_exc_info_and_positional_arguments_take_structlogs_way(out: io.StringIO) -> None:
    log = logs.get("test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.info("failed", exc_info=True)
    log.info("hello %s", "world")
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert "ValueError: boom" in first["exception"] and "exc_info" not in first
    assert second["event"] == "hello world"


def test_below_the_level_nothing_is_written() -> None:
    saved = structlog.get_config()
    buffer = io.StringIO()
    try:
        logs.configure(level="warning", fmt="json")
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer), cache_logger_on_first_use=False)
        logs.get("test").info("quiet")
        logs.get("test").warning("loud")
    finally:
        structlog.configure(**saved)
    assert [orjson.loads(line)["event"] for line in buffer.getvalue().splitlines()] == ["loud"]


def test_info_on_the_fused_path_does_not_go_through_structlogs(out: io.StringIO,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    log = logs.get("test").bind()
    monkeypatch.setattr(type(log).__mro__[1], "_proxy_to_logger",
                        lambda *_, **__: pytest.fail("structlog's own path"))
    log.info("fused", n=1)
    assert orjson.loads(out.getvalue())["n"] == 1
