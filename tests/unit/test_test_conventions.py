"""Conventions of the test suite that keep it fast and honest (docs/design.md, Tests).

Property tests run under the one hypothesis profile tests/conftest.py loads (``ETCDOPS_HYPOTHESIS``:
``fast`` by default, ``thorough`` for hundreds of examples), so no test sets an example count of
its own: one that did would cost every run what only the thorough run should pay.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
EXAMPLE_COUNT = re.compile(r"\bmax_examples\s*=")


def test_no_test_sets_its_own_example_count() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != TESTS / "conftest.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if EXAMPLE_COUNT.search(line) and path != Path(__file__).resolve()
    ]
    assert offenders == [], "example counts belong to the profiles in tests/conftest.py: " + ", ".join(offenders)
