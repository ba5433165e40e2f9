"""``etcdops runbook start RUNBOOK``: each runbook started by hand, its input checked before anything starts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from etcdops.domain.errors import NotFoundError
from etcdops_local.cli.follow import add_wait_option
from etcdops_local.cli.main import emit
from etcdops_local.cli.runbook import _arn, operator_session

if TYPE_CHECKING:
    from etcdops.domain.config import ClusterConfig


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


def _operator_input(args: argparse.Namespace, config: ClusterConfig, asked: str, **fields: Any) -> dict[str, Any]:
    """The input of a runbook an operator starts by hand: the cluster, the runbook's own ``fields``, why
    (--reason, or what was ``asked``) and whether it waits for an approval first (--approval)."""
    return {
        "cluster": config.name,
        **fields,
        "reason": args.reason or f"requested by an operator: {asked}",
        "requires_approval": args.approval,
    }


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
        document = _operator_input(
            args,
            config,
            f"replace {member.name}",
            member_id=f"{member.id:x}",
            member_name=member.name,
            incident_id=execution_name(f"{config.name}-manual"),
        )
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
        document = _operator_input(args, config, f"upgrade {config.name} to etcd {version}", version=str(version))
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
        return f"maintain-{config.name}", _operator_input(args, config, f"maintain {config.name}")

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
        document = _operator_input(args, config, f"scale {config.name} to {args.size} members", size=args.size)
        return f"scale-{config.name}-{args.size}", document

    return _start(args, "scale", prepare)


def cmd_runbook_start_rotate(args: argparse.Namespace) -> int:
    """RotateCertificates of every member: new leaf certificates from the cluster CA, one member at a time,
    no restart (HealthCheck starts it on its own for the members within certificates.renew_days)."""

    def prepare(config: ClusterConfig) -> tuple[str, dict[str, Any]]:
        what = "rotate the CA" if args.ca else "renew the member certificates"
        document = {**_operator_input(args, config, f"{what} of {config.name}"), "mode": "ca" if args.ca else "leaf"}
        return f"rotate-{'ca-' if args.ca else ''}{config.name}", document

    return _start(args, "rotate", prepare)


#: a runbook's own options, as ``add_argument`` takes them
Option = tuple[str, dict[str, Any]]
_APPROVAL: Option = ("--approval", {"action": "store_true", "help": "wait for a human approval first"})
_REASON: Option = ("--reason", {"help": "why (goes into the notifications)"})

#: ``runbook start RUNBOOK``: each runbook's sub-command, its help, what starts it and its options, in order
RUNBOOK_KINDS: tuple[tuple[str, str, Callable[[argparse.Namespace], int], tuple[Option, ...]], ...] = (
    (
        "replace",
        "replace a member (safety checks still apply)",
        cmd_runbook_start,
        (("--member", {"required": True, "help": "member name or hex id"}), _APPROVAL, _REASON),
    ),
    (
        "restore",
        "restore the whole cluster from a backup (always waits for an approval)",
        cmd_runbook_start_restore,
        (
            (
                "--backup",
                {
                    "metavar": "ID",
                    "help": "backup id (default: the newest verified backup of the live cluster incarnation; "
                    "a backup of an earlier incarnation must be named)",
                },
            ),
            (
                "--mode",
                {
                    "choices": ("in-place", "new-hosts"),
                    "default": "in-place",
                    "help": "restore on the existing hosts, or launch fresh ones (when the old hosts are gone)",
                },
            ),
            (
                "--to-revision",
                {
                    "metavar": "R",
                    "type": int,
                    "default": None,
                    "help": "point in time: the newest verified backup at or before revision R, then its deltas up "
                    "to R",
                },
            ),
            (
                "--to-time",
                {
                    "metavar": "T",
                    "default": None,
                    "help": "point in time: the newest revision the backups and deltas made by T (ISO 8601, with a "
                    "zone) hold",
                },
            ),
            ("--latest", {"action": "store_true", "help": "point in time: the newest revision the delta chain covers"}),
            ("--reason", {"help": "why (goes into the approval message and notifications)"}),
        ),
    ),
    (
        "upgrade",
        "upgrade etcd member by member, the leader last (rolls a failed member back)",
        cmd_runbook_start_upgrade,
        (
            ("--version", {"required": True, "metavar": "V", "help": "the etcd version to run, e.g. 3.5.30"}),
            _APPROVAL,
            _REASON,
        ),
    ),
    (
        "maintain",
        "compact, defragment by rule one member at a time (the leader last), recover from NOSPACE",
        cmd_runbook_start_maintain,
        (_APPROVAL, _REASON),
    ),
    (
        "rotate-certs",
        "renew every member's certificate from the cluster CA, one member at a time, no restart",
        cmd_runbook_start_rotate,
        (
            _APPROVAL,
            (
                "--ca",
                {
                    "action": "store_true",
                    "help": "rotate the cluster CA in three phases (rolling restarts; continues from the recorded "
                    "phase)",
                },
            ),
            _REASON,
        ),
    ),
    (
        "drill",
        "restore drill: restore the newest verified backup into a scratch member, check it, tear it down",
        cmd_runbook_start_drill,
        (("--backup", {"metavar": "ID", "help": "backup id (default: the newest verified backup)"}),),
    ),
    (
        "scale",
        "grow or shrink the cluster to 3, 5 or 7 voting members, one member at a time",
        cmd_runbook_start_scale,
        (
            ("--size", {"required": True, "type": int, "metavar": "N", "help": "voting members wanted: 3, 5 or 7"}),
            _APPROVAL,
            _REASON,
        ),
    ),
)


def register_start(actions: Any, common: argparse.ArgumentParser) -> None:
    """``runbook start`` and one sub-command per runbook (:data:`RUNBOOK_KINDS`), each of which can follow
    what it started (--wait)."""
    start = actions.add_parser("start", help="start a runbook by hand", parents=[common])
    kinds = start.add_subparsers(dest="runbook_kind", metavar="RUNBOOK", required=True)
    for name, help_text, handler, options in RUNBOOK_KINDS:
        kind = kinds.add_parser(name, help=help_text, parents=[common])
        for flag, settings in options:
            kind.add_argument(flag, **settings)
        kind.set_defaults(handler=handler)
        add_wait_option(kind)  # every `runbook start` can follow what it started
