"""The services' log lines: ``info`` on its fused path writes what structlog's own path writes, and
``LineWriter`` writes a loop turn's lines together, in order, losing none at exit."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


class Writes(io.StringIO):
    """A file that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_info_lines_of_one_loop_turn_go_out_together_at_the_next_turn() -> None:
    file = Writes()
    writer = logs.LineWriter(file)
    for n in range(50):
        writer.info(f"line {n}")
    assert file.getvalue() == ""  # nothing yet: the turn is not over
    await asyncio.sleep(0)
    assert file.getvalue().splitlines() == [f"line {n}" for n in range(50)]
    assert file.writes == 1


async def test_a_warning_goes_out_at_once_after_the_lines_waiting_before_it() -> None:
    file = Writes()
    writer = logs.LineWriter(file)
    writer.info("first")
    writer.warning("second")
    assert file.getvalue().splitlines() == ["first", "second"]
    writer.info("third")
    await asyncio.sleep(0)
    assert file.getvalue().splitlines() == ["first", "second", "third"]


async def test_a_line_from_another_thread_keeps_the_order() -> None:
    file = Writes()
    writer = logs.LineWriter(file)
    writer.info("from the loop")
    await asyncio.to_thread(writer.info, "from a thread")
    assert file.getvalue().splitlines() == ["from the loop", "from a thread"]


def test_outside_a_loop_each_line_goes_out_at_once() -> None:
    file = Writes()
    writer = logs.LineWriter(file)
    writer.info("one")
    assert file.getvalue() == "one\n"


def test_a_process_that_ends_right_after_logging_in_its_loop_loses_no_line(tmp_path: Path) -> None:
    """The lines of the last loop turn are still written when the loop stops with them waiting (at exit)."""
    script = (
        "import asyncio\n"
        "from services.shared import logging as logs\n"
        "logs.configure(level='info', fmt='json')\n"
        "log = logs.get('t')\n"
        "loop = asyncio.new_event_loop()\n"
        "def last_turn():\n"
        "    for n in range(1000):\n"
        "        log.info('line', n=n)\n"
        "    loop.stop()  # no further turn: the lines wait for the exit\n"
        "loop.call_soon(last_turn)\n"
        "loop.run_forever()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(line)["n"] for line in done.stdout.splitlines()] == list(range(1000))
