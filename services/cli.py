"""``akece-webhooks``: the one command-line entry point. Each stage registers its own subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from services import __version__
from services import demo as demo_cli
from services import run as run_cli
from services.admin import cli as admin_cli
from services.devtools import cli as devtools_cli
from services.ops import cli as ops_cli
from services.publisher import cli as publisher_cli
from services.shared import alerts as alerts_cli
from services.shared import cli as shared_cli
from services.shared.errors import AkeceError
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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="akece-webhooks", description="Akece's webhook delivery pipeline on Kafka.")
    top.add_argument("--version", action="version", version=f"akece-webhooks {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
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
