"""``etcdops runbook list|show|start``: the runbook executions, on the local stack or in AWS."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from etcdops.domain.errors import ConfigError, NotFoundError
from etcdops_local.cli.main import emit, table
from etcdops_local.cli.options import AWS_OPTIONS, chosen_cluster, stack_state_dir
from etcdops_local.cli.story import explained, message, outcome, wrapped

RUNBOOKS = {
    "replace": "ReplaceMemberStateMachine",
    "restore": "RestoreClusterStateMachine",
    "upgrade": "UpgradeClusterStateMachine",
    "maintain": "MaintainClusterStateMachine",
    "drill": "RestoreDrillStateMachine",
    "scale": "ScaleClusterStateMachine",
    "rotate": "RotateCertificatesStateMachine",
}


def operator_session(args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    """A boto3 session and the runbooks' state machine ARNs: the deployed stack's (--stack-name), else
    the local stack's, else from ``ETCDOPS_*_STATE_MACHINE_ARN``."""
    from etcdops_local.cli.stack import deployed_stack

    deployed = deployed_stack(args)
    if deployed is not None:
        return deployed.session, deployed.runbooks
    state_dir = stack_state_dir(args)  # a fleet cluster's runbooks run in the one local stack
    if (state_dir / "aws.json").exists():
        from etcdops_local.aws.stack import load_local_stack, local_boto3_session

        stack = load_local_stack(state_dir)
        arns = {name: stack.state_machines[lid] for name, lid in RUNBOOKS.items() if lid in stack.state_machines}
        return local_boto3_session(state_dir), arns
    import boto3

    arns = {
        name: os.environ[f"ETCDOPS_{name.upper()}_STATE_MACHINE_ARN"]
        for name in RUNBOOKS
        if os.environ.get(f"ETCDOPS_{name.upper()}_STATE_MACHINE_ARN")
    }
    if not arns:
        raise ConfigError(
            f"no runbooks: no local stack with its autopilot in {state_dir} (start one with `etcdops local up`, "
            "or pass --state-dir DIR), and no deployed stack (--stack-name NAME or ETCDOPS_STACK)"
        )
    return boto3.session.Session(), arns


def _arn(args: argparse.Namespace, arns: dict[str, str], runbook: str) -> str:
    if runbook not in arns:
        raise ConfigError(
            f"no {runbook} state machine: no local stack with its autopilot in {stack_state_dir(args)} (start one "
            f"with `etcdops local up`, or pass --state-dir DIR), and no deployed stack (--stack-name NAME)"
        )
    return arns[runbook]


def _executions(sfn: Any, arns: dict[str, str]) -> list[dict[str, Any]]:
    found = []
    for runbook, arn in arns.items():
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn):
            for execution in page["executions"]:
                found.append({"runbook": runbook, **execution})
    return sorted(found, key=lambda e: e["startDate"], reverse=True)


RUNBOOK_OPTIONS = AWS_OPTIONS | {"cluster"}  # list, show: --cluster NAME keeps to that cluster's executions


def execution_cluster(sfn: Any, arn: str, args: argparse.Namespace) -> str | None:
    """The cluster an execution runs against: its input's ``cluster``, else the stack's default one."""
    from etcdops_local.cli.fleet import registry_for

    named = json.loads(sfn.describe_execution(executionArn=arn).get("input") or "{}").get("cluster")
    return str(named) if named else registry_for(args)[1]


def cmd_runbook_list(args: argparse.Namespace) -> int:
    session, arns = operator_session(args)
    sfn = session.client("stepfunctions")
    executions = _executions(sfn, arns)
    chosen = chosen_cluster(args)
    if chosen is not None:
        executions = [e for e in executions if execution_cluster(sfn, e["executionArn"], args) == chosen]
    data = [
        {
            "runbook": e["runbook"],
            "name": e["name"],
            "arn": e["executionArn"],
            "status": e["status"],
            "started": e["startDate"].isoformat(),
            "stopped": e["stopDate"].isoformat() if e.get("stopDate") else None,
        }
        for e in executions
    ]
    emit(
        args,
        data,
        lambda: table(
            ["RUNBOOK", "EXECUTION", "STATUS", "STARTED", "STOPPED"],
            [[d["runbook"], d["name"], d["status"], d["started"][:19], (d["stopped"] or "")[:19]] for d in data],
        )
        if data
        else "no runbook executions",
    )
    return 0


def _find_execution(sfn: Any, arns: dict[str, str], name: str) -> dict[str, Any]:
    if name.startswith("arn:"):
        return {"executionArn": name}
    for execution in _executions(sfn, arns):
        if execution["name"] == name:
            return execution
    raise NotFoundError(f"no runbook execution named {name}")


def cmd_runbook_show(args: argparse.Namespace) -> int:
    from etcdops_local.cli.status import runbooks_of

    session, arns = operator_session(args)
    sfn = session.client("stepfunctions")
    arn = _find_execution(sfn, arns, args.execution)["executionArn"]
    chosen = chosen_cluster(args)
    if chosen is not None and (about := execution_cluster(sfn, arn, args)) != chosen:
        raise NotFoundError(f"execution {args.execution} runs on cluster {about}, not {chosen}")
    if args.follow:
        from etcdops_local.cli.follow import follow_execution

        return follow_execution(args, sfn, arn, args.execution.rsplit(":", 1)[-1])
    found = runbooks_of(args)
    data, steps = show_data(sfn, arn, found.store if found else None, lambda name: approve_command(args, name))
    emit(args, data, lambda: show_text(data, steps, terminal_width()))
    return 0


def show_data(sfn: Any, arn: str, store: Any | None, approve: Any) -> tuple[dict[str, Any], list[Any]]:
    """One execution as ``runbook show`` tells it: described, its steps, and its outcome in words
    (with its approval record from ``store``, when it has one)."""
    from etcdops_local.aws.stack import execution_history

    described = sfn.describe_execution(executionArn=arn)
    steps = execution_history(sfn, arn)
    approval = store.load_approval(described["name"]) if store is not None else None
    data = {
        "name": described["name"],
        "arn": arn,
        "status": described["status"],
        "started": described["startDate"].isoformat(),
        "stopped": described["stopDate"].isoformat() if described.get("stopDate") else None,
        "input": json.loads(described.get("input") or "{}"),
        "output": json.loads(described["output"]) if described.get("output") else None,
        "error": described.get("error"),
        "cause": described.get("cause"),
        "steps": [s.to_json() for s in steps],
    }
    data["outcome"] = outcome(data["status"], data["output"], steps, approve(data["name"]), approval)
    return data, steps


def approve_command(args: argparse.Namespace, name: str, command: str = "approve") -> str:
    """The command that approves execution ``name`` (or does ``command`` to it) where this command looked
    (the stack's name with it)."""
    from etcdops_local.cli.stack import stack_name

    stack = stack_name(args)
    if stack:
        return f"etcdops {command} {name} --stack-name {stack}"
    return f"etcdops {command} {name}" + (f" --state-dir {args.state_dir}" if getattr(args, "state_dir", None) else "")


def terminal_width() -> int | None:
    """The terminal's width, or None (no limit) when the output goes to a file or a pipe."""
    import shutil
    import sys

    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def show_text(data: dict[str, Any], steps: list[Any], width: int | None) -> str:
    """``runbook show`` for people: the outcome in words, the steps, and what went wrong, wrapped."""
    from datetime import datetime

    started = datetime.fromisoformat(data["started"])
    lines = [f"{data['name']}: {data['status']} (started {data['started'][:19]})"]
    lines += wrapped("outcome:", data["outcome"], width)
    wrong = explained(steps)
    rows = []
    for s in steps:
        offset = (s.started - started).total_seconds()
        took = f"{(s.ended - s.started).total_seconds():.1f}s" if s.ended else "..."
        rows.append([f"+{offset:6.1f}s", s.name, s.status, took, s.attempts or "", "see below" if s in wrong else ""])
    lines += ["", table(["AT", "STEP", "STATUS", "TOOK", "TRIES", "NOTE"], rows, width)]
    if wrong:
        lines += ["", "what went wrong:"]
        for s in wrong:
            lines += wrapped(f"  {s.name}:", f"{s.error}: {message(s.cause)}", width, indent="    ")
    if data["status"] in ("FAILED", "TIMED_OUT", "ABORTED"):
        lines += ["", "the messages the runbook sent: etcdops notifications"]
    return "\n".join(lines)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    runbook = commands.add_parser("runbook", help="runbook executions (Step Functions)", parents=[common])
    actions = runbook.add_subparsers(dest="runbook_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="executions of every runbook, newest first", parents=[common])
    listing.set_defaults(handler=cmd_runbook_list, uses=RUNBOOK_OPTIONS)
    show = actions.add_parser("show", help="one execution: status and step history", parents=[common])
    show.add_argument("execution", metavar="EXECUTION", help="execution name or ARN")
    show.add_argument(
        "--follow",
        action="store_true",
        help="print each step as it happens until the execution ends (--json: a JSON object per line); "
        "the exit status says how it ended; Ctrl-C stops following, not the runbook",
    )
    show.set_defaults(handler=cmd_runbook_show, uses=RUNBOOK_OPTIONS)
    from etcdops_local.cli.runbook_start import register_start  # it imports this module

    register_start(actions, common)
