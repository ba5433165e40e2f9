"""``runbook start --wait`` / ``runbook show --follow``: an execution followed while it runs.

The fake history source is a recorded execution (tests/data/runbook_histories.json, as in
test_runbook_story.py) told a few events per poll, as Step Functions grows a real one.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_runbook_story import HISTORIES, RecordedSfn, approval

from etcdops.domain.errors import UsageError
from etcdops_local.aws.executions import Step
from etcdops_local.cli import main as cli
from etcdops_local.cli.follow import EXIT_STATUS, POLL_ENV, Progress, follow, poll_seconds
from etcdops_local.cli.options import EXIT_CODES
from etcdops_local.cli.runbook import show_data

NAME = "m-1"


class UnfoldingSfn(RecordedSfn):
    """A recorded execution that is RUNNING until ``step`` more events have been told at each read."""

    def __init__(self, which: str, step: int = 3) -> None:
        super().__init__(which)
        self.step, self.told = step, 0

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        self.told = min(self.told + self.step, len(self.recorded["events"]))
        described = dict(self.recorded["describe_execution"])
        if self.told < len(self.recorded["events"]):
            described.update(status="RUNNING", stopDate=None)
        return described

    def get_execution_history(self, executionArn: str, maxResults: int, nextToken: str | None = None) -> dict[str, Any]:
        return {"events": self.recorded["events"][: self.told]}


def followed(sfn: RecordedSfn, as_json: bool = False, store: Any = None, sleep: Any = None) -> tuple[int, list[str]]:
    lines: list[str] = []
    arn = f"arn:aws:states:eu-west-1:1:execution:m:{NAME}"

    def look() -> tuple[dict[str, Any], Any]:
        return show_data(sfn, arn, store, lambda n: f"etcdops approve {n}")

    code = follow(look, f"etcdops runbook show {NAME} --follow", as_json=as_json, width=None, out=lines.append,
                  poll=0.5, sleep=sleep or (lambda seconds: None))  # fmt: skip
    return code, lines


def test_a_failed_run_is_told_step_by_step_as_it_grows_then_its_outcome_and_exit_status_3() -> None:
    sleeps: list[float] = []
    whole = RecordedSfn("replace-failed")
    data, steps = show_data(whole, "arn", None, lambda n: n)

    code, lines = followed(UnfoldingSfn("replace-failed"), sleep=sleeps.append)

    assert code == 3 == EXIT_STATUS["FAILED"]
    assert sleeps and set(sleeps) == {0.5}  # polled at the interval asked, many times
    entered = [line.split("> ", 1)[1] for line in lines if "  > " in line]
    assert entered == [f"{s.name} ({s.type})" for s in steps]  # each step once, in order
    left = [line for line in lines if "  < " in line]
    assert len(left) == sum(1 for s in steps if s.ended is not None)
    assert any(
        "< Make sure a fresh verified backup exists caught in" in line
        and line.endswith("IsADirectoryError: [Errno 21] Is a directory: 13")
        for line in left
    ), left
    assert lines[-2:] == [f"{data['name']}: FAILED", f"outcome: {data['outcome']}"]  # runbook show's line
    # what was told a few events at a time is what the whole history tells at once
    assert Progress().news(data, steps) == _events(UnfoldingSfn("replace-failed"))


def _events(sfn: RecordedSfn) -> list[dict[str, Any]]:
    _, lines = followed(sfn, as_json=True)
    return [{k: v for k, v in json.loads(line).items() if k != "execution"} for line in lines[:-1]]


def test_json_lines_end_with_the_status_outcome_and_exit_status() -> None:
    code, lines = followed(UnfoldingSfn("replace-recovered", step=5), as_json=True)

    objects = [json.loads(line) for line in lines]  # every line is one JSON object
    assert code == 0
    assert objects[0]["event"] == "entered" and objects[0]["step"] == "Apply defaults"
    assert {o["event"] for o in objects[:-1]} <= {"entered", "succeeded", "caught", "failed", "retry"}
    assert objects[-1] == {
        "execution": objects[-1]["execution"], "event": "ended", "status": "SUCCEEDED", "exit_status": 0,
        "outcome": "recovered: m1 answered again before anything was changed; nothing was replaced",
        "stopped": objects[-1]["stopped"],
    }  # fmt: skip


def test_a_wait_for_approval_is_said_once_with_the_approve_command_and_ctrl_c_leaves_the_run_alone() -> None:
    name = HISTORIES["replace-waiting"]["describe_execution"]["name"]
    polls = 0

    def sleep(seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls % 12 == 0:  # long after every event was told
            raise KeyboardInterrupt

    sfn = UnfoldingSfn("replace-waiting")
    code, lines = followed(sfn, store=approval(name), sleep=sleep)

    assert code == 130
    waits = [line for line in lines if "  ? " in line]
    assert len(waits) == 1
    assert waits[0].endswith(
        "waiting for approval: replace member m1 of local (unhealthy for 3 rounds) — approve with "
        f"`etcdops approve {name}`"
    )
    resume = "`etcdops runbook show m-1 --follow`"
    assert lines[-1] == f"stopped following {name}; it goes on (follow it again with {resume})"
    assert not any(hasattr(sfn, call) for call in ("stop_execution", "send_task_failure", "send_task_success"))

    code, lines = followed(UnfoldingSfn("replace-waiting"), as_json=True, sleep=sleep)
    assert code == 130
    assert json.loads(lines[-1]) == {"execution": name, "event": "stopped-following", "status": "RUNNING",
                                     "resume": "etcdops runbook show m-1 --follow"}  # fmt: skip


def test_a_step_tried_again_is_one_line_per_new_try() -> None:
    at = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
    step = Step("Stop the member", "Task", "running", at, attempts=1)
    data = {"status": "RUNNING", "outcome": "running: at step 'Stop the member'"}
    progress = Progress()

    told = [progress.news(data, [step])]
    step.attempts, step.error = 3, "States.Timeout"
    told.append(progress.news(data, [step]))
    told.append(progress.news(data, [step]))
    step.status, step.ended = "succeeded", at + timedelta(seconds=4)
    told.append(progress.news(data, [step]))

    assert [[e["event"] for e in events] for events in told] == [["entered"], ["retry"], [], ["succeeded"]]
    assert told[1][0]["attempt"] == 3 and told[1][0]["error"] == "States.Timeout"
    assert told[3][0]["took"] == 4.0


def test_every_ending_has_its_own_documented_exit_status() -> None:
    assert EXIT_STATUS["SUCCEEDED"] == 0
    failing = [EXIT_STATUS[s] for s in ("FAILED", "TIMED_OUT", "ABORTED")]
    assert len(set(failing)) == 3 and not set(failing) & {0, 1, 2, 70, 130, 141}
    assert set(failing) <= set(EXIT_CODES)


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_poll_interval_is_refused(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLL_ENV, raw)
    with pytest.raises(UsageError, match=POLL_ENV):
        poll_seconds()


def test_a_bad_poll_interval_starts_nothing_and_every_start_can_wait(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(POLL_ENV, "0")
    code = cli.main(["--state-dir", str(tmp_path), "runbook", "start", "maintain", "--wait"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.startswith(f"etcdops: {POLL_ENV}: '0'") and len(err.splitlines()) == 1
    monkeypatch.delenv(POLL_ENV)
    assert poll_seconds() == 1.0

    parser = cli.build_parser()
    assert parser.parse_args(["runbook", "show", "x", "--follow"]).follow
    kinds = _subcommands(_subcommands(_subcommands(parser)["runbook"])["start"])
    assert {"replace", "restore", "upgrade", "maintain", "drill", "scale", "rotate-certs"} <= set(kinds)
    for name, kind in kinds.items():
        assert any(a.option_strings == ["--wait"] for a in kind._actions), f"runbook start {name} has no --wait"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
