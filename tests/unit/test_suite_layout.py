"""The suite's own layout: what would stop pytest from collecting a tier."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name() -> None:
    # the tiers are directories without __init__.py: pytest imports each test module by its bare name and
    # refuses to collect a second module of the same name ("import file mismatch"), failing the whole run
    places: defaultdict[str, list[str]] = defaultdict(list)
    for module in TESTS.rglob("test_*.py"):
        places[module.name].append(str(module.relative_to(TESTS)))
    assert {name: where for name, where in places.items() if len(where) > 1} == {}
