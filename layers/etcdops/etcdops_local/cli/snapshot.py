"""``etcdops snapshot save|inspect``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from etcdops_local.cli.main import emit
from etcdops_local.cli.options import NO_OPTIONS, input_file, output_file, resolve_config


def cmd_snapshot_save(args: argparse.Namespace) -> int:
    from etcdops.adapters.etcd.connect import client_for
    from etcdops.app.probe import probe_cluster
    from etcdops.app.snapshot import TerminalProgress, save_snapshot

    config = resolve_config(args)
    progress = TerminalProgress(sys.stderr, f"snapshot {args.file}")
    with client_for(config) as client:
        health = probe_cluster(client, deadline=config.health.probe_deadline_seconds)
        saved = save_snapshot(
            client,
            health,
            Path(args.file),
            progress=progress,
            idle_timeout=config.health.probe_deadline_seconds,
            log=lambda m: print(m, file=sys.stderr),
        )
    progress.done()
    data = {
        "path": str(saved.path),
        "size": saved.size,
        "sha256": saved.sha256,
        "member_id": f"{saved.source.member_id:x}",
        "member": saved.source.name,
        "etcd_version": saved.source.version,
        "cluster_revision": saved.revision,  # the cluster's revision as the stream began
        "attempts": saved.attempts,
    }
    emit(
        args,
        data,
        lambda: f"saved {saved.size} bytes from {saved.source.name} ({data['member_id']}) to {saved.path}",
    )
    return 0


def cmd_snapshot_inspect(args: argparse.Namespace) -> int:
    from etcdops.adapters.bbolt import inspect_file

    info = inspect_file(Path(args.file))
    data: dict[str, Any] = {
        "hash": info.summary.hash,
        "revision": info.summary.revision,
        "total_keys": info.summary.total_keys,
        "total_size": info.summary.total_size,
        "sha256_trailer": info.has_sha256_trailer,
    }
    emit(
        args,
        data,
        lambda: "\n".join(
            [
                f"hash        {data['hash']:x}",
                f"revision    {data['revision']}",
                f"total_keys  {data['total_keys']}",
                f"total_size  {data['total_size']}",
                f"sha256      {'present, matches' if info.has_sha256_trailer else 'absent (not checked)'}",
            ]
        ),
    )
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    snapshot = commands.add_parser("snapshot", help="take and inspect snapshot files", parents=[common])
    actions = snapshot.add_subparsers(dest="snapshot_command", metavar="ACTION", required=True)
    save = actions.add_parser(
        "save",
        help="stream a snapshot from the best member to FILE (same format as etcdctl snapshot save)",
        parents=[common],
    )
    save.add_argument("file", metavar="FILE", type=output_file)
    save.set_defaults(handler=cmd_snapshot_save)
    inspect = actions.add_parser(
        "inspect",
        help="check a snapshot file and print hash, revision, total_keys, total_size (like etcdutl snapshot status)",
        parents=[common],
    )
    inspect.add_argument("file", metavar="FILE", type=input_file)
    inspect.set_defaults(handler=cmd_snapshot_inspect, uses=NO_OPTIONS)
