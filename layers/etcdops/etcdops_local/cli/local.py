"""``etcdops local up|ps|kill|pause|resume|down|gc|env``: the parsers of the embedded local stack's commands
(their handlers are in :mod:`etcdops_local.cli.main`)."""

from __future__ import annotations

import argparse
from typing import Any

from etcdops_local.cli.fleet import fleet_size
from etcdops_local.cli.main import (
    _local_signal,
    cmd_local_down,
    cmd_local_env,
    cmd_local_gc,
    cmd_local_ps,
    cmd_local_up,
)
from etcdops_local.cli.options import (
    FLEET_LOCAL_OPTIONS,
    LOCAL_OPTIONS,
    member_count,
    positive_days,
    quota_bytes,
)


def register_local(commands: Any, common: argparse.ArgumentParser) -> None:
    """``etcdops local ...``: the embedded local stack."""
    local = commands.add_parser("local", help="the embedded local stack", parents=[common])
    local_cmds = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)
    _add_local_up(local_cmds, common)
    ps = local_cmds.add_parser("ps", help="list member processes", parents=[common])
    ps.set_defaults(handler=cmd_local_ps, uses=FLEET_LOCAL_OPTIONS)
    for action, help_text in (
        ("kill", "SIGKILL a member, like a lost host"),
        ("pause", "SIGSTOP a member, like a hung host"),
        ("resume", "SIGCONT a paused member"),
    ):
        sub = local_cmds.add_parser(action, help=help_text, parents=[common])
        sub.add_argument("member", metavar="MEMBER")
        sub.set_defaults(handler=_local_signal(action), uses=FLEET_LOCAL_OPTIONS)
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
    env.set_defaults(handler=cmd_local_env, uses=FLEET_LOCAL_OPTIONS)
    from etcdops_local.cli.fleet import register_local_commands

    register_local_commands(local_cmds, common)


def _add_local_up(local_cmds: Any, common: argparse.ArgumentParser) -> None:
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
        "--quota-backend-bytes",
        type=quota_bytes,
        metavar="N",
        help="every member's backend quota in bytes (etcd's default: 2 GiB); a small one lets compaction, "
        "defragmentation and NOSPACE recovery be tried on small databases",
    )
    up.add_argument(
        "--etcd-arg",
        action="append",
        metavar="FLAG",
        help="extra etcd flag, e.g. --etcd-arg=--snapshot-count=1000",
    )
    up.add_argument(
        "--clusters",
        type=fleet_size,
        metavar="N",
        help="also N one-member clusters c1..cN under the same emulated stack, registered in its cluster "
        "registry (1 to 20; select one with --cluster NAME)",
    )
    up.set_defaults(handler=cmd_local_up, uses=LOCAL_OPTIONS)
