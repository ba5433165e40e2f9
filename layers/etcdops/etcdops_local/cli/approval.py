"""``etcdops approve EXECUTION``, ``etcdops reject EXECUTION --reason TEXT``, ``etcdops approval show EXECUTION``.

These decide with AWS credentials instead of a signed link: the state table (DynamoDB) and Step
Functions, from the default boto3 session. :func:`register` takes the factory that makes those
clients, so the local stack (or a test) can point it at emulated AWS.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from etcdops.adapters.state import ApprovalStore
from etcdops.domain.errors import ConfigError, NotFoundError
from etcdops_local.cli.main import emit
from etcdops_local.cli.options import AWS_OPTIONS, chosen_cluster

APPROVAL_OPTIONS = AWS_OPTIONS | {"cluster"}  # --cluster NAME: refused for another cluster's execution


@dataclass(frozen=True)
class ApprovalClients:
    store: ApprovalStore
    sfn: Any


ClientFactory = Callable[[argparse.Namespace], ApprovalClients]


def aws_clients(args: argparse.Namespace) -> ApprovalClients:
    """The deployed stack's (--stack-name) state table and Step Functions; else the local stack's
    emulated AWS when it runs; else the state table from ``--table`` or ``$ETCDOPS_TABLE``, from the
    default session."""
    import boto3

    from etcdops.adapters.state_dynamodb import DynamoStateStore
    from etcdops_local.cli.options import stack_state_dir
    from etcdops_local.cli.stack import deployed_stack

    table = getattr(args, "table", None)
    deployed = deployed_stack(args)
    if deployed is not None:
        store = DynamoStateStore(table or deployed.output("table"), deployed.session.client("dynamodb"))
        return ApprovalClients(store, deployed.session.client("stepfunctions"))
    state_dir = stack_state_dir(args)  # a fleet cluster's approvals are the one local stack's
    if (state_dir / "aws.json").exists() and not table:
        from etcdops_local.aws.stack import load_local_stack, local_boto3_session

        stack = load_local_stack(state_dir)
        local = local_boto3_session(state_dir)
        if stack.table is None:
            raise ConfigError(f"the local stack in {state_dir} has no state table")
        return ApprovalClients(DynamoStateStore(stack.table, local.client("dynamodb")), local.client("stepfunctions"))
    table = table or os.environ.get("ETCDOPS_TABLE", "").strip()
    if not table:
        raise ConfigError(
            "--table: not given and ETCDOPS_TABLE is not set (the etcdops state table); or name the deployed "
            "stack with --stack-name NAME"
        )
    session = boto3.session.Session()
    return ApprovalClients(DynamoStateStore(table, session.client("dynamodb")), session.client("stepfunctions"))


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _check_cluster(args: argparse.Namespace, clients: ApprovalClients) -> None:
    """With ``--cluster NAME``, an execution of another cluster is refused before anything is decided."""
    from etcdops.app.approval import execution_name

    chosen = chosen_cluster(args)
    approval = clients.store.load_approval(execution_name(args.execution)) if chosen else None
    if approval is not None and approval.cluster != chosen:
        raise NotFoundError(f"execution {approval.execution} runs on cluster {approval.cluster}, not {chosen}")


def _decide(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from etcdops.app.approval import decide_approval

        clients: ApprovalClients = args.approval_clients(args)
        _check_cluster(args, clients)
        result = decide_approval(
            args.execution,
            "approve" if action == "approve" else "reject",
            getattr(args, "reason", None),
            store=clients.store,
            sfn=clients.sfn,
            now=datetime.now(UTC),
            by=_operator(),
        )
        emit(
            args,
            result,
            lambda: f"execution {result['execution']} ({result['runbook']} on {result['cluster']}) "
            f"{result['decision']} by {result['by']}",
        )
        return 0

    return run


def cmd_approval_show(args: argparse.Namespace) -> int:
    from etcdops.app.approval import ApprovalNotFoundError, execution_name, send_task_commands

    clients: ApprovalClients = args.approval_clients(args)
    _check_cluster(args, clients)
    name = execution_name(args.execution)
    approval = clients.store.load_approval(name)
    if approval is None:
        raise ApprovalNotFoundError(f"no approval request for execution {name}")
    now = datetime.now(UTC)
    state = approval.decision or ("expired" if approval.is_expired(now) else "pending")
    approve_cmd, reject_cmd = send_task_commands(approval.task_token)
    data = {
        "execution": approval.execution,
        "execution_arn": approval.execution_arn,
        "cluster": approval.cluster,
        "runbook": approval.runbook,
        "summary": approval.summary,
        "reason": approval.reason,
        "requested_at": approval.requested_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(),
        "state": state,
        "decided_by": approval.decided_by,
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "decision_reason": approval.decision_reason,
        "task_token": approval.task_token,
        "send_task_success": approve_cmd,
        "send_task_failure": reject_cmd,
    }
    emit(
        args,
        data,
        lambda: "\n".join(
            [
                f"execution {approval.execution}: {approval.runbook} on {approval.cluster}, {state}",
                f"what: {approval.summary}",
                f"why: {approval.reason}",
                f"expires: {data['expires_at']}",
                *([f"decided by {approval.decided_by} at {data['decided_at']}"] if approval.decision else []),
                "",
                "with Step Functions directly:",
                f"  {approve_cmd}",
                f"  {reject_cmd}",
            ]
        ),
    )
    return 0


def register(commands: Any, common: argparse.ArgumentParser, factory: ClientFactory = aws_clients) -> None:
    tables = argparse.ArgumentParser(add_help=False)
    tables.add_argument(  # no default here: `approval --table T show E` keeps T (see etcdops_local.cli.options)
        "--table", metavar="NAME", default=argparse.SUPPRESS, help="the etcdops state table (default: $ETCDOPS_TABLE)"
    )
    parents = [common, tables]

    approve = commands.add_parser("approve", help="approve a runbook execution waiting for a human", parents=parents)
    approve.add_argument("execution", metavar="EXECUTION", help="execution name or ARN")
    approve.set_defaults(handler=_decide("approve"), approval_clients=factory, uses=APPROVAL_OPTIONS)

    reject = commands.add_parser("reject", help="reject a runbook execution waiting for a human", parents=parents)
    reject.add_argument("execution", metavar="EXECUTION", help="execution name or ARN")
    reject.add_argument("--reason", required=True, metavar="TEXT", help="why (the runbook fails with it)")
    reject.set_defaults(handler=_decide("reject"), approval_clients=factory, uses=APPROVAL_OPTIONS)

    approval = commands.add_parser("approval", help="approval requests", parents=parents)
    approval_cmds = approval.add_subparsers(dest="approval_command", metavar="ACTION", required=True)
    show = approval_cmds.add_parser(
        "show", help="an execution's approval request and its send-task-success command", parents=parents
    )
    show.add_argument("execution", metavar="EXECUTION", help="execution name or ARN")
    show.set_defaults(handler=cmd_approval_show, approval_clients=factory, uses=APPROVAL_OPTIONS)
