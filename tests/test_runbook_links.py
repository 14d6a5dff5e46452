"""Runbook links: absolute, built from one setting (AKECE_RUNBOOK_BASE_URL), rendered by
``akece-webhooks alerts render``; the rendered rules still pass promtool's checks and unit tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError as PydanticValidationError

from services.shared.alerts import render_rules
from services.shared.errors import ValidationError
from services.shared.settings import DEFAULT_RUNBOOK_BASE_URL, Settings
from tests.test_alert_rules import ALERTS, RULE_TESTS, github_anchor, run_promtool

ROOT = Path(__file__).resolve().parent.parent
BASE = "https://wiki.example.com/sre/akece-webhooks/runbook"


def links(text: str) -> dict[str, str]:
    rules = [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"] if "alert" in rule]
    return {rule["alert"]: rule["annotations"]["runbook_url"] for rule in rules}


def test_render_puts_every_link_under_the_base_and_changes_nothing_else() -> None:
    text = ALERTS.read_text()
    rendered = render_rules(text, BASE)
    assert links(rendered) == {name: f"{BASE}#{github_anchor(name)}" for name in links(text)}
    assert rendered.replace(BASE, DEFAULT_RUNBOOK_BASE_URL) == text


def test_render_refuses_rules_linking_elsewhere() -> None:
    with pytest.raises(ValidationError, match="does not start with"):
        render_rules("      runbook_url: docs/runbook.md#x\n", BASE)


@pytest.mark.parametrize("bad", ["docs/runbook.md", "ftp://host/runbook", "https://host/runbook#section", "//host/x"])
def test_runbook_base_url_must_be_absolute(bad: str) -> None:
    with pytest.raises(PydanticValidationError, match="absolute http"):
        Settings(runbook_base_url=bad)


def test_alerts_render_command_uses_the_setting(tmp_path: Path) -> None:
    out = tmp_path / "alerts.yml"
    result = subprocess.run([sys.executable, "-m", "services", "alerts", "render", str(ALERTS), "-o", str(out)],
                            env={**os.environ, "AKECE_RUNBOOK_BASE_URL": BASE}, cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert set(links(out.read_text()).values()) == {f"{BASE}#{github_anchor(n)}" for n in links(ALERTS.read_text())}
    # The rendered rules are still valid and their unit tests pass against them.
    assert "SUCCESS" in run_promtool("check", "rules", out)
    for test in RULE_TESTS:
        rendered_test = tmp_path / test.name
        rendered_test.write_text(render_rules(test.read_text().replace(
            "rule_files:\n  - ../alerts.yml", f"rule_files:\n  - {out}"), BASE))
        assert "SUCCESS" in run_promtool("test", "rules", rendered_test)


def test_alerts_render_names_a_missing_file() -> None:
    result = subprocess.run([sys.executable, "-m", "services", "alerts", "render", "nope.yml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["akece-webhooks: cannot read alert rules nope.yml: "
                                                  "No such file or directory"]
