"""The checkov gate of bin/test: unreviewed findings fail, reviewed ones pass, stale skips fail."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from checkov_gate import HERE, gate, load_skips


def report(*failed: tuple[str, str]) -> dict[str, object]:
    return {
        "check_type": "cloudformation",
        "results": {
            "failed_checks": [{"check_id": c, "resource": r, "file_path": "/template.yaml"} for c, r in failed]
        },
    }


def test_a_reviewed_finding_passes_and_a_new_one_fails() -> None:
    skips = {"CKV_AWS_117": {"ApprovalFunction"}}

    assert gate(report(("CKV_AWS_117", "AWS::Serverless::Function.ApprovalFunction")), skips) == []
    # the same check on another function was not reviewed: it fails
    problems = gate(
        report(
            ("CKV_AWS_117", "AWS::Lambda::Function.ApprovalFunction"),
            ("CKV_AWS_117", "AWS::Lambda::Function.NewFunction"),
        ),
        skips,
    )
    assert problems == [
        "checkov: CKV_AWS_117 fails for NewFunction in /template.yaml: fix it, or review and list it"
    ]


def test_a_skip_that_matches_nothing_any_more_fails() -> None:
    problems = gate(report(), {"CKV_AWS_18": {"BackupBucket"}})
    assert problems == ["checkov skip list: CKV_AWS_18 for BackupBucket matches nothing any more: remove it"]


def test_every_reviewed_skip_has_its_reason(tmp_path: Path) -> None:
    skips = load_skips(HERE / "checkov_skips.yaml")
    assert skips and all(resources for resources in skips.values())

    lazy = tmp_path / "skips.yaml"
    lazy.write_text("- check: CKV_AWS_18\n  resources: [BackupBucket]\n  reason: fine\n")
    with pytest.raises(SystemExit, match="entry 1: needs check, resources and a reason"):
        load_skips(lazy)
