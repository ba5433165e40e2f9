"""Following a runbook execution while it runs: ``runbook start KIND --wait`` and ``runbook show
EXECUTION --follow``.

Each poll reads the execution as ``runbook show`` does (:func:`etcdops_local.cli.runbook.show_data`) and
prints what is new since the last one: a step entered, a step tried again, a step left (succeeded, failed,
or failed and caught), and, once per wait, that the execution waits for a human decision (with the
command that approves it). It ends with ``runbook show``'s outcome line and an exit status that tells
how the execution ended (:data:`EXIT_STATUS`). Ctrl-C stops the following only; the execution goes on.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from etcdops.domain.errors import UsageError
from etcdops_local.cli.story import message, waiting_for_approval, wrapped

# the exit status of a followed execution, by how it ended (a status not here, e.g. an unknown one: 1)
EXIT_STATUS = {"SUCCEEDED": 0, "FAILED": 3, "TIMED_OUT": 4, "ABORTED": 5}
INTERRUPTED = 130  # Ctrl-C: the following stopped, the execution did not
POLL_ENV = "ETCDOPS_FOLLOW_POLL_SECONDS"  # a knob for tests; not an option
DEFAULT_POLL_SECONDS = 1.0

Look = Callable[[], tuple[dict[str, Any], Sequence[Any]]]


def poll_seconds() -> float:
    """The time between two reads of the execution: ``$ETCDOPS_FOLLOW_POLL_SECONDS``, else 1 s."""
    raw = os.environ.get(POLL_ENV, "")
    if not raw:
        return DEFAULT_POLL_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"{POLL_ENV}: {raw!r} is not a number of seconds above 0")
    return seconds


@dataclass
class Progress:
    """What has been said about an execution so far, by step index (a state entered twice is two steps)."""

    entered: int = 0
    tries: dict[int, int] = field(default_factory=dict)
    left: set[int] = field(default_factory=set)
    approvals: set[int] = field(default_factory=set)

    def news(self, data: dict[str, Any], steps: Sequence[Any]) -> list[dict[str, Any]]:
        """The events not told yet, in order, each a JSON object (``event``, ``at``, ``step`` ...)."""
        events: list[dict[str, Any]] = []
        for index, step in enumerate(steps):
            if index >= self.entered:
                events.append(_event("entered", step.started, step, type=step.type))
                self.entered = index + 1
            if step.attempts > max(1, self.tries.get(index, 1)):
                events.append(_event("retry", step.started, step, attempt=step.attempts, error=step.error))
            self.tries[index] = max(step.attempts, self.tries.get(index, 0))
            if step.ended is not None and index not in self.left:
                self.left.add(index)
                took = round((step.ended - step.started).total_seconds(), 1)
                events.append(_event(step.status, step.ended, step, took=took, error=step.error,
                                     cause=message(step.cause) if step.cause else None))  # fmt: skip
        last = len(steps) - 1
        if waiting_for_approval(data["status"], steps) and last not in self.approvals:
            self.approvals.add(last)
            events.append(_event("waiting-for-approval", steps[last].started, steps[last], says=data["outcome"]))
        return events


def _event(kind: str, at: datetime, step: Any, **details: Any) -> dict[str, Any]:
    return {"event": kind, "at": at.isoformat(), "step": step.name,
            **{k: v for k, v in details.items() if v is not None}}  # fmt: skip


def event_line(event: dict[str, Any], started: datetime) -> str:
    """One event for people: the clock, the time since the execution started, what happened."""
    at = datetime.fromisoformat(event["at"])
    head = f"{at:%H:%M:%S} +{(at - started).total_seconds():6.1f}s"
    kind, step = event["event"], event["step"]
    if kind == "entered":
        return f"{head}  > {step} ({event['type']})"
    if kind == "retry":
        return f"{head}    {step}: try {event['attempt']}" + (f" after {event['error']}" if "error" in event else "")
    if kind == "waiting-for-approval":
        return f"{head}  ? {event['says']}"
    why = f": {event['error']}" if "error" in event else ""
    why += f": {event['cause']}" if event.get("cause") else ""
    return f"{head}  < {step} {kind} in {event['took']:.1f}s{why}"


def follow(
    look: Look,
    resume: str,
    *,
    as_json: bool,
    width: int | None,
    out: Callable[[str], None] = print,
    poll: float = DEFAULT_POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Follow one execution until it ends: ``look()`` reads it (``runbook show``'s data and steps);
    every event is printed by ``out`` as it is seen (``as_json``: one JSON object a line), then the
    outcome. Its exit status (:data:`EXIT_STATUS`); Ctrl-C: a line that says how to follow again
    (``resume``), and :data:`INTERRUPTED`."""
    progress = Progress()
    data: dict[str, Any] = {}
    try:
        while True:
            data, steps = look()
            started = datetime.fromisoformat(data["started"])
            for event in progress.news(data, steps):
                out(json.dumps({"execution": data["name"], **event}) if as_json else event_line(event, started))
            if data["status"] != "RUNNING":
                break
            sleep(poll)
    except KeyboardInterrupt:
        name = data.get("name", "the execution")
        if as_json:
            out(json.dumps({"execution": name, "event": "stopped-following", "status": data.get("status"),
                            "resume": resume}))  # fmt: skip
        else:
            out(f"stopped following {name}; it goes on (follow it again with `{resume}`)")
        return INTERRUPTED
    code = EXIT_STATUS.get(data["status"], 1)
    if as_json:
        out(json.dumps({"execution": data["name"], "event": "ended", "status": data["status"],
                        "outcome": data["outcome"], "exit_status": code, "stopped": data["stopped"]}))  # fmt: skip
    else:
        out(f"{data['name']}: {data['status']}")
        for line in wrapped("outcome:", data["outcome"], width):
            out(line)
    return code


def follow_execution(args: Any, sfn: Any, arn: str, name: str) -> int:
    """Follow execution ``arn`` (named ``name``) where the command found it: the local stack's or the
    deployed one's, its approval record from their state table."""
    from etcdops_local.cli.runbook import approve_command, show_data, terminal_width
    from etcdops_local.cli.status import runbooks_of

    found = runbooks_of(args)
    store = found.store if found else None

    def look() -> tuple[dict[str, Any], Sequence[Any]]:
        return show_data(sfn, arn, store, lambda execution: approve_command(args, execution))

    resume = approve_command(args, name, "runbook show") + " --follow"
    return follow(look, resume, as_json=args.json, width=terminal_width(), poll=poll_seconds())


def add_wait_option(parser: Any) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the execution to its end, a line per step (--json: a JSON object per line); the exit "
        "status says how it ended; Ctrl-C stops following, not the runbook",
    )
