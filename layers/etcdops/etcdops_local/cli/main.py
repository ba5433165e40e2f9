"""The ``etcdops`` command line.

Every command prints for people by default and exact JSON with ``--json``, and fails with one
line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import ConfigError, UsageError
from etcdops_local.cli.format import emit, human_bytes, table
from etcdops_local.cli.options import (
    LOCAL_OPTIONS,
    TESTED_ETCD_VERSIONS,
    Parser,
    describe_failure,
    finish,
    global_options,
    member_count,
    one_line,
    positive_days,
    positive_seconds,
    print_error,
    refuse_contradictions,
    resolve_config,
)
from etcdops_local.cli.options import state_dir as _state_dir

if TYPE_CHECKING:
    from etcdops_local.cluster import EtcdBinaries

Handler = Callable[[argparse.Namespace], int]


# ---- shared plumbing ----------------------------------------------------------------------


# ---- local ---------------------------------------------------------------------------------


def _local(args: argparse.Namespace) -> Any:
    from etcdops_local.cluster import LocalCluster

    return LocalCluster(_state_dir(args))


def _other_etcd(directory: str) -> EtcdBinaries:
    from etcdops_local.cluster import EtcdBinaries

    try:
        return EtcdBinaries.locate(directory)
    except ConfigError as exc:
        raise UsageError(f"--also-etcd {directory}: {str(exc).removeprefix('ETCD_BIN_DIR: ')}") from None


def cmd_local_up(args: argparse.Namespace) -> int:
    from etcdops_local.cluster import EtcdBinaries

    cluster = _local(args)
    others = [_other_etcd(directory) for directory in args.also_etcd or ()]  # checked before anything starts
    started = cluster.up(
        args.members,
        binaries=None if cluster.exists() else EtcdBinaries.locate(os.environ.get("ETCD_BIN_DIR")),
        extra_args=args.etcd_arg or (),
    )
    for binaries in others:
        cluster.add_binaries(binaries)
    processes = cluster.ps()
    autopilot = None
    if not args.no_autopilot:
        from etcdops_local.aws.stack import server_pid, spawn_server
        from etcdops_local.health_loop import DEFAULT_TEMPLATE

        autopilot = server_pid(cluster.state_dir) or spawn_server(
            cluster.state_dir, DEFAULT_TEMPLATE, cluster.config_file
        )
    data = {
        "started": started,
        "autopilot_pid": autopilot,
        "state_dir": str(cluster.state_dir),
        "config": str(cluster.config_file),
        "version": cluster.state().version,
        "other_versions": dict(sorted(cluster.state().binaries.items())),
        "members": [asdict(p) for p in processes],
    }
    verb = "started" if started else "already running"
    pilot = f"; autopilot (emulated AWS) pid {autopilot}" if autopilot else "; autopilot off"
    emit(
        args,
        data,
        lambda: f"local cluster {verb}: {len(processes)} members, etcd {data['version']}, "
        f"state in {data['state_dir']}{pilot}",
    )
    return 0


def cmd_local_ps(args: argparse.Namespace) -> int:
    cluster = _local(args)
    processes = cluster.ps()
    emit(
        args,
        [asdict(p) for p in processes],
        lambda: table(
            ["NAME", "STATE", "PID", "CLIENT", "PEER", "DATA"],
            [
                [p.name, p.state, p.pid, ",".join(p.client_urls), ",".join(p.peer_urls), p.data_dir]
                for p in processes
            ],
        )
        + f"\nstate folder {cluster.state_dir}: {human_bytes(cluster.disk_usage())} on disk",
    )
    return 0


def cmd_local_gc(args: argparse.Namespace) -> int:
    cluster = _local(args)
    removed = cluster.collect_garbage(args.older_than * 86400)
    paths, usage = [str(p) for p in removed], cluster.disk_usage()
    emit(
        args,
        {"removed": paths, "state_dir_bytes": usage},
        lambda: "\n".join(
            [
                *(f"removed {p}" for p in paths),
                f"{len(paths)} removed; state folder {cluster.state_dir}: {human_bytes(usage)} on disk",
            ]
        ),
    )
    return 0


def _local_signal(action: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        process = getattr(_local(args), action)(args.member)
        emit(args, asdict(process), lambda: f"{process.name}: {process.state}")
        return 0

    return run


def cmd_local_down(args: argparse.Namespace) -> int:
    from etcdops_local.aws.stack import stop_server

    cluster = _local(args)
    stop_server(cluster.state_dir)
    cluster.down(purge=args.purge)
    what = "stopped and purged (backups kept)" if args.purge else "stopped"
    emit(args, {"stopped": True, "purged": args.purge}, lambda: f"local cluster {what}")
    return 0


def cmd_local_env(args: argparse.Namespace) -> int:
    env = _local(args).env()
    first = env["ETCDCTL_ENDPOINTS"].split(",")[0]
    note = (
        "# etcdops reads these too. `etcdctl snapshot save` wants exactly one endpoint:\n"
        f"#   etcdctl --endpoints={first} snapshot save FILE   (or: etcdops snapshot save FILE)"
    )
    emit(args, env, lambda: "\n".join([*(f"export {k}={v}" for k, v in env.items()), note]))
    return 0


# ---- status --------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from etcdops.adapters.etcd.connect import client_for
    from etcdops.app.probe import health_to_dict, probe_cluster

    config = resolve_config(args)
    deadline = args.deadline or config.health.probe_deadline_seconds
    if args.watch:
        return watch_status(args, config, deadline)
    with client_for(config, timeout=deadline) as client:
        health = probe_cluster(client, deadline=deadline)
    data = health_to_dict(health)
    last = stack_last_round(args, config.name)  # a deployed stack's HealthCheck: its last word, said below
    emit(args, data, lambda: render_status(config.name, data) + ("\n\n" + render_last_round(last) if last else ""))
    return 0 if health.has_quorum else 1


def last_round(args: argparse.Namespace, cluster: str) -> dict[str, Any] | None:
    """The last health decision: the deployed stack's, else the local autopilot's, else the local loop's."""
    from etcdops_local.health_loop import read_last_round

    state = _state_dir(args)
    return stack_last_round(args, cluster) or autopilot_last_round(state, cluster) or read_last_round(state)


def watch_status(args: argparse.Namespace, config: ClusterConfig, deadline: float) -> int:
    """Probe and show the cluster every ``--interval`` seconds, with the last health decision (the
    deployed stack's, the local autopilot's, or the one the local health loop wrote to
    ``<state dir>/health/last_round.json``), until Ctrl-C."""
    import time

    from etcdops.adapters.etcd.connect import client_for
    from etcdops.adapters.etcd.membership import merge_endpoints
    from etcdops.app.probe import health_to_dict, probe_cluster

    clear = sys.stdout.isatty() and not args.json
    seen: list[str] = []  # the members seen last: seeds besides the configured endpoints (invariant 10)
    interrupted, restore = _interrupt_flag()
    try:
        while not interrupted:
            started = time.monotonic()
            with client_for(config, endpoints=merge_endpoints(seen, config.endpoints), timeout=deadline) as client:
                health = probe_cluster(client, deadline=deadline)
            seen = merge_endpoints(*(m.client_urls for m in health.members if m.id)) or seen
            data = health_to_dict(health)
            last = last_round(args, config.name)
            if args.json:
                print(json.dumps({"status": data, "last_round": last}, default=str), flush=True)
            else:
                screen = render_status(config.name, data) + "\n\n" + render_last_round(last)
                print(("\x1b[2J\x1b[H" if clear else "") + screen + "\n", flush=True)
            if not interrupted:
                time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    finally:
        restore()
    return 0


def _interrupt_flag() -> tuple[list[bool], Callable[[], object]]:
    """A SIGINT handler that raises KeyboardInterrupt as Python's does and also remembers the signal
    in the returned list (true once interrupted); the second value puts the previous handler back.
    Python swallows an exception raised while the main thread runs a finalizer or a gc callback
    ("Exception ignored in ..."; gRPC's channels and calls have finalizers that wait for a lock), so
    a Ctrl-C that lands there must still end the loop, after the round in flight (bounded by the
    probe deadline)."""
    import signal

    interrupted: list[bool] = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    return interrupted, lambda: signal.signal(signal.SIGINT, previous)


def autopilot_last_round(state_dir: Path, cluster: str) -> dict[str, Any] | None:
    """The HealthCheck function's last decision and the newest runbook, when the autopilot runs here."""
    if not (state_dir / "aws.json").exists():
        return None
    from etcdops_local.aws.stack import load_local_stack, local_boto3_session

    stack = load_local_stack(state_dir)
    replace = stack.state_machines.get("ReplaceMemberStateMachine")
    return health_check_last_round(local_boto3_session(state_dir), stack.table or "", replace, cluster, "autopilot")


def stack_last_round(args: argparse.Namespace, cluster: str) -> dict[str, Any] | None:
    """The deployed stack's (``--stack-name``) last HealthCheck decision and newest runbook, else None."""
    from etcdops_local.cli.stack import deployed_stack

    stack = deployed_stack(args)
    if stack is None:
        return None
    from botocore.exceptions import ClientError

    table, replace, where = stack.output("table"), stack.runbooks.get("replace"), f"stack {stack.name}"
    try:
        return health_check_last_round(stack.session, table, replace, cluster, where)
    except ClientError as exc:  # e.g. no read access to the state table: the probe still counts
        return {"decided_at": "-", "trigger": {"description": where}, "decision": None,
                "skipped": f"cannot read the state table of {where}: {one_line(str(exc))}", "actions": []}  # fmt: skip


def health_check_last_round(session: Any, table: str, replace: str | None, cluster: str, where: str) -> dict[str, Any]:
    """The last decision HealthCheck wrote to the state ``table`` and the newest ReplaceMember execution."""
    from etcdops.adapters.state import DynamoStateStore

    last = DynamoStateStore(table, session.client("dynamodb")).load_last_decision(cluster)
    actions = []
    if replace:
        runs = session.client("stepfunctions").list_executions(stateMachineArn=replace, maxResults=1)["executions"]
        actions = [f"newest runbook: {r['name']} {r['status']}" for r in runs]
    if last is None:
        return {"decided_at": "-", "trigger": {"description": where}, "decision": None,
                "skipped": "no health round yet", "actions": actions}  # fmt: skip
    return {
        "decided_at": last.decided_at.isoformat(timespec="seconds"),
        "trigger": {"description": f"{where} HealthCheck"},
        "decision": last.decision.to_dict(),
        "actions": actions,
    }


def render_last_round(last: dict[str, Any] | None) -> str:
    if last is None:
        return "last decision: none yet (the autopilot runs with `etcdops local up`, unless --no-autopilot)"
    decision = last.get("decision")
    if not decision:
        return f"last round ({last.get('decided_at', '?')}): skipped: {last.get('skipped')}"
    lines = [f"last decision ({last.get('decided_at', '?')}, {last['trigger']['description']}): {decision['action']}"]
    lines.append(f"  reason: {decision['reason']}")
    lines += [f"  done: {action}" for action in last.get("actions", [])]
    return "\n".join(lines)


def render_status(name: str, data: dict[str, Any]) -> str:
    members = data["members"]
    healthy = sum(1 for m in members if m["healthy"] and not m["is_learner"])
    voters = sum(1 for m in members if not m["is_learner"])
    quorum = "QUORUM" if data["has_quorum"] else "NO QUORUM"
    lines = [
        f"cluster {name} ({data['cluster_id'] or 'unknown id'}): {quorum}, leader {data['leader'] or 'none'}, "
        f"{healthy}/{voters} voters healthy, quorum margin {data['quorum_margin']}, "
        f"cluster version {data.get('cluster_version') or 'unknown'}",
        "",
        table(
            ["NAME", "ID", "ROLE", "HEALTH", "VERSION", "DB SIZE", "IN USE", "RAFT INDEX", "TERM", "ENDPOINT", "ERROR"],
            [
                [
                    m["name"] or "?",
                    m["id"],
                    "leader" if m["is_leader"] else "learner" if m["is_learner"] else "follower",
                    "healthy" if m["healthy"] else "UNHEALTHY",
                    m["version"],
                    human_bytes(m["db_size"]),
                    human_bytes(m["db_size_in_use"]),
                    m["raft_index"],
                    m["raft_term"],
                    ",".join(m["client_urls"]),
                    m["error"],
                ]
                for m in members
            ],
        ),
    ]
    if data["alarms"]:
        lines += ["", "alarms: " + ", ".join(f"{a['alarm']} on {a['member_id']}" for a in data["alarms"])]
    if data["errors"]:
        lines += ["", *("note: " + e for e in data["errors"])]
    return "\n".join(lines)


# ---- parser --------------------------------------------------------------------------------


def version_text() -> str:
    from etcdops import __version__

    return f"etcdops {__version__} (tested with etcd {', '.join(TESTED_ETCD_VERSIONS)})"


def build_parser() -> argparse.ArgumentParser:
    common = global_options()
    parser = Parser(
        prog="etcdops",
        description="An autopilot for self-managed etcd clusters: health, backups, member replacement, restore.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    local = commands.add_parser("local", help="the embedded local stack", parents=[common])
    local_cmds = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)
    up = local_cmds.add_parser("up", help="start a local TLS cluster (idempotent)", parents=[common])
    up.add_argument("--members", type=member_count, default=3, help="number of members, 1 to 9 (default 3)")
    up.add_argument(
        "--no-autopilot",
        action="store_true",
        help="only the etcd members: no emulated AWS side (HealthCheck, runbooks, schedules)",
    )
    up.add_argument(
        "--also-etcd",
        action="append",
        metavar="DIR",
        help="another etcd version the members may be upgraded to (runbook start upgrade): a directory "
        "with its etcd and etcdctl (and etcdutl); repeatable",
    )
    up.add_argument(
        "--etcd-arg",
        action="append",
        metavar="FLAG",
        help="extra etcd flag, e.g. --etcd-arg=--quota-backend-bytes=1000000",
    )
    up.set_defaults(handler=cmd_local_up, uses=LOCAL_OPTIONS)
    ps = local_cmds.add_parser("ps", help="list member processes", parents=[common])
    ps.set_defaults(handler=cmd_local_ps, uses=LOCAL_OPTIONS)
    for action, help_text in (
        ("kill", "SIGKILL a member, like a lost host"),
        ("pause", "SIGSTOP a member, like a hung host"),
        ("resume", "SIGCONT a paused member"),
    ):
        sub = local_cmds.add_parser(action, help=help_text, parents=[common])
        sub.add_argument("member", metavar="MEMBER")
        sub.set_defaults(handler=_local_signal(action), uses=LOCAL_OPTIONS)
    down = local_cmds.add_parser("down", help="stop every member", parents=[common])
    down.add_argument("--purge", action="store_true", help="also delete data and certificates (backups are kept)")
    down.set_defaults(handler=cmd_local_down, uses=LOCAL_OPTIONS)
    gc = local_cmds.add_parser(
        "gc", help="delete old data that restores set aside, once older than --older-than", parents=[common]
    )
    gc.add_argument(
        "--older-than",
        type=positive_days,
        default=7.0,
        metavar="DAYS",
        help="age in days (default 7) of the data.before-restore-* folders to delete",
    )
    gc.set_defaults(handler=cmd_local_gc, uses=LOCAL_OPTIONS)
    env = local_cmds.add_parser("env", help="print etcdctl exports for the local cluster", parents=[common])
    env.set_defaults(handler=cmd_local_env, uses=LOCAL_OPTIONS)

    status = commands.add_parser("status", help="probe every member and show the cluster's health", parents=[common])
    status.add_argument(
        "--deadline", type=positive_seconds, help="probe deadline in seconds (default: from the config, 2 s)"
    )
    status.add_argument(
        "--watch",
        action="store_true",
        help="refresh until Ctrl-C, with the last health decision (the stack's or the local one's)",
    )
    status.add_argument(
        "--interval", type=positive_seconds, default=3.0, help="seconds between refreshes (default 3)"
    )
    status.set_defaults(handler=cmd_status)

    _register_more(commands, common)
    return parser


def _register_more(commands: Any, common: argparse.ArgumentParser) -> None:
    """Commands that live in their own modules register here."""
    from etcdops_local.cli import approval as cli_approval
    from etcdops_local.cli import backup as cli_backup
    from etcdops_local.cli import completion as cli_completion
    from etcdops_local.cli import runbook as cli_runbook
    from etcdops_local.cli import snapshot as cli_snapshot

    cli_snapshot.register(commands, common)
    cli_backup.register(commands, common)
    cli_approval.register(commands, common)
    cli_runbook.register(commands, common)
    cli_completion.register(commands, common)
    demo = commands.add_parser(
        "demo",
        help="a scripted tour on the local stack: backup, kill a member, watch it replaced, check the data",
        parents=[common],
    )
    demo.set_defaults(handler=cmd_demo, uses=LOCAL_OPTIONS)


def cmd_demo(args: argparse.Namespace) -> int:
    from etcdops_local.cluster import EtcdBinaries
    from etcdops_local.demo import run_demo
    from etcdops_local.health_loop import DEFAULT_TEMPLATE

    lines: list[str] = []
    binaries = EtcdBinaries.locate(os.environ.get("ETCD_BIN_DIR"))
    timeline = run_demo(
        _state_dir(args), DEFAULT_TEMPLATE, binaries=binaries, out=(lines.append if args.json else print)
    )
    if args.json:
        print(json.dumps([{"at": round(at, 1), "event": text} for at, text in timeline.events], indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and an exit status from ``EXIT_CODES``."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    debug = getattr(args, "debug", False)
    try:
        refuse_contradictions(sys.argv[1:] if argv is None else argv)
        finish(args)
        handler: Handler = args.handler
        code = handler(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (``etcdops status --json | head``): quietly, like any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except Exception as exc:  # the top-level handler: one line for anything
        if debug:
            import traceback

            traceback.print_exc()
        code, message = describe_failure(exc)
        print_error(message)
        return code
    finally:
        from etcdops_local.cli.stack import remove_private_directories

        remove_private_directories()


if __name__ == "__main__":
    sys.exit(main())
