"""Delta chains as pure decisions: what the next delta run does, what a store's deltas cover, which
full backup and deltas a point-in-time restore uses, and which deltas retention may delete.

No I/O and no clock: the callers read the chain head (state store), the manifests (backup store) and
the cluster's revision, and pass them in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from etcdops.domain.backup.delta import DeltaManifest
from etcdops.domain.errors import UsageError


@dataclass(frozen=True)
class ChainHead:
    """Where a cluster's delta chain ends, as the state store keeps it (moved by conditional writes only)."""

    cluster: str
    chain_id: str  # the full backup the chain started from
    cluster_id: str
    base_revision: int
    last_revision: int  # the last revision a stored delta holds (base_revision before the first)
    last_delta: str | None  # the id of that delta (None before the first)
    updated_at: datetime


@dataclass(frozen=True)
class DeltaPlan:
    """What one delta run does: nothing, store revisions ``first..last``, or start a new chain."""

    action: Literal["none", "delta", "new-chain"]
    reason: str
    first: int = 0
    last: int = 0
    asked: bool = False  # a new chain someone asked for (not a break of the chain)


def plan_delta_run(
    head: ChainHead | None,
    live_cluster_id: str,
    current_revision: int,
    head_problem: str | None = None,
    new_chain: str | None = None,
) -> DeltaPlan:
    """The next step of the chain of a cluster whose members answer with ``live_cluster_id`` at
    ``current_revision``. ``head_problem`` says why the head's delta cannot be read (missing,
    corrupt), if it cannot: the chain is broken then and starts again. ``new_chain``: why someone asks
    for a new chain although this one could go on (a break inside it that only a verification sees)."""
    if head is None:
        return DeltaPlan("new-chain", "no delta chain yet")
    if head.cluster_id != live_cluster_id:
        return DeltaPlan(
            "new-chain", f"the cluster id changed from {head.cluster_id} to {live_cluster_id} (a new incarnation)"
        )
    if head_problem is not None:
        return DeltaPlan("new-chain", f"the chain's newest delta {head.last_delta} {head_problem}")
    if new_chain is not None:
        return DeltaPlan("new-chain", new_chain, asked=True)
    if current_revision < head.last_revision:
        return DeltaPlan(
            "new-chain",
            f"the cluster is at revision {current_revision}, behind the chain's {head.last_revision} (restored?)",
        )
    if current_revision == head.last_revision:
        return DeltaPlan("none", f"no write since revision {head.last_revision}")
    return DeltaPlan("delta", "the chain continues", head.last_revision + 1, current_revision)


# ---- what a store's deltas cover --------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """One chain as the store holds it: the deltas that follow its base without a gap, and the rest."""

    chain_id: str
    cluster_id: str
    base_revision: int
    deltas: tuple[DeltaManifest, ...]  # contiguous from base_revision + 1, in order
    stray: tuple[DeltaManifest, ...] = ()  # after a gap or overlapping: not usable from this base
    gap_at: int | None = None  # the first revision missing, when stray deltas follow a gap

    @property
    def last_revision(self) -> int:
        return self.deltas[-1].last_revision if self.deltas else self.base_revision

    @property
    def last_time(self) -> datetime | None:
        return self.deltas[-1].created_at if self.deltas else None

    @property
    def first_time(self) -> datetime | None:
        return self.deltas[0].created_at if self.deltas else None


def build_chains(manifests: Iterable[DeltaManifest]) -> list[Chain]:
    """The store's deltas grouped into chains (oldest chain first), each split where it breaks."""
    by_chain: dict[str, list[DeltaManifest]] = {}
    for manifest in manifests:
        by_chain.setdefault(manifest.chain_id, []).append(manifest)
    chains = []
    for chain_id, members in sorted(by_chain.items()):
        members.sort(key=lambda m: (m.first_revision, m.id))
        expected = members[0].base_revision + 1
        linked: list[DeltaManifest] = []
        stray: list[DeltaManifest] = []
        gap_at = None
        for manifest in members:
            if not stray and manifest.first_revision == expected:
                linked.append(manifest)
                expected = manifest.last_revision + 1
            else:
                if not stray and manifest.first_revision > expected:
                    gap_at = expected
                stray.append(manifest)
        chains.append(
            Chain(chain_id, members[0].cluster_id, members[0].base_revision, tuple(linked), tuple(stray), gap_at)
        )
    return chains


def chain_breaks(chain: Chain, missing_objects: Collection[str] = ()) -> list[str]:
    """What breaks ``chain`` by its manifests alone, or nothing: a gap (a deleted or never stored delta),
    deltas overlapping it, a delta of another cluster id, a manifest whose object is gone
    (``missing_objects``: ids of manifests without an object). A point-in-time restore cannot go past
    the first break."""
    problems = []
    if chain.gap_at is not None:
        problems.append(
            f"revision {chain.gap_at} is in no delta (a delta deleted or never stored): the chain ends at "
            f"{chain.last_revision}, {len(chain.stray)} deltas after the gap cannot be replayed"
        )
    elif chain.stray:
        problems.append(f"{len(chain.stray)} deltas overlap the chain: {', '.join(d.id for d in chain.stray)}")
    everything = (*chain.deltas, *chain.stray)
    for delta in everything:
        if delta.cluster_id != chain.cluster_id:
            problems.append(f"delta {delta.id} is of cluster id {delta.cluster_id}, the chain of {chain.cluster_id}")
    gone = sorted({d.id for d in everything} & set(missing_objects))
    if gone:
        problems.append(f"the objects of {len(gone)} deltas are missing: {', '.join(gone)}")
    return problems


# ---- point-in-time restore ------------------------------------------------------------------------


@dataclass(frozen=True)
class FullBackupRef:
    """What the choice needs of a full backup (its manifest holds more)."""

    id: str
    cluster_id: str
    revision: int
    created_at: datetime
    verified: bool


@dataclass(frozen=True)
class PointInTime:
    """A full backup and the deltas that bring it to ``target_revision``."""

    backup: FullBackupRef
    target_revision: int
    deltas: tuple[DeltaManifest, ...] = field(default=())  # in order; the first may start before the backup

    @property
    def replayed_revisions(self) -> int:
        return self.target_revision - self.backup.revision


def _covering(chains: Sequence[Chain], backup: FullBackupRef, target: int) -> tuple[DeltaManifest, ...] | None:
    """The deltas of one chain of ``backup``'s cluster covering ``backup.revision + 1 .. target``, or None."""
    if target == backup.revision:
        return ()
    for chain in chains:
        if chain.cluster_id != backup.cluster_id or chain.base_revision > backup.revision:
            continue
        if chain.last_revision < target:
            continue
        needed = tuple(d for d in chain.deltas if d.last_revision > backup.revision and d.first_revision <= target)
        if needed and needed[0].first_revision <= backup.revision + 1:
            return needed
    return None


def choose_point_in_time(
    backups: Iterable[FullBackupRef], chains: Sequence[Chain], target_revision: int | None
) -> PointInTime:
    """The newest verified full backup at or before ``target_revision`` whose chain covers the way to
    it, with those deltas; ``None`` is the newest revision any chain covers (``--latest``)."""
    verified = sorted((b for b in backups if b.verified), key=lambda b: (b.revision, b.created_at), reverse=True)
    if not verified:
        raise UsageError("no verified full backup to start a point-in-time restore from")
    if target_revision is None:
        target_revision = max([c.last_revision for c in chains] + [verified[0].revision])
    if target_revision < 1:
        raise UsageError(f"revision {target_revision} is not a revision (they start at 1)")
    for backup in verified:
        if backup.revision > target_revision:
            continue
        deltas = _covering(chains, backup, target_revision)
        if deltas is not None:
            return PointInTime(backup, target_revision, deltas)
    covered = ", ".join(
        f"{c.base_revision + 1}..{c.last_revision}" for c in chains if c.deltas
    ) or "none"  # fmt: skip
    raise UsageError(
        f"no verified full backup and unbroken delta chain reach revision {target_revision} "
        f"(full backups at revisions {', '.join(str(b.revision) for b in reversed(verified))}; chains cover {covered})"
    )


def revision_at_time(chains: Sequence[Chain], backups: Iterable[FullBackupRef], at: datetime) -> int:
    """The newest revision known to be written at or before ``at``: the last revision of the newest
    delta (or verified full backup) made by then. A delta run started at ``created_at`` holds only
    revisions written before it, so this never includes a write after ``at``."""
    candidates = [d.last_revision for c in chains for d in c.deltas if d.created_at <= at]
    candidates += [b.revision for b in backups if b.verified and b.created_at <= at]
    if not candidates:
        raise UsageError(f"no backup or delta was made at or before {at.isoformat()}")
    return max(candidates)


# ---- retention ------------------------------------------------------------------------------------


def deltas_to_delete(deltas: Iterable[DeltaManifest], kept_backups: Iterable[FullBackupRef]) -> list[str]:
    """The deltas no kept full backup needs: a delta is kept while some kept backup of its cluster
    is older than its last revision (a restore from that backup replays it), else deleted."""
    oldest: dict[str, int] = {}
    for backup in kept_backups:
        oldest[backup.cluster_id] = min(oldest.get(backup.cluster_id, backup.revision), backup.revision)
    return sorted(
        d.id for d in deltas if d.cluster_id not in oldest or d.last_revision <= oldest[d.cluster_id]
    )  # fmt: skip
