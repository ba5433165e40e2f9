"""The IAM-coverage check of bin/test runs only over a whole e2e tier (tools/iam_coverage.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from iam_coverage import e2e_files, main, why_incomplete

FILES = ["tests/e2e/test_a.py", "tests/e2e/test_b.py"]


def run(**changes: Any) -> dict[str, Any]:
    selected = ["tests/e2e/test_a.py::t1", "tests/e2e/test_b.py::t2"]
    return {"files": FILES, "deselected": 0, "named_tests": False, "selected": selected, "finished": selected} | changes


def test_a_whole_tier_in_one_process_or_split_over_workers_is_checked() -> None:
    assert why_incomplete([run()], FILES) is None
    one, two = run(finished=["tests/e2e/test_a.py::t1"]), run(finished=["tests/e2e/test_b.py::t2"])
    assert why_incomplete([one, two], FILES) is None


@pytest.mark.parametrize(
    ("runs", "reason"),
    [
        ([], "the e2e tier did not run"),
        ([run(files=FILES[:1])], "not every e2e file was collected (1 left out, e.g. tests/e2e/test_b.py)"),
        ([run(deselected=3)], "3 e2e tests were deselected"),
        ([run(named_tests=True)], "tests were named one by one (file.py::test)"),
        ([run(finished=["tests/e2e/test_a.py::t1"])], "1 of 2 e2e tests did not finish (e.g. tests/e2e/test_b.py::t2)"),
    ],
)
def test_a_partial_run_is_not_checked_and_says_why(runs: list[dict[str, Any]], reason: str) -> None:
    assert why_incomplete(runs, FILES) == reason


def test_after_the_unit_tier_alone_the_check_says_it_did_not_run_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "iam-1-a.jsonl").write_text("")  # records without a run file: a partial run left them

    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == (
        "IAM coverage: not checked: the e2e tier did not run (it needs the whole e2e tier)\n"
    )


def test_a_missing_e2e_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = e2e_files()
    assert "tests/e2e/test_local_iam.py" in files
    selected = [f"{f}::t" for f in files]
    partial = {"files": files[1:], "deselected": 0, "named_tests": False, "selected": selected, "finished": selected}
    (tmp_path / "e2e-run-gw0.json").write_text(json.dumps(partial))

    assert main([str(tmp_path)]) == 0
    assert f"not every e2e file was collected (1 left out, e.g. {files[0]})" in capsys.readouterr().out
