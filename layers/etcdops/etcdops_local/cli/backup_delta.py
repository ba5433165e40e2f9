"""``etcdops backup run --kind delta``: one delta run by hand, as the DeltaBackup function runs it every
minute: the changes since the chain's last revision stored as its next delta, or a new chain from a fresh
full backup. The chain head lives in the state table: the deployed stack's (``--stack-name``), the local
stack's emulated one, or ``$ETCDOPS_TABLE``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from etcdops.domain.errors import ConfigError
from etcdops_local.cli.main import emit, human_bytes
from etcdops_local.cli.options import resolve_config, stack_state_dir

#: The reason a new chain asked for by hand gives (``backup run --kind delta --new-chain``).
NEW_CHAIN_ASKED = "asked for by hand (backup run --kind delta --new-chain); the chain before it ends where it is"


def chain_store(args: argparse.Namespace) -> Any:
    """The delta chain heads of the state table this command works on (a one-line ConfigError without one):
    with ``--cluster NAME`` on the local fleet, still the local stack's table (the heads are keyed by cluster)."""
    import boto3

    from etcdops.adapters.state_delta import DynamoDeltaChainStore
    from etcdops.adapters.state_dynamodb import DynamoStateStore
    from etcdops_local.cli.stack import deployed_stack

    deployed = deployed_stack(args)
    if deployed is not None:
        table = DynamoStateStore(deployed.output("table"), deployed.session.client("dynamodb"))
        return DynamoDeltaChainStore(table)
    local = stack_state_dir(args)  # the stack's own directory: a fleet cluster's (clusters/NAME) has no aws.json
    if (local / "aws.json").exists():
        from etcdops_local.aws.stack import load_local_stack, local_boto3_session

        stack = load_local_stack(local)
        if stack.table is None:
            raise ConfigError(f"--kind delta: the local stack in {local} has no state table")
        return DynamoDeltaChainStore(DynamoStateStore(stack.table, local_boto3_session(local).client("dynamodb")))
    name = os.environ.get("ETCDOPS_TABLE", "").strip()
    if not name:
        raise ConfigError(
            "--kind delta: the delta chain's head lives in the etcdops state table, and none is known here: name "
            "the deployed stack (--stack-name), run the local stack with its autopilot (etcdops local up), or set "
            "ETCDOPS_TABLE"
        )
    return DynamoDeltaChainStore(DynamoStateStore(name, boto3.session.Session().client("dynamodb")))


def cmd_backup_delta(args: argparse.Namespace) -> int:
    from etcdops.adapters.backup.target import open_backup_target
    from etcdops.adapters.etcd.connect import client_for
    from etcdops.app.backup.delta_job import run_delta_backup
    from etcdops.app.probe import probe_cluster

    config = resolve_config(args)
    chains = chain_store(args)  # before anything is read or written: no table, no run
    store, keyring = open_backup_target(config, create_local_key=True)
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    with client_for(config) as client:
        health = probe_cluster(client, deadline=config.health.probe_deadline_seconds)
        asked = NEW_CHAIN_ASKED if args.new_chain else None
        result = run_delta_backup(config, client, health, store, keyring, chains, new_chain=asked, log=say)
    emit(args, result.summary(), lambda: _text(result))
    return 0


def _text(result: Any) -> str:
    if result.action == "delta":
        d = result.delta
        return (
            f"delta {d.id}: revisions {d.first_revision}..{d.last_revision}, {d.events} changes, "
            f"{human_bytes(d.size_stored)} encrypted (chain {d.chain_id})"
        )
    if result.action == "new-chain":
        broken = f"; the chain before it is BROKEN: {result.broken}" if result.broken else ""
        return f"new delta chain from full backup {result.backup.id} ({result.reason}){broken}"
    if result.action == "lost-race":
        return f"nothing stored: {result.reason}"
    return f"nothing to store: {result.reason}"
