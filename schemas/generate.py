"""Write one JSON Schema per event to ``schemas/json/``, or check that they are up to date.

Usage: ``python -m schemas.generate [--check] [--dir DIR]``. The output is deterministic (sorted
keys, two-space indent, trailing newline), so ``--check`` can run in CI and exits 1 listing the
files that are missing, different or no longer generated.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from schemas.events import EVENT_MODELS, EVENT_NAMES

JSON_DIR: Final = Path(__file__).parent / "json"
_DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
ID_BASE: Final = "https://akece.ai/schemas/webhooks/"
"""Base of every schema's ``$id``: an identifier (``<base><event>.json``), stable across releases."""


def schema_id(event: str) -> str:
    return f"{ID_BASE}{event}.json"


def render(event: str) -> str:
    """The JSON Schema of one event, as text."""
    schema = {"$schema": _DRAFT, "$id": schema_id(event), **EVENT_MODELS[event].model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    """Every schema file: file name -> text."""
    return {f"{event}.json": render(event) for event in EVENT_NAMES}


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Files in ``directory`` that are missing, different from :func:`render_all`, or unexpected."""
    expected = render_all()
    stale = [name for name, text in expected.items() if _read(directory / name) != text]
    extra = [path.name for path in directory.glob("*.json") if path.name not in expected]
    return sorted(stale + extra)


def write_all(directory: Path = JSON_DIR) -> list[str]:
    """Bring ``directory`` up to date; return the names written or removed."""
    changed = stale_files(directory)
    directory.mkdir(parents=True, exist_ok=True)
    expected = render_all()
    for name in changed:
        path = directory / name
        if name in expected:
            path.write_text(expected[name], encoding="utf-8")
        else:
            path.unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for name in stale:
            print(f"stale: {args.dir / name}", file=sys.stderr)
        return 1 if stale else 0
    for name in write_all(args.dir):
        print(f"updated: {args.dir / name}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is stale")
    parser.add_argument("--dir", type=Path, default=JSON_DIR, help="output directory")
    return parser


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


if __name__ == "__main__":
    raise SystemExit(main())
