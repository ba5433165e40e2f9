"""Fail on checkov findings that were not reviewed, and on reviewed skips that no longer match.

    checkov -f template.yaml -f template.cfn.json --framework cloudformation -o json > report.json
    python tools/checkov_gate.py report.json [--skips tools/checkov_skips.yaml]

Each entry of the skip list names a check, the logical ids it may fail for, and why that is kept.
A finding is a (check, logical id) pair of any of the scanned files. Exit 1 with one line per new
finding or stale entry; 0 otherwise, with a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def load_skips(path: Path) -> dict[str, set[str]]:
    """check id -> logical ids; every entry must have a check, resources and a reason."""
    entries = yaml.safe_load(path.read_text()) or []
    skips: dict[str, set[str]] = {}
    for number, entry in enumerate(entries, 1):
        check, resources, reason = entry.get("check"), entry.get("resources"), entry.get("reason")
        if not check or not resources or not isinstance(reason, str) or len(reason.split()) < 5:
            raise SystemExit(f"{path}: entry {number}: needs check, resources and a reason (a sentence)")
        skips.setdefault(check, set()).update(resources)
    return skips


def findings(report: Any) -> set[tuple[str, str, str]]:
    """(check id, logical id, file) of every failed check in a checkov JSON report (one or more frameworks)."""
    found: set[tuple[str, str, str]] = set()
    for framework in report if isinstance(report, list) else [report]:
        for failed in framework.get("results", {}).get("failed_checks", []):
            logical_id = str(failed["resource"]).split(".", 1)[-1]
            found.add((str(failed["check_id"]), logical_id, str(failed.get("file_path", ""))))
    return found


def gate(report: Any, skips: dict[str, set[str]]) -> list[str]:
    problems = []
    failed = findings(report)
    matched: set[tuple[str, str]] = set()
    for check, logical_id, file in sorted(failed):
        if logical_id in skips.get(check, set()):
            matched.add((check, logical_id))
        else:
            problems.append(f"checkov: {check} fails for {logical_id} in {file}: fix it, or review and list it")
    for check, resources in sorted(skips.items()):
        for logical_id in sorted(resources - {lid for c, lid in matched if c == check}):
            problems.append(f"checkov skip list: {check} for {logical_id} matches nothing any more: remove it")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--skips", type=Path, default=HERE / "checkov_skips.yaml")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as exc:
        print(f"checkov: no report in {args.report} ({exc}); see checkov's log", file=sys.stderr)
        return 1
    problems = gate(report, load_skips(args.skips))
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        count = len(findings(report))
        print(f"checkov: no finding beyond the {count} reviewed ones ({args.skips.name})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
