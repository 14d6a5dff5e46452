"""``akece-webhooks``: the one command-line entry point. Each stage registers its own subcommands.

Conventions (docs/cli.md): the global options of ``services.shared.cli`` on every command, before or
after it; an example in every command's help; ``--json`` wherever a table is printed
(``services.shared.output``); the exit codes of ``services.shared.exits``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, cast

from pydantic import ValidationError

from services import __version__
from services.shared import cli as shared_cli
from services.shared.errors import AkeceError, KafkaSettingsRefusedError, KafkaUnavailableError
from services.shared.exits import Exit
from services.shared.settings import describe_invalid

Register = Callable[[argparse._SubParsersAction], None]  # type: ignore[type-arg]
# Each command and the function that registers it (with its siblings), in the order of the help. A command
# imports its modules only when it runs: the parser of one command imports only its own registrar's module.
REGISTRARS: dict[str, str] = {
    "kafka": "services.devtools.cli:register",
    "topics": "services.shared.cli:register",
    "publish": "services.publisher.cli:register",
    "api": "services.run_commands:register_api",
    "webhooks": "services.admin.cli:register",
    "router": "services.run_commands:register_router",
    "deliver": "services.run_commands:register_deliver",
    "dlq": "services.ops.cli:register",
    "recover": "services.ops.cli:register",
    "status": "services.ops.cli:register",
    "run": "services.run_commands:register",
    "demo": "services.demo:register",
    "alerts": "services.shared.alerts:register",
}


EPILOG = """examples:
  akece-webhooks status
  akece-webhooks --bootstrap-server kafka:9092 --topic-prefix staging dlq list --since 2h
  akece-webhooks --env-file prod.env webhooks list --json

exit codes: 0 ok, 1 the operation failed, 2 usage or configuration, 3 refused, 4 not found.
NO_COLOR=1 turns colours off; off a terminal the output is plain text."""


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` and its siblings only (which parses that command's
    arguments exactly as the whole one does)."""
    top = argparse.ArgumentParser(prog="akece-webhooks", description="Akece's webhook delivery pipeline on Kafka.",
                                  epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=f"akece-webhooks {__version__}")
    shared_cli.add_global_options(top, top=True)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = REGISTRARS.values() if command is None else [REGISTRARS[command]]
    for name in dict.fromkeys(wanted):
        registrar(name)(sub)
    for child in subcommands(top):
        child.formatter_class = argparse.RawDescriptionHelpFormatter  # the examples keep their lines
        shared_cli.add_global_options(child, top=False)
    return top


def registrar(name: str) -> Register:
    """``module:function`` of ``REGISTRARS``, imported."""
    module, function = name.split(":")
    return cast(Register, getattr(importlib.import_module(module), function))


class _NotOnlyGlobalOptions(Exception):
    pass


class _GlobalOptions(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _NotOnlyGlobalOptions(message)


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, when only global options (well formed) come before it; else None: the
    whole parser decides (help, ``--version``, an unknown command or option, an option's value missing)."""
    index = next((i for i, word in enumerate(argv) if word in REGISTRARS), None)
    if index is None:
        return None
    options = _GlobalOptions(prog="akece-webhooks", add_help=False)
    shared_cli.add_global_options(options, top=True)
    try:
        options.parse_args(argv[:index])
    except _NotOnlyGlobalOptions:
        return None
    return argv[index]


def subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser under ``parser``, at every depth (``dlq``, ``dlq list``, ...)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # an alias maps to the same parser
                found += [child, *subcommands(child)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(command_of(argv)).parse_args(argv)
    try:
        shared_cli.check_env_file(args)
        code: int = args.func(args)
    except KafkaUnavailableError as exc:  # the broker refused the settings: 2; away or not answering: 1
        print(f"akece-webhooks: {exc}", file=sys.stderr)
        return Exit.USAGE if isinstance(exc, KafkaSettingsRefusedError) else Exit.FAILED
    except AkeceError as exc:
        print(f"akece-webhooks: {exc}", file=sys.stderr)
        return Exit.USAGE
    except ValidationError as exc:  # the settings (AKECE_* variables): one line naming each variable
        if exc.title != "Settings":
            raise
        print(f"akece-webhooks: invalid configuration: {describe_invalid(exc)}", file=sys.stderr)
        return Exit.USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
