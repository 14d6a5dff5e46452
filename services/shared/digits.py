"""Whole numbers from text that callers and producers send: ASCII digits only.

``str.isdigit`` also takes superscripts, which ``int`` refuses (a crash), and other scripts' digits,
which ``int`` reads as another number (Arabic-Indic one is 1). Every id, page and limit read from
outside goes through ``ascii_int``.
"""

from __future__ import annotations


def ascii_int(text: str | bytes | None, *, digits: int = 18) -> int | None:
    """``text`` as an int when it is 1 to ``digits`` ASCII digits; otherwise ``None``."""
    if not text or len(text) > digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)
