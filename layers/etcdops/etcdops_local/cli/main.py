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

from etcdops.domain.errors import ConfigError, UsageError
from etcdops.domain.wording import count
from etcdops_local.cli.format import emit, human_bytes, table
from etcdops_local.cli.options import (
    LOCAL_OPTIONS,
    TESTED_ETCD_VERSIONS,
    Parser,
    describe_failure,
    finish,
    global_options,
    print_error,
    refuse_contradictions,
)
from etcdops_local.cli.options import state_dir as _state_dir
from etcdops_local.cluster.fleet import fleet_dirs

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
    if args.clusters and args.no_autopilot:
        raise UsageError("--clusters: the fleet's clusters are registered with the emulated stack; drop --no-autopilot")
    existed = cluster.exists()
    started = cluster.up(
        args.members,
        binaries=None if existed else EtcdBinaries.locate(os.environ.get("ETCD_BIN_DIR")),
        extra_args=args.etcd_arg or (),
        quota_backend_bytes=args.quota_backend_bytes,
    )
    for binaries in others:
        cluster.add_binaries(binaries)
    processes = cluster.ps()
    autopilot, autopilot_started = None, False
    if not args.no_autopilot:
        from etcdops_local.aws.stack import server_pid, spawn_server
        from etcdops_local.aws.templates import DEFAULT_TEMPLATE

        autopilot = server_pid(cluster.state_dir)
        if autopilot is None:
            autopilot = spawn_server(cluster.state_dir, DEFAULT_TEMPLATE, cluster.config_file)
            autopilot_started = True
    fleet: list[str] = []
    if args.clusters:
        from etcdops_local.cli.fleet import local_fleet_up

        fleet = local_fleet_up(cluster, args.clusters)
    data = {
        "started": started,
        "created": not existed,
        "autopilot_pid": autopilot,
        "autopilot_started": autopilot_started,
        "state_dir": str(cluster.state_dir),
        "config": str(cluster.config_file),
        "version": cluster.state().version,
        "quota_backend_bytes": cluster.state().quota_backend_bytes,
        "other_versions": dict(sorted(cluster.state().binaries.items())),
        "members": [asdict(p) for p in processes],
        **({"fleet": fleet} if args.clusters else {}),
    }
    emit(args, data, lambda: up_summary(data, processes))
    return 0


def up_summary(data: dict[str, Any], processes: Sequence[Any]) -> str:
    """What ``local up`` did, in words: made, started again, or found running; and the autopilot."""
    started, total = data["started"], len(processes)
    if data["created"]:
        what = f"local cluster created: {count(total, 'member')} started"
    elif started:
        what = f"local cluster: started {', '.join(started)} again ({count(total, 'member')} in all)"
    else:
        what = f"local cluster already running: {count(total, 'member')}, nothing to start"
    if data["autopilot_pid"] is None:
        pilot = "autopilot off"
    else:
        pilot = f"autopilot (emulated AWS) {'started' if data['autopilot_started'] else 'already running'}, "
        pilot += f"pid {data['autopilot_pid']}"
    lines = [f"{what}, etcd {data['version']}, state in {data['state_dir']}; {pilot}"]
    if data.get("fleet"):
        lines.append(f"fleet: {', '.join(data['fleet'])} (one member each; --cluster NAME selects one, status --all)")
    for p in processes:
        if p.state == "paused":
            lines.append(f"note: {p.name} is paused (`etcdops local resume {p.name}` lets it run)")
        elif p.state == "stopped":
            lines.append(f"note: {p.name} never ran yet: a host a runbook launched; the runbook starts it")
    return "\n".join(lines)


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
    from etcdops_local.cluster import LocalCluster

    cluster = _local(args)
    stop_server(cluster.state_dir)
    for directory in fleet_dirs(cluster.state_dir):  # the fleet's clusters first (local up --clusters N)
        LocalCluster(directory).down(purge=args.purge)
    cluster.down(purge=args.purge)
    what = "stopped and purged (backups kept)" if args.purge else "stopped"
    emit(args, {"stopped": True, "purged": args.purge}, lambda: f"local cluster {what}")
    return 0


def cmd_local_env(args: argparse.Namespace) -> int:
    """The etcdctl variables for the local cluster, and a PATH with this etcdops and the stack's own
    etcdctl/etcdutl first (a machine's other etcd, e.g. Debian's 3.4, may come earlier otherwise)."""
    import shlex

    cluster = _local(args)
    env = cluster.env()
    tools = [Path(cluster.state().bin_dir).absolute(), Path(sys.executable).parent]  # etcd's, then etcdops's
    front = [str(d) for d in dict.fromkeys(tools) if d.is_dir()]
    data = {**env, "PATH": os.pathsep.join([*front, os.environ.get("PATH", "")])}
    first = env["ETCDCTL_ENDPOINTS"].split(",")[0]
    notes = [
        "# etcdops reads these too. `etcdctl snapshot save` wants exactly one endpoint:",
        f"#   etcdctl --endpoints={first} snapshot save FILE   (or: etcdops snapshot save FILE)",
    ]
    if not (tools[0] / "etcdutl").exists():
        notes.append(f"# etcd {cluster.state().version} has no etcdutl: `etcdctl snapshot status|restore` do its work")
    exports = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    exports.append(f'export PATH={shlex.quote(os.pathsep.join(front))}:"$PATH"')
    emit(args, data, lambda: "\n".join([*exports, *notes]))
    return 0


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

    from etcdops_local.cli.local import register_local

    register_local(commands, common)

    from etcdops_local.cli import status as cli_status

    cli_status.register(commands, common)

    _register_more(commands, common)
    return parser


def _register_more(commands: Any, common: argparse.ArgumentParser) -> None:
    """Commands that live in their own modules register here."""
    from etcdops_local.cli import approval as cli_approval
    from etcdops_local.cli import backup as cli_backup
    from etcdops_local.cli import completion as cli_completion
    from etcdops_local.cli import fleet as cli_fleet
    from etcdops_local.cli import notifications as cli_notifications
    from etcdops_local.cli import pki as cli_pki
    from etcdops_local.cli import runbook as cli_runbook
    from etcdops_local.cli import snapshot as cli_snapshot

    cli_snapshot.register(commands, common)
    cli_backup.register(commands, common)
    cli_approval.register(commands, common)
    cli_runbook.register(commands, common)
    cli_fleet.register(commands, common)
    cli_notifications.register(commands, common)
    cli_completion.register(commands, common)
    cli_pki.register(commands, common)
    demo = commands.add_parser(
        "demo",
        help="a scripted tour on the local stack: backup, kill a member, watch it replaced, check the data",
        parents=[common],
    )
    demo.set_defaults(handler=cmd_demo, uses=LOCAL_OPTIONS)


def cmd_demo(args: argparse.Namespace) -> int:
    from etcdops_local.aws.templates import DEFAULT_TEMPLATE
    from etcdops_local.cluster import EtcdBinaries
    from etcdops_local.demo import run_demo

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
