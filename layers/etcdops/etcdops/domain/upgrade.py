"""The upgrade path: which etcd version changes a rolling upgrade may make, with which gates, and in
which order the members go (followers first, the leader last).

Pure: the UpgradeCluster runbook's preflight gives it what it observed (each member's server
version, whether auth is on) and gets back the path or every reason to refuse it at once. The rules
are etcd's documented ones:

* one step at a time: a newer patch of the same minor, or the next minor; never a downgrade, never
  a skipped minor (3.4 -> 3.6 goes through 3.5), never another major;
* only minors whose upgrade gates etcdops knows (3.4, 3.5, 3.6): an unknown version changes nothing;
* 3.4 -> 3.5 is not a supported rolling upgrade with auth enabled;
* 3.5 -> 3.6 needs every member on 3.5.26 or later first (earlier 3.5 members can leave zombie
  members behind), and two gates on the hosts: ``etcdutl check v2store`` passes and no member runs
  with ``--enable-v2``;
* a cluster already mixed may only go on to the same target: members on the target are skipped,
  every other member must be on one and the same version (else the earlier upgrade is finished or
  rolled back first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from etcdops.domain.errors import UpgradeRefusedError
from etcdops.domain.health import ClusterHealth, MemberHealth

KNOWN_MINORS = ((3, 4), (3, 5), (3, 6))
"""The minor versions whose upgrade gates etcdops knows."""
ZOMBIE_FIX = (3, 5, 26)
"""The first 3.5 patch from which a 3.5 -> 3.6 upgrade is safe (no zombie members)."""

_VERSION = re.compile(r"^v?(\d{1,4})\.(\d{1,4})\.(\d{1,4})$")


@dataclass(frozen=True, order=True)
class EtcdVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> EtcdVersion | None:
        """``3.5.30`` (or ``v3.5.30``); None for anything else."""
        match = _VERSION.match(text.strip()) if isinstance(text, str) else None
        return cls(*(int(part) for part in match.groups())) if match else None

    @property
    def line(self) -> tuple[int, int]:
        return self.major, self.minor

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class Gate:
    """Something the preflight must check on the hosts before this path may start."""

    name: str
    check: str  # what must hold, and how it is checked


V2STORE_CLEAN = Gate("v2store-clean", "`etcdutl check v2store` passes on every member's data directory")
NO_ENABLE_V2 = Gate("no-enable-v2", "no member runs with --enable-v2 (etcd 3.6 refuses to start with it)")


@dataclass(frozen=True)
class UpgradePath:
    source: EtcdVersion  # the version of the members still to upgrade
    target: EtcdVersion
    kind: Literal["patch", "minor", "none"]  # none: every member runs the target already
    gates: tuple[Gate, ...] = ()


def _versions(member_versions: Sequence[str | None], reasons: list[str]) -> list[EtcdVersion]:
    parsed: list[EtcdVersion] = []
    for number, text in enumerate(member_versions, 1):
        version = EtcdVersion.parse(text or "")
        if version is None:
            reasons.append(f"member {number} reports no usable version ({text!r}): is every member healthy?")
        else:
            parsed.append(version)
    return parsed


def _step_reasons(source: EtcdVersion, target: EtcdVersion, auth_enabled: bool) -> list[str]:
    """Why going from ``source`` to ``target`` in one step is refused (empty: allowed)."""
    if target < source:
        return [
            f"{source} -> {target} is a downgrade, which an upgrade never does (invariant 16: going back by "
            "swapping binaries works only while the cluster is still mixed)"
        ]
    if target.major != source.major:
        return [f"{source} -> {target} changes the major version"]
    if target.minor > source.minor + 1:
        step = f"{source.major}.{source.minor + 1}"
        return [f"{source} -> {target} skips a minor version: upgrade to the newest {step}.x first"]
    if target.minor == source.minor + 1:
        if source.line == (3, 4) and auth_enabled:
            return [f"{source} -> {target} is not a supported rolling upgrade with auth enabled"]
        if source.line == (3, 5) and (source.major, source.minor, source.patch) < ZOMBIE_FIX:
            fix = ".".join(map(str, ZOMBIE_FIX))
            return [f"{source} -> {target} needs every member on {fix} or later first (zombie members)"]
    return []


def plan_path(member_versions: Sequence[str | None], target: str, *, auth_enabled: bool) -> UpgradePath:
    """The path from the members' versions to ``target``, or :class:`UpgradeRefusedError` with
    every reason it is refused."""
    reasons: list[str] = []
    wanted = EtcdVersion.parse(target)
    if wanted is None:
        raise UpgradeRefusedError([f"unknown version {target!r}: expected MAJOR.MINOR.PATCH, e.g. 3.5.30"])
    if wanted.line not in KNOWN_MINORS:
        known = ", ".join(f"{major}.{minor}" for major, minor in KNOWN_MINORS)
        reasons.append(f"unknown version {wanted}: etcdops knows the upgrade gates of {known} only")
    versions = _versions(member_versions, reasons)
    if not member_versions:
        reasons.append("no members")
    others = sorted({v for v in versions if v != wanted})
    if len(others) > 1:
        listed = ", ".join(map(str, others))
        reasons.append(f"the members run {listed} besides {wanted}: finish or roll back the earlier upgrade first")
    if reasons:
        raise UpgradeRefusedError(reasons)
    if not others:
        return UpgradePath(wanted, wanted, "none")
    source = others[0]
    step = _step_reasons(source, wanted, auth_enabled)
    if step:
        raise UpgradeRefusedError(step)
    if wanted.line == source.line:
        return UpgradePath(source, wanted, "patch")
    gates = (V2STORE_CLEAN, NO_ENABLE_V2) if wanted.line == (3, 6) else ()
    return UpgradePath(source, wanted, "minor", gates)


def refusals(health: ClusterHealth) -> list[str]:
    """Why a cluster is in no state for an upgrade step now (empty: every member healthy, a leader, no alarm)."""
    reasons = [f"member {m.label} is not healthy ({m.error or 'no answer'})" for m in health.members if not m.healthy]
    if not health.leader:
        reasons.append("the cluster has no leader")
    reasons += [f"alarm {a.alarm} is raised on member {a.member_id:x}" for a in health.alarms]
    return reasons


def rollback_refusal(name: str, before: str, target: str, cluster_version: str | None) -> str | None:
    """Why member ``name`` may not go back from ``target`` to ``before`` by swapping binaries now, in one
    line (None: it may). Invariant 16: only while the cluster version is still below the target's minor
    (a mixed cluster runs at the lowest version); once it moved, the data files are the newer minor's."""
    old, new = EtcdVersion.parse(before), EtcdVersion.parse(target)
    text = cluster_version or ""
    moved = EtcdVersion.parse(f"{text}.0" if text.count(".") == 1 else text)  # etcd says 3.5.0; 3.5 read alike
    if old is None or new is None or old.line == new.line or moved is None or moved.line < new.line:
        return None
    return (
        f"member {name} cannot go back to etcd {before}: the cluster version is {cluster_version} already, and "
        f"invariant 16 allows going back by swapping binaries only while it is below {new.major}.{new.minor}; "
        "nothing was changed (restore from the backup to go back)"
    )


def upgrade_order(health: ClusterHealth, target: EtcdVersion) -> list[MemberHealth]:
    """The members still to upgrade, in the order they go: learners, then followers (by name), the
    leader last (its leadership moved away first, so the cluster elects once)."""

    def rank(member: MemberHealth) -> tuple[int, str, int]:
        role = 0 if member.is_learner else 2 if member.id == health.leader else 1
        return role, member.name, member.id

    return sorted((m for m in health.members if EtcdVersion.parse(m.version or "") != target), key=rank)


# ---- the runbook's report (from its execution document) --------------------------------------


def report(doc: Mapping[str, Any]) -> str:
    """UpgradeCluster's report from its document: each member's version before and after, with its
    timings, and where the cluster version went."""
    lines = []
    upgraded = {u["name"]: u for u in doc.get("upgraded") or []}
    current = doc.get("current") or {}
    for name, member in sorted((doc.get("members") or {}).items()):
        if name in upgraded:
            u = upgraded[name]
            role = " (the leader; leadership moved to {})".format(u["leadership_moved_to"]) if u["was_leader"] else ""
            lines.append(
                f"  {name}: {u['before']} -> {u['after']} in {u['seconds']} s, down {u['down_seconds']} s{role}; "
                f"cluster version then {u['cluster_version']}"
            )
        elif name == current.get("name"):
            back = current.get("rolled_back_to")
            outcome = f"rolled back to {back}" if back else "NOT rolled back"
            took = current.get("seconds")
            lines.append(f"  {name}: {member['before']} -> failed on {doc.get('version')}, {outcome} after {took} s")
        else:
            lines.append(f"  {name}: {member['before']}, not upgraded")
    before, after = doc.get("cluster_version_before"), doc.get("cluster_version_after")
    lines.append(f"  cluster version: {before} before" + (f", {after} after" if after else ""))
    return "\n".join(lines)


def summary(doc: Mapping[str, Any]) -> str:
    """A finished UpgradeCluster in one line (``runbook show``): each member's version before and after,
    and where the cluster version went."""
    target = doc.get("version")
    if doc.get("nothing_to_do"):
        return f"every member runs etcd {target} already; nothing was upgraded"
    upgraded = {u["name"]: u for u in doc.get("upgraded") or []}
    parts = []
    for name, member in sorted((doc.get("members") or {}).items()):
        done = upgraded.get(name)
        if done is None:
            parts.append(f"{name} on {member['before']} already")
        else:
            led = " (led; went last)" if done.get("was_leader") else ""
            parts.append(f"{name} {done['before']} -> {done['after']}{led}")
    before, after = doc.get("cluster_version_before"), doc.get("cluster_version_after")
    return f"upgraded to etcd {target}: {', '.join(parts)}; cluster version {before} -> {after}"


def failure_report(doc: Mapping[str, Any]) -> str:
    """Where a failed UpgradeCluster left the cluster, with the report, for the failure message."""
    error = (doc.get("error") or {}).get("Error")
    if error in ("UpgradeRefusedError", "PreflightFailedError", "InvalidRunbookInputError", "LockHeldError") or not (
        doc.get("upgraded") or (doc.get("current") or {}).get("stopped_at")
    ):
        return "Nothing was changed: every member runs the version it ran before."
    current = doc.get("current") or {}
    if current.get("rolled_back_to"):
        state = (
            f"Member {current['name']} was rolled back to {current['rolled_back_to']} and is healthy; the cluster is "
            "healthy and runs mixed versions (it works at the lowest version)."
        )
    elif current.get("name"):
        state = f"Member {current['name']} may be down or on either version: check `etcdops status` now."
    else:
        state = "No member was left stopped."
    return (
        f"{state} No further member was touched.\n{report(doc)}\n"
        "Finish the upgrade (start the runbook again once the cause is fixed) or roll the upgraded members back "
        "while the cluster version is still the old one."
    )
