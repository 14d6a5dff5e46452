"""``akece-webhooks alerts render``: the alert rules with your runbook's address in every ``runbook_url``.

``deploy/prometheus/alerts.yml`` is the one source of the rules. Each alert links its section of the
runbook as ``<DEFAULT_RUNBOOK_BASE_URL>#<alert name, lower case>``; rendering swaps that base for
``AKECE_RUNBOOK_BASE_URL`` and changes nothing else. The Helm chart does the same substitution with its
``runbookBaseUrl`` value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.shared.cli import load_settings
from services.shared.errors import ValidationError
from services.shared.settings import DEFAULT_RUNBOOK_BASE_URL

RUNBOOK_KEY = "runbook_url: "


def render_rules(text: str, base_url: str) -> str:
    """The rules ``text`` with every runbook link under ``base_url``; refuses rules with another base."""
    links = [line.strip() for line in text.splitlines() if line.strip().startswith(RUNBOOK_KEY)]
    template = f"{RUNBOOK_KEY}{DEFAULT_RUNBOOK_BASE_URL}#"
    foreign = [link for link in links if not link.startswith(template)]
    if foreign:
        raise ValidationError(f"alert rules: {foreign[0]!r} does not start with {DEFAULT_RUNBOOK_BASE_URL}#")
    return text.replace(template, f"{RUNBOOK_KEY}{base_url}#")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    alerts = sub.add_parser("alerts", help="the Prometheus alert rules",
                            epilog="example:\n  akece-webhooks alerts render -o alerts.yml")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    render = alerts_sub.add_parser(
        "render", help="print the rules with runbook links under AKECE_RUNBOOK_BASE_URL",
        epilog="example:\n  AKECE_RUNBOOK_BASE_URL=https://wiki.example.com/akece/runbook "
               "akece-webhooks alerts render -o alerts.yml")
    render.add_argument("rules", nargs="?", default="deploy/prometheus/alerts.yml", help="the rules file")
    render.add_argument("-o", "--output", help="write here instead of stdout")
    render.set_defaults(func=render_command)


def render_command(args: argparse.Namespace) -> int:
    try:
        text = Path(args.rules).read_text()
    except OSError as exc:
        raise ValidationError(f"cannot read alert rules {args.rules}: {exc.strerror}") from exc
    rendered = render_rules(text, load_settings(args).runbook_base_url)
    if args.output:
        Path(args.output).write_text(rendered)
    else:
        sys.stdout.write(rendered)
    return 0
