"""The README's configuration table, generated from the settings model (``make config-table``,
which runs ``python -m services.shared.settings README.md``)."""

from __future__ import annotations

from pydantic import BaseModel

from services.shared.settings import Settings


def _rows(model: type[BaseModel], env: str, path: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, f"{env}{name.upper()}_", f"{path}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None else ",".join(map(str, default)) if isinstance(default, list) else default
        rows.append(f"| `{env}{name.upper()}` | `{shown}` | {field.description} |")
    return rows


def markdown_table() -> str:
    """The README's configuration table, generated from the model."""
    head = ["| variable | default | meaning |", "|---|---|---|"]
    return "\n".join(head + _rows(Settings, "AKECE_", "")) + "\n"


START, END = "<!-- config:start -->", "<!-- config:end -->"


def render_readme(text: str) -> str:
    """``text`` (the README) with its configuration table regenerated between the markers."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{markdown_table()}{END}{tail}"


__all__ = ["END", "START", "markdown_table", "render_readme"]
