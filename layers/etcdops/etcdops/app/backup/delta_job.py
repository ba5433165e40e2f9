"""One delta run: the changes since the chain's last revision, stored as the chain's next delta; or,
when the chain cannot continue, a fresh full backup that starts a new chain (reported, never silent).

Reading: a watch from the chain's last revision + 1 up to the cluster's current revision (read
first, from a linearizable range), ending at a progress notification or the first event after it
(:meth:`EtcdClient.changes`). A run stores at most :data:`MAX_REVISIONS_PER_DELTA` revisions; the
next run continues from there, so memory stays bounded after a long pause.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.state_delta import DeltaChainStore
from etcdops.app.backup.delta import DeltaTarget, head_problem, store_delta
from etcdops.app.backup.job import run_backup
from etcdops.domain.backup.chain import ChainHead, DeltaPlan, plan_delta_run
from etcdops.domain.backup.delta import DeltaManifest, group_by_revision
from etcdops.domain.backup.manifest import Manifest, cluster_id_text
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import EtcdCompactedError, EtcdError, EtcdUnavailableError
from etcdops.domain.health import ClusterHealth

#: The most revisions one delta holds (a run after a long pause stores the rest in later runs).
MAX_REVISIONS_PER_DELTA = 100_000
#: How long one watch may take to deliver a run's revisions.
WATCH_TIMEOUT_SECONDS = 45.0


@dataclass(frozen=True)
class DeltaRunResult:
    """What one run did. ``broken`` is set when an existing chain ended (a gap): the report."""

    action: Literal["none", "delta", "lost-race", "new-chain"]
    reason: str
    delta: DeltaManifest | None = None
    backup: Manifest | None = None  # the full backup a new chain starts from
    broken: str | None = None
    head: ChainHead | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What the run did, as a document (the CLI's --json, the DeltaBackup function's result)."""
        delta, backup = self.delta, self.backup
        return {
            "action": self.action,
            "reason": self.reason,
            "broken": self.broken,
            "delta_id": delta.id if delta else None,
            "first_revision": delta.first_revision if delta else None,
            "last_revision": delta.last_revision if delta else None,
            "events": delta.events if delta else 0,
            "size_stored": delta.size_stored if delta else 0,
            "backup_id": backup.id if backup else None,
            "warnings": self.warnings,
        }


def _base_revision(backup: Manifest) -> int:
    # an empty keyspace's snapshot holds no key revision (0) while etcd serves it at revision 1,
    # which has no event: the first change is revision 2
    return max(backup.revision, 1)


def run_delta_backup(
    config: ClusterConfig,
    client: EtcdClient,
    health: ClusterHealth,
    store: BackupStore,
    keyring: KeyProvider,
    chains: DeltaChainStore,
    *,
    now: datetime | None = None,
    new_chain: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> DeltaRunResult:
    """Store the next delta of ``config``'s chain, or start a new chain from a fresh full backup (also
    when ``new_chain`` says why someone asks for one: the old chain ends where it is, not broken)."""
    moment = now or datetime.now(UTC)
    live = cluster_id_text(health.cluster_id)
    if live is None:
        raise EtcdUnavailableError(f"no member of {config.name} answered with its cluster id: no delta is taken")
    head = chains.load_chain_head(config.name)
    problem = head_problem(store, keyring, head) if head is not None and head.cluster_id == live else None
    current = client.range(b"\0", count_only=True).revision
    plan = plan_delta_run(head, live, current, problem, new_chain)
    target = DeltaTarget(store, keyring, chains, config.name, config.backup.compression if config.backup else "none")
    if plan.action == "none":
        return DeltaRunResult("none", plan.reason, head=head)
    if plan.action == "delta":
        assert head is not None
        result = _next_delta(client, target, head, plan, moment)
        if result is not None:
            return result
        plan = DeltaPlan("new-chain", _compacted_reason(head))
    broken = plan.reason if head is not None and not plan.asked else None
    if broken:
        log(f"warning: the delta chain of {config.name} ends at revision {head.last_revision if head else 0}: {broken}")
    backup = run_backup(config, client, health, store, keyring, now=moment, log=log).manifest
    base = _base_revision(backup)
    new = ChainHead(config.name, backup.id, live, base, base, None, moment)
    if not chains.move_chain_head(head, new):
        return DeltaRunResult("lost-race", "another run moved the chain head first", backup=backup, broken=broken)
    return DeltaRunResult("new-chain", plan.reason, backup=backup, broken=broken, head=new)


def _next_delta(
    client: EtcdClient, target: DeltaTarget, head: ChainHead, plan: DeltaPlan, now: datetime
) -> DeltaRunResult | None:
    """Store ``plan``'s revisions; None when the start revision is compacted (the chain must end)."""
    last = min(plan.last, plan.first + MAX_REVISIONS_PER_DELTA - 1)
    try:
        events = client.changes(plan.first, last, timeout=WATCH_TIMEOUT_SECONDS)
    except EtcdCompactedError:
        return None
    revisions = group_by_revision(events)
    got = [rev for rev, _ in revisions]
    if got != list(range(plan.first, last + 1)):
        shown = f"{got[0]}..{got[-1]} ({len(got)} revisions)" if got else "none"
        raise EtcdError(f"the watch from revision {plan.first} to {last} returned revisions {shown}; nothing stored")
    manifest = store_delta(target, head, revisions, now)
    if manifest is None:
        return DeltaRunResult("lost-race", f"another run stored revisions from {plan.first} first")
    return DeltaRunResult("delta", plan.reason, delta=manifest, head=head)


def _compacted_reason(head: ChainHead) -> str:
    return (
        f"revision {head.last_revision + 1}, where the chain continues, was compacted before a delta run read it "
        "(its changes are lost to deltas; the new chain starts from a full backup)"
    )
