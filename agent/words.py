"""Counts in words for what people read (commands' output, log lines): ``1 row``, ``2 rows``."""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 ticket``, ``2 tickets``, ``1,200 entries`` (``many`` for irregular words)."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"
