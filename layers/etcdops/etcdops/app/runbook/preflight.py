"""Invariant 13: a runbook proves it can finish before its first destructive step.

The preflight step of each runbook asks everything it will need later, with the parameters it will
use: the compute provider (launch, host commands, hosts, load balancer, retiring; see
:meth:`ComputeProvider.preflight`), the backup store (the backup it relies on opens with the key; a
restore can also write its staging object), and the state table (the operation lock is still this
runbook's, and its lease is extended). Every problem found is a :class:`~etcdops.domain.findings.Finding`;
if there is any, the step raises :class:`~etcdops.app.runbook.PreflightFailedError` listing all
of them, having changed nothing, and the runbook's failure path releases the lock and sends one
message with the list.

Trouble that may pass (throttling, a network error, a key service that is unavailable right now) is
not a finding: it is raised as its retryable error and the state machine asks again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import ClientError

from etcdops.adapters.state import LockLostError, LockStore
from etcdops.app.runbook import Document, PreflightFailedError, timed
from etcdops.domain.compute.base import ComputeProvider, PreflightPlan
from etcdops.domain.compute.errors import HostCommandFailedError
from etcdops.domain.errors import ConfigError
from etcdops.domain.findings import Finding

if TYPE_CHECKING:
    from etcdops.adapters.backup.crypto import KeyProvider
    from etcdops.adapters.backup.store import BackupStore

_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


class Preflighting(Protocol):
    """Any runbook's context, as far as its preflight goes."""

    @property
    def compute(self) -> ComputeProvider: ...

    @property
    def backup_target(self) -> Callable[[], tuple[BackupStore, KeyProvider]]: ...

    @property
    def state(self) -> LockStore: ...

    @property
    def now(self) -> Callable[[], datetime]: ...


def plan_findings(
    ctx: Preflighting,
    doc: Document,
    plan: PreflightPlan,
    *,
    lease_seconds: float,
    why: str,
    staging_key: str | None = None,
    staging: Callable[[], BackupStore] | None = None,
    deltas: Sequence[str] = (),
    check_backup: bool = True,
) -> list[Finding]:
    """:func:`runbook_findings` of a runbook's context and document (its cluster, execution and the
    backup ``backup_id`` it relies on; not read when ``check_backup`` is False: a volume backup in EBS)."""
    return runbook_findings(
        ctx.compute,
        plan,
        ctx.backup_target,
        str(doc["backup_id"]),
        ctx.state,
        cluster=doc["cluster"],
        execution=doc["execution"],
        lease_seconds=lease_seconds,
        now=ctx.now(),
        why=why,
        staging_key=staging_key,
        staging=staging,
        deltas=deltas,
        check_backup=check_backup,
    )


def passed(ctx: Preflighting, doc: Document, runbook: str, findings: list[Finding], started: float) -> Document:
    """The end of every preflight step: :class:`PreflightFailedError` of ``runbook`` listing the
    findings, or the document with the time it passed."""
    if findings:
        raise PreflightFailedError(runbook, findings)
    return timed({**doc, "preflight": {"passed_at": ctx.now().isoformat()}}, "preflight", started)


def runbook_findings(
    compute: ComputeProvider,
    plan: PreflightPlan,
    backup_target: Callable[[], tuple[BackupStore, KeyProvider]],
    backup_id: str,
    state: LockStore,
    *,
    cluster: str,
    execution: str,
    lease_seconds: float,
    now: datetime,
    why: str,
    staging_key: str | None = None,
    staging: Callable[[], BackupStore] | None = None,
    deltas: Sequence[str] = (),
    check_backup: bool = True,
) -> list[Finding]:
    """Every finding of a runbook's preflight: its hosts (``plan``), the backup ``backup_id`` it relies on
    (``why``), the deltas it replays after it (a point in time), the staging object it will write
    (``staging_key``, if any, in ``staging``, by default the backup store) and its lock."""
    findings = compute.preflight(plan)
    try:
        store, keyring = backup_target()
    except ConfigError as exc:
        findings.append(
            Finding(
                "backup",
                "backup configuration",
                f"cannot be opened: {exc}.",
                "correct the backup section of the cluster configuration.",
            )
        )
    else:
        if check_backup:
            findings += backup_findings(store, keyring, backup_id, cluster, why=why)
        findings += delta_findings(store, keyring, deltas, cluster)
        if staging_key is not None:
            findings += staging_findings(staging() if staging is not None else store, staging_key)
    findings += lock_findings(state, cluster, execution, lease_seconds, now)
    return findings


def lock_findings(state: LockStore, cluster: str, owner: str, lease_seconds: float, now: datetime) -> list[Finding]:
    """The operation lock is still ``owner``'s: its lease is extended (a write to the state table)."""
    subject = f"operation lock of cluster {cluster}"
    try:
        state.renew_lock(cluster, owner, lease_seconds, now)
    except LockLostError as exc:
        return [
            Finding(
                "state",
                subject,
                f"is no longer this runbook's ({exc}); another operation may be changing the cluster.",
                "let the other operation finish (etcdops runbook list), then start this runbook again.",
            )
        ]
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code not in _DENIED:
            raise
        return [
            Finding(
                "state",
                subject,
                f"cannot be written: the state table refused it ({code}).",
                "allow dynamodb:UpdateItem on the state table to the RunbookStep role.",
            )
        ]
    return []


def backup_findings(
    store: BackupStore, keyring: KeyProvider, backup_id: str, cluster: str, *, why: str
) -> list[Finding]:
    """The backup ``backup_id`` is there and its header opens with ``keyring`` (no content is decrypted)."""
    from etcdops.app.backup.verify import check_readable
    from etcdops.domain.backup.errors import (
        BackupError,
        BackupNotFoundError,
        DecryptionError,
        StorePermissionError,
    )

    subject = f"backup {backup_id} in {store.uri}"
    try:
        check_readable(store, keyring, backup_id, cluster=cluster)
    except BackupError as exc:
        if exc.retryable:
            raise
        if isinstance(exc, BackupNotFoundError):
            fix = "choose a backup that exists (etcdops backup list)."
        elif isinstance(exc, DecryptionError):
            fix = (
                f"allow kms:Decrypt on {keyring.key_id} to the RunbookStep role, or set backup.encryption_key to "
                "the key the backup was made with."
            )
        elif isinstance(exc, StorePermissionError):
            fix = f"allow s3:GetObject on {store.uri}/* to the RunbookStep role."
        else:
            fix = "choose another backup (etcdops backup list), or verify this one: etcdops backup verify ID."
        return [Finding("backup", subject, f"cannot be read, but the runbook {why}: {exc}.", fix)]
    return []


def delta_findings(store: BackupStore, keyring: KeyProvider, deltas: Sequence[str], cluster: str) -> list[Finding]:
    """Every delta a point-in-time restore replays is still there and whole: read again and checked against its
    manifest as ValidateBackup did (an approval can wait long enough for retention or a person to remove one)."""
    from etcdops.app.backup.catalogue import load_delta_manifest
    from etcdops.app.backup.delta import read_delta
    from etcdops.domain.backup.errors import BackupError

    for delta_id in deltas:
        try:
            read_delta(store, keyring, load_delta_manifest(store, delta_id), cluster)
        except BackupError as exc:
            if exc.retryable:
                raise
            subject = f"delta {delta_id} in {store.uri}"
            return [
                Finding(
                    "backup",
                    subject,
                    f"cannot be read since the restore was validated, but the runbook replays it: {exc}.",
                    "start the restore again: it picks a point in time whose deltas are all there "
                    "(etcdops backup list).",
                )
            ]
    return []


def staging_findings(store: BackupStore, key: str) -> list[Finding]:
    """The plain snapshot can be staged in ``store``: an object can be written, listed and deleted under
    ``key`` (a small probe, removed at once)."""
    from etcdops.domain.backup.errors import BackupError

    prefix = key.rpartition("/")[0]
    try:
        store.delete(key)  # a probe left by an earlier try
        store.put_bytes(key, b"etcdops preflight: this object is deleted at once\n")
        store.list(f"{prefix}/")  # the staging step removes what crashed tries left there
        store.delete(key)
    except BackupError as exc:
        if exc.retryable:
            raise
        return [
            Finding(
                "backup",
                f"restore staging location {store.uri}",
                f"cannot be written, but the runbook stages the plain snapshot there for the hosts: {exc}.",
                f"allow s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on {store.uri_for(prefix)}/* "
                "to the RunbookStep role (and kms:GenerateDataKey and kms:Decrypt on the bucket's key).",
            )
        ]
    return []


def binary_findings(compute: ComputeProvider, names: Sequence[str], versions: Sequence[str]) -> list[Finding]:
    """Every host of ``names`` has the etcd binaries of each of ``versions`` (an upgrade's target, and the
    versions it may roll back to), asked with SwapEtcdBinary's check-only mode."""
    hosts = [host for host in (compute.find(name) for name in names) if host is not None]
    findings: list[Finding] = []
    for version in versions:
        try:
            compute.run_action("swap-etcd-binary", hosts, {"version": version, "check_only": "true"})
        except HostCommandFailedError as exc:
            failed = [(h.name, h.output.strip()) for h in (exc.result.failed if exc.result else ())]
            for name, output in failed or [("the member hosts", str(exc))]:
                findings.append(
                    Finding(
                        "host-command",
                        f"etcd {version} on {name}",
                        f"is not available: {output or exc}.",
                        f"install etcd {version} in /opt/etcd/{version}/ on every member host (see the host contract).",
                    )
                )
    return findings
