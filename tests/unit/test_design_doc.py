"""docs/design.md defines the safety invariants, numbered without gaps, and every citation resolves.

Code, state machines, the template, tests, benchmarks and docs cite invariants as ``invariant 3``,
``Invariant 6``, ``invariants 1-4`` or ``invariants 2 and 8``; each number must be one that
docs/design.md defines under "Safety invariants".
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"

SCANNED_SUFFIXES = {".py", ".json", ".yaml", ".yml", ".md", ".toml", ".sh", ".txt", ".cfg"}
SKIPPED_DIRS = {"node_modules", "__pycache__", "pb", "data"}
CITATION = re.compile(
    r"\binvariants?\s+(\d+(?:\s*(?:-|\u2013|,|\band\b|\bor\b|\bto\b)\s*\d+)*)",
    re.IGNORECASE,
)


def invariants_defined(text: str) -> list[int]:
    """The numbers of the ordered list in the "Safety invariants" section, in order."""
    section = re.search(r"^## Safety invariants\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, "docs/design.md has no '## Safety invariants' section"
    return [int(n) for n in re.findall(r"^(\d+)\. \*\*", section.group(1), re.MULTILINE)]


def cited_numbers(text: str) -> Iterator[tuple[int, str]]:
    """Every invariant number a text cites, with the citation as written."""
    for match in CITATION.finditer(text):
        spec = match.group(1)
        for part in re.split(r"\s*(?:,|\band\b|\bor\b)\s*", spec):
            bounds = [int(n) for n in re.split(r"\s*(?:-|\u2013|\bto\b)\s*", part) if n]
            if len(bounds) == 2:
                yield from ((n, match.group(0)) for n in range(bounds[0], bounds[1] + 1))
            else:
                yield from ((n, match.group(0)) for n in bounds)


def scanned_files() -> Iterator[Path]:
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if not (d.startswith(".") or d in SKIPPED_DIRS or d.endswith(".egg-info"))]
        for name in files:
            path = Path(directory, name)
            if path.suffix in SCANNED_SUFFIXES or Path(directory).name == "bin":
                yield path


def test_the_invariants_are_numbered_from_one_without_gaps() -> None:
    numbers = invariants_defined(DESIGN.read_text())

    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert len(numbers) >= 15


def test_every_cited_invariant_is_defined_in_the_design() -> None:
    defined = set(invariants_defined(DESIGN.read_text()))
    unresolved = []
    citations = 0
    for path in scanned_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, citation in cited_numbers(text):
            citations += 1
            if number not in defined:
                unresolved.append(f"{path.relative_to(ROOT)}: {citation!r} (no invariant {number})")

    assert citations > 20, "the scan found almost no citations: is it looking in the right places?"
    assert not unresolved, "cited but not defined in docs/design.md:\n" + "\n".join(unresolved)


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("keeps invariant 1, and the numbers", [1]),
        ("Invariant 6: learners", [6]),
        ("the safety invariants 1-4", [1, 2, 3, 4]),
        ("invariants 2 and 8", [2, 8]),
        ("invariants 10\u201312", [10, 11, 12]),
        ("invariants 3, 5 or 7", [3, 5, 7]),
        ("an invariant of the loop", []),
    ],
)
def test_citations_are_read_as_written(text: str, numbers: list[int]) -> None:
    assert [n for n, _ in cited_numbers(text)] == numbers
