"""What commands print on stdout: tables and text for people (through ``rich``), JSON for scripts (``--json``).

On a terminal: a rule under each table's header, colour, long cells wrapped to the terminal's width;
``NO_COLOR`` (https://no-color.org) turns the colour off. Anywhere else (a pipe, a file): plain text,
no escape codes, no wrapping and no trailing blanks, one row per line, columns two spaces apart, so
``grep`` and ``awk`` read it. Progress and errors go to stderr, never here.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import orjson
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

MAX_CELL = 60
PLAIN_WIDTH = 1 << 20  # off a terminal nothing wraps


def console(stream: TextIO | None = None) -> Console:
    """A console on ``stream`` (stdout): rich detects the terminal and honours NO_COLOR and FORCE_COLOR."""
    file = stream or sys.stdout
    terminal = Console(file=file).is_terminal
    return Console(file=file, highlight=False, width=None if terminal else PLAIN_WIDTH,
                   color_system="auto" if terminal else None)


def add_json_option(parser: argparse.ArgumentParser, what: str = "a table") -> None:
    parser.add_argument("--json", action="store_true", help=f"print JSON (for scripts) instead of {what}")


def cell(value: object, max_len: int | None = MAX_CELL) -> Text:
    """One table cell: ``-`` for nothing, on one line, cut to ``max_len`` characters with an ellipsis."""
    text = value.copy() if isinstance(value, Text) else Text("-" if value is None or value == "" else str(value))
    text.plain = text.plain.replace("\n", " ")
    if max_len is not None and len(text) > max_len:
        text.truncate(max_len - 1)
        text.append("…")
    return text


def table(columns: Sequence[str], rows: Sequence[Sequence[object]], *, max_cell: int | None = MAX_CELL,
          title: str | None = None) -> Table:
    """Upper-case headers, one row per record. A cell may be a ``rich.text.Text`` to give it a colour."""
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", title=title,
                 title_justify="left", title_style="bold")
    for index, name in enumerate(columns):
        grid.add_column(name.upper(), no_wrap=index < len(columns) - 1, overflow="fold")
    for row in rows:
        grid.add_row(*(cell(value, max_cell) for value in row))
    return grid


def pairs(items: Sequence[tuple[str, object]]) -> Table:
    """A key / value block (one record shown in full): keys in bold on a terminal, values whole."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in items:
        grid.add_row(key, cell(value, None))
    return grid


def heading(text: str) -> Text:
    return Text(text, style="bold")


def styled(value: object, style: str) -> Text:
    return Text("-" if value is None or value == "" else str(value), style=style)


def emit(*parts: RenderableType, stream: TextIO | None = None) -> None:
    """Print ``parts`` one under the other (a ``str`` as it is, never as rich markup)."""
    out = console(stream)
    shown = Group(*(Text(p) if isinstance(p, str) else p for p in parts))
    if out.is_terminal:
        out.print(shown)
        return
    out.file.write(plain_text(shown, out) + "\n")
    out.file.flush()


def plain_text(part: RenderableType, out: Console | None = None) -> str:
    """``part`` as it prints off a terminal: no escape codes, no header rules, no trailing blanks."""
    out = out or Console(file=io.StringIO(), highlight=False, width=PLAIN_WIDTH, color_system=None)
    with out.capture() as captured:
        out.print(_plain(part))
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def _plain(part: RenderableType) -> RenderableType:
    """Tables without their header rule off a terminal: the header line, then one line per row."""
    if isinstance(part, Table):
        part.box = None
    if isinstance(part, Group):
        for inner in part.renderables:
            _plain(inner)
    return part


def emit_json(data: Any, stream: TextIO | None = None) -> None:
    """JSON for scripts: indented, non-string keys as strings, one document per command."""
    file = stream or sys.stdout
    file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
    file.flush()
