"""The router and delivery processes import only what their roles use, and ``akece-webhooks`` parses a
command with its own registrar's parsers exactly as with every command's.

A role's process runs the real command (``python -m services ...``) against the broker and lists the
modules it has loaded when it ends: the admin API, the console, ops, replay, the developer tools,
the demo, the publisher and rich (output, and structlog's optional import) must not be among them.
Nothing here is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from services import cli
from services.contract.topics import Topics
from services.devtools.ports import free_port
from services.shared.settings import Settings
from tests.delivery_support import worker_env
from tests.process_support import Parent

ROOT = Path(__file__).resolve().parent.parent

# What no router or delivery process needs: a command's output (rich, pygments through it) and every
# package of the other commands.
NOT_FOR_ROLES = ("rich", "pygments", "services.admin", "services.console", "services.ops", "services.replay",
                 "services.devtools", "services.demo", "services.publisher", "schemas.examples")
NOT_FOR_DELIVERY = (*NOT_FOR_ROLES, "schemas", "services.router")  # the event models are the router's
NOT_FOR_ROUTER = (*NOT_FOR_ROLES, "services.delivery")

# Runs ``python -m services ARGS`` and writes the modules it loaded (not those it was refused) when it ends.
LISTS_ITS_MODULES = """
import os, runpy, sys
try:
    runpy.run_module("services", run_name="__main__", alter_sys=True)
finally:
    with open(os.environ["ROLE_IMPORTS_FILE"], "w") as out:
        out.write("\\n".join(sorted(name for name, module in sys.modules.items() if module is not None)))
"""


def offenders(loaded: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return [name for name in loaded if any(name == f or name.startswith(f"{f}.") for f in forbidden)]


async def loaded_by(args: list[str], env: dict[str, str], tmp_path: Path, *, stop_when_ready: bool) -> list[str]:
    """The modules ``python -m services ARGS`` has loaded when it ends: by itself, or by SIGTERM once ready."""
    name = "-".join(a.strip("-") for a in args)
    listing, log = tmp_path / f"{name}.modules", tmp_path / f"{name}.log"
    port = free_port()
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LISTS_ITS_MODULES, *args, cwd=ROOT, stdout=out, stderr=out,
            env={**env, "ROLE_IMPORTS_FILE": str(listing), "AKECE_METRICS_PORT": str(port)})
    try:
        if stop_when_ready:
            await Parent(process, port, log).until("/readyz", lambda status, _: status == 200, timeout=60)
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0, log.read_text(errors="replace")[-2000:]
    return listing.read_text().split()


async def test_router_and_delivery_processes_load_no_other_commands_modules(
        settings: Settings, topics: Topics, tmp_path: Path) -> None:
    env = worker_env(settings)
    runs = {
        "deliver": (["deliver", "--until-idle", "--processes", "1"], False, NOT_FOR_DELIVERY),
        "router": (["router", "--until-idle", "--processes", "1"], False, NOT_FOR_ROUTER),
        "run --role delivery": (["run", "--role", "delivery"], True, NOT_FOR_DELIVERY),
        "run --role router": (["run", "--role", "router"], True, NOT_FOR_ROUTER),
    }
    loaded = await asyncio.gather(*(loaded_by(args, env, tmp_path, stop_when_ready=stop)
                                    for args, stop, _ in runs.values()))
    for (command, (_, _, forbidden)), modules in zip(runs.items(), loaded, strict=True):
        assert "services.run" in modules and "aiokafka" in modules, command  # it did run its role
        assert offenders(modules, forbidden) == [], command


async def test_the_api_role_still_loads_what_it_serves(settings: Settings, topics: Topics, tmp_path: Path) -> None:
    """The API process is not cut down: it serves the admin API, the console and the ops routes."""
    env = worker_env(settings) | {"AKECE_API_ADMIN_TOKEN": "t" * 32, "AKECE_API_PORT": str(free_port())}
    modules = await loaded_by(["run", "--role", "api"], env, tmp_path, stop_when_ready=True)
    assert {"services.admin.app", "services.ops", "rich"} <= set(modules)


# --- one command's parser is the whole parser's -------------------------------------------------------
def helps(top: argparse.ArgumentParser) -> dict[str, str]:
    return {p.prog: p.format_help() for p in cli.subcommands(top)}


def test_each_command_s_own_parser_has_its_help_exactly() -> None:
    whole = helps(cli.parser())
    assert {prog.split()[1] for prog in whole} == set(cli.REGISTRARS)  # every command has its registrar
    for command in cli.REGISTRARS:
        own = {prog: text for prog, text in helps(cli.parser(command)).items() if prog.split()[1] == command}
        assert own, command
        assert own == {prog: text for prog, text in whole.items() if prog.split()[1] == command}, command


@pytest.mark.parametrize("argv", [
    ["deliver"],
    ["--bootstrap-server", "kafka:9092", "deliver", "--processes", "2", "--topic-prefix", "staging"],
    ["--boot", "kafka:9092", "--topic-prefix=staging", "router", "--until-idle", "--max-records", "5"],
    ["run", "--role", "router", "--role", "delivery", "--env-file", "prod.env"],
    ["--env-file", "prod.env", "dlq", "replay", "--webhook", "42", "--rate", "200/s", "--yes"],
    ["webhooks", "update", "42", "--disable", "--reason", "maintenance", "--json"],
    ["kafka", "start", "--nodes", "3"],
    ["publish", "--example", "message_created", "--account", "7"],
    ["alerts", "render", "-o", "alerts.yml"],
    ["status", "--json"],
])
def test_one_command_s_parser_parses_as_the_whole_parser(argv: list[str]) -> None:
    command = cli.command_of(argv)
    assert command is not None and command in argv
    assert parsed(cli.parser(command), argv) == parsed(cli.parser(), argv)


def parsed(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, object]:
    """The arguments, with each handler as its function's name and what its closure holds (a registration
    makes its own wrappers) and a parser as its ``prog``."""
    def plain(value: object) -> object:
        if isinstance(value, argparse.ArgumentParser):
            return value.prog
        if isinstance(value, types.FunctionType):
            cells = tuple(plain(cell.cell_contents) for cell in value.__closure__ or ())
            return value.__module__, value.__qualname__, cells
        return value
    return {key: plain(value) for key, value in vars(parser.parse_args(argv)).items()}


@pytest.mark.parametrize(("argv", "command"), [
    (["--help"], None), (["-h", "run"], None), (["--version", "deliver"], None), (["bogus"], None),
    (["--bogus", "deliver"], None), (["--topic-prefix", "run", "deliver"], None),  # "run" is the prefix
    (["--topic-prefix"], None), ([], None),
    (["deliver", "--help"], "deliver"), (["--boot", "kafka:9092", "status"], "status"),
    (["--env-file", "prod.env", "dlq", "list"], "dlq"), (["--topic-prefix=run", "deliver"], "deliver"),
])
def test_the_whole_parser_decides_unless_only_global_options_come_before_the_command(
        argv: list[str], command: str | None) -> None:
    assert cli.command_of(argv) == command


def test_parsing_a_role_command_loads_neither_structlog_nor_the_roles() -> None:
    """The entry point's parse of ``deliver`` loads only the run commands: structlog comes with the roles,
    after the command has decided on rich (``run_commands.without_rich``)."""
    script = ("import sys\nfrom services import cli\n"
              "cli.parser(cli.command_of(sys.argv[1:])).parse_args(sys.argv[1:])\n"
              "print('\\n'.join(n for n, m in sys.modules.items() if m is not None))")
    for argv in (["deliver"], ["router", "--processes", "2"], ["run", "--role", "delivery"]):
        done = subprocess.run([sys.executable, "-c", script, *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, check=True)
        loaded = done.stdout.split()
        assert "services.run_commands" in loaded, argv
        assert offenders(loaded, (*NOT_FOR_ROLES, "structlog", "services.run", "services.delivery",
                                  "services.router")) == [], argv
