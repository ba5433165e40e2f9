"""The IAM-coverage check of bin/test: run it over the e2e tier's records when that tier ran in full.

    ETCDOPS_IAM_RECORDS=build/iam-records pytest ...      # each emulated AWS writes its decisions there
    python tools/iam_coverage.py build/iam-records [--reasons tests/iam_unused.yaml]

Each pytest process that collected tests/e2e writes ``e2e-run-<worker>.json`` beside the records
(tests/e2e/conftest.py): which files of tests/e2e it collected, whether anything was deselected or
named below a file (``file.py::test``), the e2e tests selected and those that finished. The check
(:func:`etcdops_local.aws.iam_coverage.check`, both directions) runs only when the whole tier ran: every test file
of tests/e2e collected, nothing deselected, no test named alone, every selected test finished. Any
other run (``bin/test tests/unit``, ``-k``, ``--lf``, a crashed worker) cannot prove a granted action
unused, so the check prints why it did not run and passes; a full run with a finding fails (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = "e2e-run-*.json"


def e2e_files(root: Path = ROOT) -> list[str]:
    """Every test file of the e2e tier, relative to the repository."""
    return sorted(str(p.relative_to(root)) for p in (root / "tests" / "e2e").glob("test_*.py"))


def why_incomplete(runs: Iterable[Mapping[str, Any]], expected_files: Iterable[str]) -> str | None:
    """None when the runs together ran the whole e2e tier; else why not, in one line."""
    runs = list(runs)
    if not runs:
        return "the e2e tier did not run"
    expected = set(expected_files)
    selected: set[str] = set()
    finished: set[str] = set()
    for run in runs:
        missing = sorted(expected - set(run.get("files") or []))
        if missing:
            return f"not every e2e file was collected ({len(missing)} left out, e.g. {missing[0]})"
        if run.get("deselected"):
            return f"{run['deselected']} e2e tests were deselected"
        if run.get("named_tests"):
            return "tests were named one by one (file.py::test)"
        selected.update(run.get("selected") or [])
        finished.update(run.get("finished") or [])
    if not selected:
        return "no e2e test was selected"
    left = sorted(selected - finished)
    if left:
        return f"{len(left)} of {len(selected)} e2e tests did not finish (e.g. {left[0]})"
    return None


def read_runs(directory: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(directory.glob(RUN_FILES)):
        try:
            runs.append(json.loads(path.read_text()))
        except ValueError as exc:
            raise SystemExit(f"{path}: not a run file: {exc}") from None
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path, help="the directory ETCDOPS_IAM_RECORDS pointed at")
    parser.add_argument("--reasons", type=Path, default=ROOT / "tests" / "iam_unused.yaml")
    parser.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    args = parser.parse_args(argv)

    reason = why_incomplete(read_runs(args.records), e2e_files())
    if reason is not None:
        print(f"IAM coverage: not checked: {reason} (it needs the whole e2e tier)")
        return 0
    from etcdops.domain.errors import EtcdopsError
    from etcdops_local.aws.iam_coverage import check

    try:
        result = check(args.records, args.template, args.reasons)
    except EtcdopsError as exc:
        print(f"IAM coverage: {exc}", file=sys.stderr)
        return 2
    if result is None:
        print(f"IAM coverage: the whole e2e tier ran but no records are in {args.records}")
        return 1
    print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
