"""Step Functions executions as the local stack, the tests and the CLI use them: a unique name, start,
wait for the end, and the history told as steps (what ``etcdops runbook show`` prints)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from etcdops_local.aws.errors import LocalAwsError


def execution_name(prefix: str = "run") -> str:
    """A unique execution name (always name executions: the local emulation needs it)."""
    return f"{prefix}-{datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"[:80]


def start_execution(sfn: Any, state_machine_arn: str, document: Any, name: str | None = None) -> str:
    response = sfn.start_execution(
        stateMachineArn=state_machine_arn, name=name or execution_name(), input=json.dumps(document)
    )
    return str(response["executionArn"])


def wait_for_execution(sfn: Any, execution_arn: str, timeout: float = 60.0, poll: float = 0.1) -> dict[str, Any]:
    """Poll until the execution leaves RUNNING; its description (``status``, ``output``, ``error``...)."""
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() > deadline:
            raise LocalAwsError(f"execution {execution_arn} still RUNNING after {timeout:.0f} s")
        time.sleep(poll)


@dataclass
class Step:
    """One state of an execution as an operator reads it."""

    name: str
    type: str
    status: str  # running | succeeded | failed | caught
    started: datetime
    ended: datetime | None = None
    attempts: int = 0
    error: str | None = None
    cause: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started"] = self.started.isoformat()
        data["ended"] = self.ended.isoformat() if self.ended else None
        return data


_SCHEDULED = {"TaskScheduled", "LambdaFunctionScheduled", "ActivityScheduled"}
_FAILED_DETAILS = (
    "taskFailedEventDetails",
    "lambdaFunctionFailedEventDetails",
    "taskTimedOutEventDetails",
    "lambdaFunctionTimedOutEventDetails",
    "activityFailedEventDetails",
    "taskSubmitFailedEventDetails",
    "lambdaFunctionScheduleFailedEventDetails",
    "lambdaFunctionStartFailedEventDetails",
)
_EXECUTION_END = {"ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"}


def execution_history(sfn: Any, execution_arn: str) -> list[Step]:
    """GetExecutionHistory as a list of steps: state name, status, start, end, attempts, last error."""
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    steps: list[Step] = []
    open_step: Step | None = None
    for event in events:
        kind: str = event["type"]
        stamp: datetime = event["timestamp"]
        if kind.endswith("StateEntered"):
            if open_step is not None and open_step.status == "failed":  # a Catch moved on without an exit event
                open_step.status, open_step.ended = "caught", stamp
            details = event.get("stateEnteredEventDetails") or {}
            open_step = Step(details.get("name", "?"), kind[: -len("StateEntered")], "running", stamp)
            steps.append(open_step)
        elif open_step is None:
            continue
        elif kind in _SCHEDULED:
            open_step.attempts += 1
            open_step.status = "running"
        elif kind.endswith("Succeeded") and kind not in {"ExecutionSucceeded"}:
            open_step.status = "succeeded"
            open_step.error = open_step.cause = None
        elif any(k in event for k in _FAILED_DETAILS):
            details = next(event[k] for k in _FAILED_DETAILS if k in event)
            open_step.status = "failed"
            open_step.error, open_step.cause = details.get("error"), details.get("cause")
        elif kind.endswith("StateExited"):
            open_step.ended = stamp
            if open_step.status == "failed":
                open_step.status = "caught"  # it failed and a Catch moved on
            elif open_step.status == "running":
                open_step.status = "succeeded"
            open_step = None
        elif kind in _EXECUTION_END:
            ending: dict[str, Any] = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            open_step.status, open_step.ended = "failed", stamp
            open_step.error = ending.get("error") or open_step.error
            open_step.cause = ending.get("cause") or open_step.cause
            open_step = None
    return steps
