"""``akece-webhooks``: the one command-line entry point. Each stage registers its own subcommands.

Conventions (docs/cli.md): the global options of ``services.shared.cli`` on every command, before or
after it; an example in every command's help; ``--json`` wherever a table is printed
(``services.shared.output``); the exit codes of ``services.shared.exits``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from services import __version__
from services import demo as demo_cli
from services import run_commands as run_cli
from services.admin import cli as admin_cli
from services.devtools import cli as devtools_cli
from services.ops import cli as ops_cli
from services.publisher import cli as publisher_cli
from services.shared import alerts as alerts_cli
from services.shared import cli as shared_cli
from services.shared.errors import AkeceError, KafkaSettingsRefusedError, KafkaUnavailableError
from services.shared.exits import Exit
from services.shared.settings import describe_invalid

Register = Callable[[argparse._SubParsersAction], None]  # type: ignore[type-arg]
REGISTRARS: tuple[Register, ...] = (
    devtools_cli.register,
    shared_cli.register,
    publisher_cli.register,
    run_cli.register_api,
    admin_cli.register,
    run_cli.register_router,
    run_cli.register_deliver,
    ops_cli.register,
    run_cli.register,
    demo_cli.register,
    alerts_cli.register,
)


EPILOG = """examples:
  akece-webhooks status
  akece-webhooks --bootstrap-server kafka:9092 --topic-prefix staging dlq list --since 2h
  akece-webhooks --env-file prod.env webhooks list --json

exit codes: 0 ok, 1 the operation failed, 2 usage or configuration, 3 refused, 4 not found.
NO_COLOR=1 turns colours off; off a terminal the output is plain text."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="akece-webhooks", description="Akece's webhook delivery pipeline on Kafka.",
                                  epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=f"akece-webhooks {__version__}")
    shared_cli.add_global_options(top, top=True)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    for command in subcommands(top):
        command.formatter_class = argparse.RawDescriptionHelpFormatter  # the examples keep their lines
        shared_cli.add_global_options(command, top=False)
    return top


def subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser under ``parser``, at every depth (``dlq``, ``dlq list``, ...)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # an alias maps to the same parser
                found += [child, *subcommands(child)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
