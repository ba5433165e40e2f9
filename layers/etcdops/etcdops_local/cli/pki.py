"""``etcdops pki issue-client|list``: client certificates from the cluster CA, and every certificate.

Where the certificates live: Secrets Manager for a deployed stack (``--stack-name``) or a configuration
with ``compute.provider: ec2`` (the operator's own AWS credentials), else the local stack's ``pki/``
folder (``compute.provider: local``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from etcdops.domain.config import ClusterConfig, Ec2Compute, LocalCompute
from etcdops.domain.errors import ConfigError
from etcdops_local.cli.format import emit, table
from etcdops_local.cli.options import resolve_config

_WHERE = frozenset({"config", "state_dir", "stack_name"})  # where the cluster is; no etcd endpoint is used


def open_store(args: argparse.Namespace, config: ClusterConfig) -> Any:
    """The cluster's certificate store: files of the local stack, or Secrets Manager."""
    from etcdops.adapters.pki_store import FilePki, SecretsPki
    from etcdops_local.cli.stack import deployed_stack

    deployed = deployed_stack(args)
    if deployed is not None or isinstance(config.compute, Ec2Compute):  # a stack keeps its CA in Secrets Manager
        import boto3

        session = deployed.session if deployed else boto3.session.Session()  # its clients: of the stack's fleet
        return SecretsPki(session.client("secretsmanager"), config.name, fleet=deployed.name if deployed else None)
    if isinstance(config.compute, LocalCompute):
        from etcdops_local.cluster import LocalCluster

        cluster = LocalCluster(Path(config.compute.state_dir))
        return FilePki(cluster.pki_dir, [m.name for m in cluster.state().members])
    raise ConfigError(
        f"cluster {config.name}: its configuration has no compute section, so etcdops does not know where its "
        "certificates live (compute.provider: local or ec2)"
    )


def cmd_pki_issue_client(args: argparse.Namespace) -> int:
    from etcdops.app.pki import check_client_name, check_days, issue_client

    check_client_name(args.name)
    check_days(args.days)
    config = resolve_config(args)
    info = issue_client(open_store(args, config), args.name, days=args.days, force=args.force)
    emit(
        args,
        info.to_json(),
        lambda: (
            f"issued client certificate {info.name} (serial {info.serial}, until {info.not_after[:10]}) "
            f"from the CA of {config.name}: {info.location}"
        ),
    )
    return 0


def cmd_pki_list(args: argparse.Namespace) -> int:
    from etcdops.app.pki import list_certificates

    config = resolve_config(args)
    found = list_certificates(open_store(args, config))
    emit(
        args,
        [c.to_json() for c in found],
        lambda: (
            table(
                ["ROLE", "NAME", "SERIAL", "SUBJECT", "SANS", "EXPIRES", "WHERE"],
                [[c.role, c.name, c.serial, c.subject, ",".join(c.sans), c.not_after[:19], c.location] for c in found],
            )
            + rotation_line(found)
        ),
    )
    return 0


def rotation_line(found: list[Any]) -> str:
    """What the list says below its table while a CA rotation is under way (else nothing)."""
    record = next((c.rotation for c in found if c.rotation), None)
    if record is None:
        return ""
    from etcdops.app.runbook.rotate_ca import PHASES

    begun, finished = record["begun"], record["finished"]
    state = f"phase {begun} of 3 finished" if begun == finished else f"phase {begun} of 3 begun, not finished"
    return (
        f"\nCA rotation under way: {state} (phase {begun}: {PHASES[begun]}). "
        "`etcdops runbook start rotate-certs --ca` continues it."
        if begun in PHASES
        else f"\nCA rotation under way: phase {begun} recorded (not a phase etcdops knows)."
    )


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    pki = commands.add_parser(
        "pki", help="the cluster's certificates: issue client certificates, list them", parents=[common]
    )
    actions = pki.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    issue = actions.add_parser(
        "issue-client",
        help="issue a client certificate (e.g. for an API server) from the cluster CA and store it",
        parents=[common],
    )
    issue.add_argument("name", metavar="NAME", help="the client's name: its certificate's common name")
    issue.add_argument("--days", type=int, default=365, metavar="N", help="days of validity (default 365)")
    issue.add_argument("--force", action="store_true", help="replace the certificate of an existing client")
    issue.set_defaults(handler=cmd_pki_issue_client, uses=_WHERE)
    listing = actions.add_parser(
        "list", help="every certificate: CA, members, clients (serial, subject, SANs, expiry, where)", parents=[common]
    )
    listing.set_defaults(handler=cmd_pki_list, uses=_WHERE)
