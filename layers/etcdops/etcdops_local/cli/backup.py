"""``etcdops backup run|list|verify|fetch|import``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from etcdops_local.cli.format import command_seconds
from etcdops_local.cli.main import emit, human_bytes, table
from etcdops_local.cli.options import input_file, output_file, resolve_config


def _manifest_dict(manifest: Any) -> dict[str, Any]:
    data: dict[str, Any] = manifest.model_dump(mode="json")
    return data


def cmd_backup_run(args: argparse.Namespace) -> int:
    from etcdops.adapters.backup.target import open_backup_target
    from etcdops.adapters.etcd.connect import client_for
    from etcdops.app.backup.job import BackupResult, run_backup
    from etcdops.app.probe import probe_cluster
    from etcdops.app.snapshot import TerminalProgress

    if args.kind == "delta":
        from etcdops_local.cli.backup_delta import cmd_backup_delta

        return cmd_backup_delta(args)
    if args.new_chain:
        from etcdops.domain.errors import UsageError

        raise UsageError("--new-chain starts a new delta chain: only with --kind delta")
    config = resolve_config(args)
    # a local key file is created on first use; a KMS key must already exist
    store, keyring = open_backup_target(config, create_local_key=True)
    progress = TerminalProgress(sys.stderr, "backup")
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    with client_for(config) as client:
        health = probe_cluster(client, deadline=config.health.probe_deadline_seconds)
        if args.kind == "volume":
            from etcdops.app.backup.volume import run_volume_backup

            taken = run_volume_backup(config, client, health, store, keyring, _compute(args, config), log=say)
        else:
            taken = run_backup(config, client, health, store, keyring, progress=progress, log=say)
    progress.done()  # retention's warnings were printed as it met them
    if not isinstance(taken, BackupResult):
        return _provider_snapshots(args, taken)
    result = taken
    m, whole = result.manifest, command_seconds()
    data = {**_manifest_dict(m), "attempts": result.attempts, "seconds": round(result.seconds, 3),
            "command_seconds": round(whole, 3), "pruned": result.pruned, "warnings": result.warnings}  # fmt: skip
    held = f" (a volume copy of {m.member_name}, held still {m.volume.paused_seconds or 0:.2f} s)" if m.volume else ""
    emit(
        args,
        data,
        lambda: f"backup {m.id}{held}: revision {m.revision}, {m.total_keys} keys, {human_bytes(m.size_plain)} "
        f"-> {human_bytes(m.size_stored)} encrypted at {m.uri}; the backup took {result.seconds:.1f} s "
        f"(snapshot, encryption, upload, manifest, retention), the whole command {whole:.1f} s"
        + (f"; pruned {len(result.pruned)}" if result.pruned else ""),
    )
    return 0


def _provider_snapshots(args: argparse.Namespace, taken: Any) -> int:
    """What a volume backup the compute provider keeps (EBS snapshots) says."""
    r = taken.record
    data = {**r.model_dump(mode="json"), "seconds": round(taken.seconds, 3), "pruned": taken.pruned}
    emit(
        args,
        data,
        lambda: f"volume backup {r.id}: snapshots {', '.join(r.volume.snapshot_ids)} of {r.member_name}'s volumes, "
        f"holding every write up to revision {r.volume.revision_observed} (recorded in the catalogue; EBS completes "
        "the snapshots in the background)" + (f"; pruned {len(taken.pruned)}" if taken.pruned else ""),
    )
    return 0


def _compute(args: argparse.Namespace, config: Any) -> Any:
    """The cluster's compute provider (a volume backup asks it for the copy)."""
    from etcdops.adapters.compute.factory import open_compute
    from etcdops_local.cli.stack import deployed_stack
    from etcdops_local.compute import register_local_provider

    register_local_provider()
    deployed = deployed_stack(args)
    if deployed is None:
        return open_compute(config)
    return open_compute(config, session=deployed.session, stack_name=deployed.name)


def _live_cluster(config: Any) -> tuple[str | None, dict[str, str]]:
    """The cluster id the live members answer with (None when none answers or none is configured),
    and the live members' names by hex id."""
    from etcdops.adapters.etcd.connect import client_for
    from etcdops.app.probe import probe_cluster
    from etcdops.domain.backup.manifest import cluster_id_text
    from etcdops.domain.errors import EtcdopsError

    try:
        with client_for(config) as client:
            health = probe_cluster(client, deadline=config.health.probe_deadline_seconds)
    except EtcdopsError:
        return None, {}
    return cluster_id_text(health.cluster_id), {f"{m.id:x}": m.name for m in health.members if m.id and m.name}


def _incarnation(manifest: Any, live: str | None) -> str:
    if live is None:
        return "unknown"
    return "live" if manifest.cluster_id == live else "other"


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def cmd_backup_list(args: argparse.Namespace) -> int:
    from etcdops.adapters.backup.target import open_backup_store
    from etcdops.app.backup.catalogue import (
        drill_results,
        read_catalogue,
        read_delta_catalogue,
        read_drills,
        read_volume_records,
    )
    from etcdops.domain.backup.chain import build_chains

    config = resolve_config(args)
    store = open_backup_store(config)  # a listing needs no key (a fresh stack may have none yet)
    catalogue = read_catalogue(store)
    live, names = _live_cluster(config)
    manifests = list(reversed(catalogue.backups))  # newest first, as every listing
    kept = list(reversed(read_volume_records(store)))  # volume backups the compute provider keeps (EBS)
    drills = drill_results(read_drills(store))
    deltas = read_delta_catalogue(store)
    chains = [_chain_dict(c, deltas.missing) for c in reversed(build_chains(deltas.deltas))]
    data = {
        "store": catalogue.uri,
        "cluster_id": live,
        "backups": [
            {
                **_manifest_dict(m),
                "incarnation": _incarnation(m, live),
                "drill": drills[m.id].model_dump(mode="json") if m.id in drills else None,
            }
            for m in manifests
        ],
        "corrupt": [{"id": c.id, "key": c.key, "error": c.error} for c in catalogue.corrupt],
        "orphans": [{"id": o.id, "key": o.key, "created_at": o.created_at.isoformat()} for o in catalogue.orphans],
        "provider_snapshots": [{**r.model_dump(mode="json"), "incarnation": _incarnation(r, live)} for r in kept],
        "chains": chains,
        "delta_corrupt": deltas.corrupt,
        "delta_orphans": deltas.orphans,
    }
    if not getattr(args, "json", False):
        broken = [f"delta chain {c['chain']} is broken: {p}" for c in chains for p in c["problems"]]
        _warn(catalogue.warnings() + [f"delta manifest {line}" for line in deltas.corrupt] + broken)
    emit(args, data, lambda: _list_text(catalogue.uri, manifests, live, names, drills, kept) + _chains_text(chains))
    return 0


def _chain_dict(chain: Any, missing: list[str]) -> dict[str, Any]:
    """A delta chain as `backup list` shows it: what it covers without a gap, from and to when, and what
    breaks it by its manifests and the objects listed (`backup verify` also reads every delta back)."""
    from etcdops.domain.backup.chain import chain_breaks

    return {
        "chain": chain.chain_id,
        "cluster_id": chain.cluster_id,
        "from_revision": chain.base_revision,
        "to_revision": chain.last_revision,
        "from_time": chain.first_time.isoformat() if chain.first_time else None,
        "to_time": chain.last_time.isoformat() if chain.last_time else None,
        "deltas": len(chain.deltas),
        "gap_at": chain.gap_at,
        "stray": [d.id for d in chain.stray],
        "problems": chain_breaks(chain, missing),
    }


def _chains_text(chains: list[dict[str, Any]]) -> str:
    if not chains:
        return "\nno delta chains"
    rows = [
        [
            c["chain"], c["cluster_id"], f"{c['from_revision']} .. {c['to_revision']}",
            (c["from_time"] or "-")[:19].replace("T", " "), (c["to_time"] or "-")[:19].replace("T", " "), c["deltas"],
            f"at revision {c['gap_at']}, {len(c['stray'])} deltas after it unusable" if c["gap_at"]
            else ("BROKEN (see the warnings)" if c["problems"] else "-"),
        ]
        for c in chains
    ]  # fmt: skip
    header = ["DELTA CHAIN (FROM BACKUP)", "CLUSTER ID", "REVISIONS", "FROM", "TO", "DELTAS", "GAP"]
    return "\n\n" + table(header, rows)


def _drilled(record: Any) -> str:
    if record is None:
        return "-"
    verdict = "restorable" if record.restorable else "NOT RESTORABLE"
    return f"{verdict} {record.finished_at.strftime('%Y-%m-%d')} ({record.seconds:.0f}s)"


def _list_text(
    uri: str, manifests: list[Any], live: str | None, names: dict[str, str], drills: dict[str, Any], kept: list[Any]
) -> str:
    if not manifests and not kept:
        return f"no backups in {uri}"
    marks = {"live": "", "other": " (other incarnation)", "unknown": ""}
    snapshots = [
        [
            r.id, "volume", r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.volume.revision_observed, "-", "-",
            ",".join(r.volume.snapshot_ids), member_label(r.member_name, r.member_id), r.etcd_version,
            r.cluster_id + marks[_incarnation(r, live)], f"- ({r.volume.provider})", "-",
        ]
        for r in kept
    ]  # fmt: skip
    rows = [
        [
            m.id,
            m.kind,
            m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            m.revision,
            m.total_keys,
            human_bytes(m.size_plain),
            human_bytes(m.size_stored),
            member_label(m.member_name or names.get(m.member_id), m.member_id),
            m.etcd_version,
            m.cluster_id + marks[_incarnation(m, live)],
            "yes" if m.verified else "NO",
            _drilled(drills.get(m.id)),
        ]
        for m in manifests
    ]
    rows = sorted([*rows, *snapshots], key=lambda row: str(row[0]), reverse=True)  # ids sort by time
    header = [
        "ID", "KIND", "CREATED", "REVISION", "KEYS", "SIZE", "STORED", "MEMBER", "VERSION", "CLUSTER ID", "VERIFIED",
        "DRILL",
    ]  # fmt: skip
    note = (
        f"live cluster id: {live}; only its backups count as fresh or verified for this cluster"
        if live
        else "live cluster id: unknown (no member answered)"
    )
    return table(header, rows) + "\n" + note


def member_label(name: str | None, member_id: str) -> str:
    """A member as the listings show it: its name beside its id (the id alone when the name is unknown)."""
    return f"{name} ({member_id})" if name else member_id


def _verify_dict(result: Any) -> dict[str, Any]:
    return {
        "id": result.manifest.id,
        "ok": True,
        "sha256": result.sha256,
        "hash": result.summary.hash,
        "revision": result.summary.revision,
        "total_keys": result.summary.total_keys,
        "total_size": result.summary.total_size,
        "seconds": round(result.seconds, 3),
    }


def cmd_backup_verify(args: argparse.Namespace) -> int:
    from etcdops_local.cli.backup_verify import cmd_backup_verify as verify

    return verify(args)


def cmd_backup_fetch(args: argparse.Namespace) -> int:
    from etcdops.adapters.backup.target import open_backup_target
    from etcdops.app.backup.verify import fetch_backup
    from etcdops.app.snapshot import TerminalProgress

    config = resolve_config(args)
    store, keyring = open_backup_target(config)
    progress = TerminalProgress(sys.stderr, f"fetch {args.id}")
    result = fetch_backup(store, keyring, args.id, Path(args.file), cluster=config.name, progress=progress)
    progress.done()
    data = {**_verify_dict(result), "path": str(Path(args.file).absolute())}
    emit(args, data, lambda: f"wrote verified snapshot of backup {args.id} to {data['path']}")
    return 0


def cmd_backup_import(args: argparse.Namespace) -> int:
    from etcdops.adapters.backup.target import open_backup_target
    from etcdops.app.backup.importer import import_snapshot

    config = resolve_config(args)
    store, keyring = open_backup_target(config, create_local_key=True)
    result = import_snapshot(config, store, keyring, Path(args.file), source_cluster_id=args.source_cluster_id)
    m = result.manifest
    data = {**_manifest_dict(m), "seconds": round(result.seconds, 3)}
    source = f"cluster id {m.imported.source_cluster_id}" if m.imported and m.imported.source_cluster_id else (
        "cluster id unknown"
    )
    emit(
        args,
        data,
        lambda: f"imported {args.file} as backup {m.id}: revision {m.revision}, {m.total_keys} keys, "
        f"{human_bytes(m.size_plain)} -> {human_bytes(m.size_stored)} encrypted at {m.uri} ({source}; restore it "
        f"by name: etcdops runbook start restore --backup {m.id})",
    )
    return 0


def _cluster_id(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{1,16}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a cluster id (1-16 hex digits, as etcdctl prints it)")
    return text.lower()


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    backup = commands.add_parser("backup", help="encrypted, verified backups and their catalogue", parents=[common])
    actions = backup.add_subparsers(dest="backup_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="take a snapshot, check it, encrypt and store it, write its manifest, prune", parents=[common]
    )
    run.add_argument(
        "--kind",
        choices=("full", "volume", "delta"),
        default="full",
        help="full: an etcd snapshot streamed from a member (default); volume: a crash-consistent copy of one "
        "healthy follower's data taken while it is held still (locally SIGSTOPped for the copy); delta: one "
        "delta run as DeltaBackup's (the changes since the delta chain's last revision; the chain head is in "
        "the state table)",
    )
    run.add_argument(
        "--new-chain",
        action="store_true",
        help="with --kind delta: end the delta chain where it is and start a new one from a fresh full backup "
        "(after `backup verify` found the current chain broken: its later deltas cannot be replayed)",
    )
    run.set_defaults(handler=cmd_backup_run)
    listing = actions.add_parser(
        "list",
        help="list backups (their manifests' fields, which incarnation), corrupt manifests and orphan objects",
        parents=[common],
    )
    listing.set_defaults(handler=cmd_backup_list)
    verify = actions.add_parser(
        "verify",
        help="fetch, decrypt, hash and inspect a backup; compare with its manifest; read every delta chain back",
        parents=[common],
    )
    verify.add_argument("id", metavar="ID")
    verify.set_defaults(handler=cmd_backup_verify)
    fetch = actions.add_parser(
        "fetch", help="write the decrypted snapshot of backup ID to FILE, only if it verifies", parents=[common]
    )
    fetch.add_argument("id", metavar="ID")
    fetch.add_argument("file", metavar="FILE", type=output_file)
    fetch.set_defaults(handler=cmd_backup_fetch)
    imported = actions.add_parser(
        "import",
        help="check an `etcdctl snapshot save` FILE (sha256 trailer, database), encrypt and catalogue it as a backup",
        parents=[common],
    )
    imported.add_argument("file", metavar="FILE", type=input_file)
    imported.add_argument(
        "--source-cluster-id",
        metavar="HEX",
        type=_cluster_id,
        default=None,
        help="the cluster id of the cluster the file was taken of, when known (the file does not record it)",
    )
    imported.set_defaults(handler=cmd_backup_import)
