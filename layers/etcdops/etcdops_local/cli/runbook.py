"""``etcdops runbook list|show|start``: the runbook executions, on the local stack or in AWS."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from etcdops.domain.errors import ConfigError, NotFoundError
from etcdops_local.cli.follow import add_wait_option
from etcdops_local.cli.main import _state_dir, emit, table
from etcdops_local.cli.options import AWS_OPTIONS
from etcdops_local.cli.story import explained, message, outcome, wrapped

if TYPE_CHECKING:
    from etcdops.domain.config import ClusterConfig

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
    state_dir = _state_dir(args)
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
            f"no {runbook} state machine: no local stack with its autopilot in {_state_dir(args)} (start one "
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


def cmd_runbook_list(args: argparse.Namespace) -> int:
    session, arns = operator_session(args)
    executions = _executions(session.client("stepfunctions"), arns)
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
    import json

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


Prepare = Callable[["ClusterConfig"], tuple[str, dict[str, Any]]]


def _started(name: str) -> str:
    return f"started {name}"


def _start(args: argparse.Namespace, runbook: str, prepare: Prepare, said: Callable[[str], str] = _started) -> int:
    """Start ``runbook`` (a key of RUNBOOKS) by hand, the tail every ``runbook start`` shares: the operator's
    session first (no stack: that error, before anything else), the cluster's configuration, then
    ``prepare(config)`` gives the execution name's stem and the execution input; the execution is started
    under a unique name from that stem and ``said(name)`` is printed (``--json``: its name, ARN and input)."""
    from etcdops_local.aws.stack import execution_name, start_execution
    from etcdops_local.cli.follow import follow_execution, poll_seconds
    from etcdops_local.cli.options import resolve_config

    wait = getattr(args, "wait", False)
    if wait:
        poll_seconds()  # a bad knob is refused before anything starts
    session, arns = operator_session(args)
    config = resolve_config(args)
    stem, document = prepare(config)
    name = execution_name(stem)
    sfn = session.client("stepfunctions")
    arn = start_execution(sfn, _arn(args, arns, runbook), document, name=name)
    if not wait:
        emit(args, {"name": name, "arn": arn, "input": document}, lambda: said(name))
        return 0
    started = {"execution": name, "event": "started", "arn": arn, "input": document}
    print(json.dumps(started) if args.json else said(name))
    return follow_execution(args, sfn, arn, name)


def cmd_runbook_start(args: argparse.Namespace) -> int:
    """ReplaceMember of the member named or numbered by --member (found by a probe of the live cluster)."""

    def prepare(config: ClusterConfig) -> tuple[str, dict[str, Any]]:
        from etcdops.adapters.etcd.connect import client_for
        from etcdops.app.probe import probe_cluster
        from etcdops_local.aws.stack import execution_name

        with client_for(config) as client:
            health = probe_cluster(client, deadline=config.health.probe_deadline_seconds)
        member = next((m for m in health.members if args.member in (m.name, f"{m.id:x}")), None)
        if member is None:
            raise NotFoundError(f"no member {args.member!r} in cluster {config.name}")
        document = {
            "cluster": config.name,
            "member_id": f"{member.id:x}",
            "member_name": member.name,
            "incident_id": execution_name(f"{config.name}-manual"),
            "reason": args.reason or f"requested by an operator: replace {member.name}",
            "requires_approval": args.approval,
        }
        return f"replace-{config.name}-{member.name}", document

    return _start(args, "replace", prepare)


def _point_in_time(args: argparse.Namespace) -> dict[str, Any]:
    """--to-revision R | --to-time T | --latest as the runbook's input (checked before anything starts)."""
    from datetime import datetime

    from etcdops.domain.errors import UsageError

    given = [name for name in ("to_revision", "to_time", "latest") if getattr(args, name, None)]
    if len(given) > 1 or (given and args.backup):
        named = [f"--{n.replace('_', '-')}" for n in given] + (["--backup"] if args.backup else [])
        raise UsageError(f"give one of --backup, --to-revision, --to-time and --latest, not {' and '.join(named)}")
    if args.to_revision is not None:
        if args.to_revision < 1:
            raise UsageError(f"--to-revision {args.to_revision}: revisions start at 1")
        return {"to_revision": args.to_revision}
    if args.to_time:
        try:
            moment = datetime.fromisoformat(args.to_time)
        except ValueError:
            raise UsageError(f"--to-time {args.to_time!r} is not an ISO 8601 time (2026-12-07T21:30:00Z)") from None
        if moment.tzinfo is None:
            raise UsageError(f"--to-time {args.to_time!r} has no time zone (add Z or +00:00)")
        return {"to_time": moment.isoformat()}
    return {"latest": True} if args.latest else {}


def cmd_runbook_start_restore(args: argparse.Namespace) -> int:
    """RestoreCluster: the backup is checked by the runbook itself, and it always waits for an approval."""
    from etcdops.domain.backup.manifest import check_backup_id

    point = _point_in_time(args)  # checked first, before the operator's session or the configuration is looked up

    def prepare(config: ClusterConfig) -> tuple[str, dict[str, Any]]:
        document: dict[str, Any] = {
            "cluster": config.name,
            "backup_id": check_backup_id(args.backup) if args.backup else None,
            **point,
            "mode": args.mode,
            "reason": args.reason or f"requested by an operator: restore {config.name}",
        }
        return f"restore-{config.name}", document

    return _start(
        args, "restore", prepare, lambda name: f"started {name}; it waits for your approval before anything is stopped"
    )


def cmd_runbook_start_upgrade(args: argparse.Namespace) -> int:
    """UpgradeCluster: the version is checked here (a clear error, nothing started) and again, against the
    members' versions and the path's gates, by the runbook before it changes anything."""
    from etcdops.domain.errors import UsageError
    from etcdops.domain.upgrade import EtcdVersion

    version = EtcdVersion.parse(args.version)
    if version is None:
        raise UsageError(f"--version: {args.version!r} is not an etcd version (MAJOR.MINOR.PATCH, e.g. 3.5.30)")

    def prepare(config: ClusterConfig) -> tuple[str, dict[str, Any]]:
        document: dict[str, Any] = {
            "cluster": config.name,
            "version": str(version),
            "reason": args.reason or f"requested by an operator: upgrade {config.name} to etcd {version}",
            "requires_approval": args.approval,
        }
        return f"upgrade-{config.name}-{str(version).replace('.', '-')}", document

    return _start(args, "upgrade", prepare)


def cmd_runbook_start_drill(args: argparse.Namespace) -> int:
    """RestoreDrill: the newest verified backup (or --backup ID) restored into a scratch member and checked."""
    from etcdops.domain.backup.manifest import check_backup_id

    def prepare(config: ClusterConfig) -> tuple[str, dict[str, Any]]:
        document: dict[str, Any] = {"cluster": config.name}
        if args.backup:
            document["backup_id"] = check_backup_id(args.backup)
        return f"drill-{config.name}", document

    def said(name: str) -> str:
        return f"started {name}; `etcdops runbook show {name}` follows it, `etcdops backup list` shows the result"

    return _start(args, "drill", prepare, said)


def cmd_runbook_start_maintain(args: argparse.Namespace) -> int:
    """MaintainCluster now, as its schedule would start it: compaction, defragmentation by rule, NOSPACE
    recovery; it skips a cluster that is not fully healthy or whose lock another runbook holds."""

    def prepare(config: ClusterConfig) -> tuple[str, dict[str, Any]]:
        document: dict[str, Any] = {
            "cluster": config.name,
            "reason": args.reason or f"requested by an operator: maintain {config.name}",
            "requires_approval": args.approval,
        }
        return f"maintain-{config.name}", document

    return _start(args, "maintain", prepare)


def cmd_runbook_start_scale(args: argparse.Namespace) -> int:
    """ScaleCluster: the size is checked here (one line, nothing started) and again by the runbook, which
    also refuses a cluster that is not healthy before it changes anything."""
    from etcdops.domain.errors import UsageError
    from etcdops.domain.scale import size_refusal

    refusal = size_refusal(args.size)
    if refusal:
        raise UsageError(f"--size: {refusal}")

    def prepare(config: ClusterConfig) -> tuple[str, dict[str, Any]]:
        document: dict[str, Any] = {
            "cluster": config.name,
            "size": args.size,
            "reason": args.reason or f"requested by an operator: scale {config.name} to {args.size} members",
            "requires_approval": args.approval,
        }
        return f"scale-{config.name}-{args.size}", document

    return _start(args, "scale", prepare)


def cmd_runbook_start_rotate(args: argparse.Namespace) -> int:
    """RotateCertificates of every member: new leaf certificates from the cluster CA, one member at a time,
    no restart (HealthCheck starts it on its own for the members within certificates.renew_days)."""

    def prepare(config: ClusterConfig) -> tuple[str, dict[str, Any]]:
        what = "rotate the CA" if args.ca else "renew the member certificates"
        document: dict[str, Any] = {
            "cluster": config.name,
            "reason": args.reason or f"requested by an operator: {what} of {config.name}",
            "requires_approval": args.approval,
            "mode": "ca" if args.ca else "leaf",
        }
        return f"rotate-{'ca-' if args.ca else ''}{config.name}", document

    return _start(args, "rotate", prepare)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    runbook = commands.add_parser("runbook", help="runbook executions (Step Functions)", parents=[common])
    actions = runbook.add_subparsers(dest="runbook_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="executions of every runbook, newest first", parents=[common])
    listing.set_defaults(handler=cmd_runbook_list, uses=AWS_OPTIONS)
    show = actions.add_parser("show", help="one execution: status and step history", parents=[common])
    show.add_argument("execution", metavar="EXECUTION", help="execution name or ARN")
    show.add_argument(
        "--follow",
        action="store_true",
        help="print each step as it happens until the execution ends (--json: a JSON object per line); "
        "the exit status says how it ended; Ctrl-C stops following, not the runbook",
    )
    show.set_defaults(handler=cmd_runbook_show, uses=AWS_OPTIONS)
    start = actions.add_parser("start", help="start a runbook by hand", parents=[common])
    kinds = start.add_subparsers(dest="runbook_kind", metavar="RUNBOOK", required=True)
    replace = kinds.add_parser("replace", help="replace a member (safety checks still apply)", parents=[common])
    replace.add_argument("--member", required=True, help="member name or hex id")
    replace.add_argument("--approval", action="store_true", help="wait for a human approval first")
    replace.add_argument("--reason", help="why (goes into the notifications)")
    replace.set_defaults(handler=cmd_runbook_start)
    restore = kinds.add_parser(
        "restore", help="restore the whole cluster from a backup (always waits for an approval)", parents=[common]
    )
    restore.add_argument(
        "--backup",
        metavar="ID",
        help="backup id (default: the newest verified backup of the live cluster incarnation; "
        "a backup of an earlier incarnation must be named)",
    )
    restore.add_argument(
        "--mode",
        choices=("in-place", "new-hosts"),
        default="in-place",
        help="restore on the existing hosts, or launch fresh ones (when the old hosts are gone)",
    )
    restore.add_argument(
        "--to-revision", metavar="R", type=int, default=None,
        help="point in time: the newest verified backup at or before revision R, then its deltas up to R",
    )  # fmt: skip
    restore.add_argument(
        "--to-time", metavar="T", default=None,
        help="point in time: the newest revision the backups and deltas made by T (ISO 8601, with a zone) hold",
    )  # fmt: skip
    restore.add_argument(
        "--latest", action="store_true", help="point in time: the newest revision the delta chain covers"
    )
    restore.add_argument("--reason", help="why (goes into the approval message and notifications)")
    restore.set_defaults(handler=cmd_runbook_start_restore)
    upgrade = kinds.add_parser(
        "upgrade", help="upgrade etcd member by member, the leader last (rolls a failed member back)", parents=[common]
    )
    upgrade.add_argument("--version", required=True, metavar="V", help="the etcd version to run, e.g. 3.5.30")
    upgrade.add_argument("--approval", action="store_true", help="wait for a human approval first")
    upgrade.add_argument("--reason", help="why (goes into the notifications)")
    upgrade.set_defaults(handler=cmd_runbook_start_upgrade)
    maintain = kinds.add_parser(
        "maintain",
        help="compact, defragment by rule one member at a time (the leader last), recover from NOSPACE",
        parents=[common],
    )
    maintain.add_argument("--approval", action="store_true", help="wait for a human approval first")
    maintain.add_argument("--reason", help="why (goes into the notifications)")
    maintain.set_defaults(handler=cmd_runbook_start_maintain)
    rotate = kinds.add_parser(
        "rotate-certs",
        help="renew every member's certificate from the cluster CA, one member at a time, no restart",
        parents=[common],
    )
    rotate.add_argument("--approval", action="store_true", help="wait for a human approval first")
    rotate.add_argument(
        "--ca",
        action="store_true",
        help="rotate the cluster CA in three phases (rolling restarts; continues from the recorded phase)",
    )
    rotate.add_argument("--reason", help="why (goes into the notifications)")
    rotate.set_defaults(handler=cmd_runbook_start_rotate)
    drill = kinds.add_parser(
        "drill",
        help="restore drill: restore the newest verified backup into a scratch member, check it, tear it down",
        parents=[common],
    )
    drill.add_argument("--backup", metavar="ID", help="backup id (default: the newest verified backup)")
    drill.set_defaults(handler=cmd_runbook_start_drill)
    scale = kinds.add_parser(
        "scale",
        help="grow or shrink the cluster to 3, 5 or 7 voting members, one member at a time",
        parents=[common],
    )
    scale.add_argument("--size", required=True, type=int, metavar="N", help="voting members wanted: 3, 5 or 7")
    scale.add_argument("--approval", action="store_true", help="wait for a human approval first")
    scale.add_argument("--reason", help="why (goes into the notifications)")
    scale.set_defaults(handler=cmd_runbook_start_scale)
    for kind in kinds.choices.values():  # every `runbook start` can follow what it started
        add_wait_option(kind)
