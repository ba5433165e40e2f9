"""Small pieces of wording every message shares (pure; no I/O)."""

from __future__ import annotations


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``n`` with its noun in the right number: ``1 member``, ``3 members``, ``0 backups``."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"
