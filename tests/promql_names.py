"""Which metrics the alert rules and dashboards query, and which metrics a ``/metrics`` page exposes.

A small PromQL tokenizer, not a parser: strings, label matchers (``{...}``), ranges (``[...]``),
grouping clauses (``by (...)``, ``on (...)``...) and Grafana variables are removed, then every
identifier not followed by ``(`` (a function or aggregation) and not a keyword is a metric name.
Names are compared exactly as exposed (``..._total``, ``..._bucket``): a rule querying
``akece_webhooks_deliveries`` instead of ``akece_webhooks_deliveries_total`` finds nothing in
Prometheus, and the comparison catches it. ``family()`` maps an exposed name to its family.

    missing = referenced_metrics(paths) - exported_metrics(metrics_text) - {"up"}
    # against a live process, where labelled metrics may not have a sample yet: compare families
    missing = {family(n) for n in referenced_metrics(paths)} - exported_families(metrics_text) - {"up"}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

KEYWORDS = frozenset({
    "and", "or", "unless", "atan2", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "start", "end",
})
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_info")

_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """Metric names one PromQL expression reads (recording rule names included)."""
    text = _GRAFANA_VARIABLE.sub(" 0 ", expr)
    text = _STRING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        rest = text[match.end():].lstrip()
        if name.lower() in KEYWORDS or rest.startswith("("):
            continue
        names.add(name)
    return names


def family(name: str) -> str:
    """``akece_webhooks_deliveries_total`` -> ``akece_webhooks_deliveries``; other names unchanged."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _rule_expressions(document: dict[str, Any], where: str) -> Iterator[tuple[str, str]]:
    for group in document.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record")
            yield f"{where}: {name}", str(rule["expr"])


def _panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # collapsed rows keep their panels inside


def _dashboard_expressions(dashboard: dict[str, Any], where: str) -> Iterator[tuple[str, str]]:
    for panel in _panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield f"{where}: panel {panel.get('title')!r}", str(target["expr"])
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if query:
            inner = _LABEL_VALUES.match(str(query))
            yield f"{where}: variable {variable.get('name')!r}", inner.group(1) if inner else str(query)


def expressions(paths: Iterable[Path]) -> Iterator[tuple[str, str]]:
    """``(where, expr)`` for every rule of a Prometheus rule file and every query of a Grafana dashboard."""
    for path in paths:
        if path.suffix == ".json":
            yield from _dashboard_expressions(json.loads(path.read_text()), path.name)
        else:
            yield from _rule_expressions(yaml.safe_load(path.read_text()) or {}, path.name)


def recorded_names(paths: Iterable[Path]) -> set[str]:
    """Names the recording rules of ``paths`` define."""
    names = set()
    for path in paths:
        if path.suffix != ".json":
            for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []:
                names |= {rule["record"] for rule in group.get("rules") or [] if "record" in rule}
    return names


def referenced_metrics(paths: Iterable[Path]) -> set[str]:
    """Exposed metric names the rules and dashboards in ``paths`` query, minus the names their own
    recording rules define (a recording name used but defined nowhere stays, so it is reported)."""
    paths = list(paths)
    names: set[str] = set()
    for _, expr in expressions(paths):
        names |= metric_names(expr)
    return names - recorded_names(paths)


def exported_metrics(text: str) -> set[str]:
    """Sample names of a Prometheus text exposition, as exposed (``_total``, ``_bucket``...)."""
    return {sample.name for metric in text_string_to_metric_families(text) for sample in metric.samples}


def exported_families(text: str) -> set[str]:
    """Metric families of a Prometheus text exposition (``family()`` of each), samples or not: a
    labelled metric no code path has touched yet still has its HELP and TYPE lines."""
    return {family(metric.name) for metric in text_string_to_metric_families(text)}
