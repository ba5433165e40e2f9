"""What a runbook execution did, in words: the story ``runbook show`` tells and the live screen's
line per runbook (pure: it reads a described execution and its steps, it asks nothing).

An execution ends in one of a few ways an operator must tell apart at a glance: the replacement
was not needed (the member recovered), a human rejected it (and why), it failed at one step (which
one, and the one line that says why), or it succeeded. While it runs, it is at one step, or it
waits for a human decision.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from typing import Any, Protocol

from etcdops.domain.errors import APPROVAL_REJECTED
from etcdops.domain.scale import outcome as scale_outcome
from etcdops.domain.upgrade import summary as upgrade_summary

APPROVAL_STEP = "Wait for approval"  # the state both runbooks wait in (statemachines/*.asl.json)


class StepLike(Protocol):
    """A step of an execution as :func:`etcdops_local.aws.stack.execution_history` reads it."""

    name: str
    type: str  # Task, Choice, Fail ...
    status: str  # running | succeeded | failed | caught
    error: str | None
    cause: str | None


def message(cause: str | None) -> str:
    """A Lambda error's cause is its error document: the message, not the JSON."""
    try:
        return str(json.loads(cause or "")["errorMessage"])
    except (ValueError, KeyError, TypeError):
        return cause or ""


def failed_step(steps: Sequence[StepLike]) -> StepLike | None:
    """The step whose error ended the run: the first that failed (a Catch moved on from it, or not)."""
    return next((s for s in explained(steps)), None)


def explained(steps: Sequence[StepLike]) -> list[StepLike]:
    """The steps that failed with an error of their own (not the Fail state that ends every failed run)."""
    return [s for s in steps if s.status in ("caught", "failed") and s.error and s.type != "Fail"]


def current_step(steps: Sequence[StepLike]) -> StepLike | None:
    """The step a running execution is at now (the last one entered)."""
    return steps[-1] if steps else None


def waiting_for_approval(status: str, steps: Sequence[StepLike]) -> bool:
    step = current_step(steps)
    return status == "RUNNING" and step is not None and step.name == APPROVAL_STEP and step.status == "running"


def outcome(
    status: str,
    output: dict[str, Any] | None,
    steps: Sequence[StepLike],
    approve_command: str = "etcdops approve NAME",
    approval: Any | None = None,
) -> str:
    """One sentence: how the execution ended, or where it is now. ``approval`` is the execution's
    approval record (:class:`etcdops.adapters.state.Approval`), when there is one: who rejected it and why
    (Step Functions does not always keep the cause SendTaskFailure gave)."""
    broke = failed_step(steps)
    if status == "RUNNING":
        if waiting_for_approval(status, steps):
            what = f": {approval.summary}" if approval is not None else ""
            return f"waiting for approval{what} — approve with `{approve_command}`"
        now = current_step(steps)
        return f"running: at step {now.name!r}" if now else "running: no step entered yet"
    if status == "SUCCEEDED":
        if output and output.get("recovered"):
            member = output.get("member_name") or output.get("member_id") or "the member"
            return f"recovered: {member} answered again before anything was changed; nothing was replaced"
        if output and output.get("upgraded") is not None:  # an upgrade: each member's before and after
            return f"succeeded: {upgrade_summary(output)}"
        if output and output.get("rotated") is not None:  # a certificate rotation: each member's new serial
            renewed = ", ".join(f"{r['name']} now serves {r['serial_after']}" for r in output["rotated"])
            return f"succeeded: {renewed or 'no member certificate was due; nothing was renewed'}"
        if output and output.get("changes") is not None and output.get("size") is not None:  # a size change
            return f"succeeded: {scale_outcome(output)}"
        new = (output or {}).get("new_member") or {}
        if new.get("name"):  # a replacement: who took whose place
            member = output.get("member_name") or output.get("member_id") if output else None
            return f"succeeded: {member or 'the member'} replaced by {new['name']} ({new.get('id')})"
        return "succeeded: every step ran to its end"
    if broke is not None and broke.error == APPROVAL_REJECTED:
        reason = message(broke.cause) or (approval.decision_reason if approval is not None else None)
        by = f" by {approval.decided_by}" if approval is not None and approval.decided_by else ""
        return f"rejected{by}: {reason or 'no reason given'}; nothing was changed"
    if broke is not None:
        return f"{status.lower()} at step {broke.name!r} because {broke.error}: {message(broke.cause)}"
    return f"{status.lower()}: no step reported an error (see the execution history)"


def wrapped(label: str, text: str, width: int | None, indent: str | None = None) -> list[str]:
    """``label`` then ``text`` wrapped to ``width`` columns (None: one line), the following lines
    indented by ``indent`` (default: under the text)."""
    if width is None:
        return [f"{label} {text}"]
    indent = " " * (len(label) + 1) if indent is None else indent
    return textwrap.wrap(
        f"{label} {text}", width=max(40, width), subsequent_indent=indent, break_on_hyphens=False
    ) or [label]
