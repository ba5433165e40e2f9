"""The safety policy: a pure function from what a probe round observed to what etcdops does next.

:func:`decide` takes a :class:`~etcdops.domain.health.ClusterHealth`, the cluster's :class:`History`
(failure streaks, latest verified backup, the operation lock) and a :class:`PolicyConfig`, and
returns a :class:`Decision` that carries its ``reason`` as a sentence for people (SNS messages,
logs, ``etcdops status``). :func:`update_history` folds one probe round into the history first.

Nothing here does I/O or reads the clock: ``now`` is an argument, and the same inputs always give
the same decision (and the same incident id).

The rules, in the words of the safety invariants (docs/design.md):

* **Failed member (invariant 3).** A member counts as failed only when its current probe is
  unhealthy and its failure streak has at least ``failure_threshold`` (K) consecutive failed
  probes with ``last_failed_at - first_failed_at >= failure_window`` (T), or when an EC2 event
  names its instance (stopped, terminated, impaired: ``ec2_failures``).
* **Effective health.** A voter is *healthy* when its probe answered healthy and no EC2 failure
  event names it.
* **Quorum lost (invariant 4).** The observation has no leader (``None`` or ``0``), or fewer
  voters are healthy than the quorum of the voters. A quorum loss never leads to a membership
  change. It is escalated (ESCALATE_QUORUM_LOSS) once it is *confirmed*: it lasted K probes
  spanning T seconds (``History.quorum_loss``), or the failed members alone leave fewer voters
  than a quorum. Until then the decision is WAIT.
* **Replacement (invariant 1).** With ``n`` voters and a failed voter ``t``, let ``H_t`` be the
  number of healthy voters other than ``t``. Replacing ``t`` is remove ``t`` (committed by the
  current ``n``-voter cluster, needing ``quorum_of(n)`` votes) and then add a new member (to the
  ``n - 1``-voter cluster, needing ``quorum_of(n - 1)``). REPLACE_MEMBER is decided only when the
  observation has a leader that is a healthy voter other than ``t`` and
  ``H_t >= max(quorum_of(n), quorum_of(n - 1))``, which is ``H_t >= quorum_of(n)``.
* **One operation at a time (invariant 2).** While the operation lock is held (a lease that has
  not expired at ``now``, or ``lock_held=True``), a decision that would REPLACE or ESCALATE
  becomes WAIT and says what it defers.
* Learners are never replaced here: a failed learner is a NOTIFY. At most one target per
  decision: the voter failed longest (earliest ``first_failed_at``, then the lowest member id).

The package, by concern: ``settings`` (:class:`PolicyConfig`), ``ids`` (incident and notification ids),
``history`` (streaks and :func:`change_safety`), ``notices`` (what a decision tells people),
``escalation`` (a confirmed quorum loss); the decision itself is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from etcdops.domain.decisions import (
    MAX_ATTEMPT_SUFFIX_LENGTH,
    MAX_EXECUTION_NAME_LENGTH,
    MAX_INCIDENT_ID_LENGTH,
    Action,
    BackupRef,
    Decision,
    History,
    LockLike,
    Notification,
    NotificationKind,
    Streak,
)
from etcdops.domain.health import ClusterHealth, MemberHealth
from etcdops.domain.policy.escalation import escalation
from etcdops.domain.policy.history import (
    Safety,
    change_safety,
    has_leader,
    healthy_voters,
    is_confirmed,
    lock_active,
    quorum_lost,
    update_history,
)
from etcdops.domain.policy.ids import incident_id, utc
from etcdops.domain.policy.notices import Failure, even_voters, mixed_versions, notifications
from etcdops.domain.policy.settings import PolicyConfig
from etcdops.domain.wording import count

__all__ = [
    "MAX_ATTEMPT_SUFFIX_LENGTH",
    "MAX_EXECUTION_NAME_LENGTH",
    "MAX_INCIDENT_ID_LENGTH",
    "Action",
    "BackupRef",
    "Decision",
    "History",
    "LockLike",
    "Notification",
    "NotificationKind",
    "PolicyConfig",
    "Safety",
    "Streak",
    "change_safety",
    "decide",
    "incident_id",
    "is_confirmed",
    "update_history",
]


def _progress(streak: Streak | None, config: PolicyConfig) -> str:
    count = streak.count if streak else 0
    span = int(streak.span.total_seconds()) if streak else 0
    return (
        f"{count} of {config.health.failure_threshold} failed probes over {span} s "
        f"of {config.health.failure_window_seconds} s"
    )


def _failures(
    observation: ClusterHealth,
    history: History,
    config: PolicyConfig,
    now: datetime,
    ec2_failures: frozenset[int],
) -> tuple[list[Failure], list[MemberHealth]]:
    """Members failed under invariant 3, longest failed first; and the unconfirmed failing ones."""
    failed: list[Failure] = []
    failing: list[MemberHealth] = []
    for member in observation.members:
        streak = history.streaks.get(member.id)
        if member.id in ec2_failures:
            start = utc(streak.first_failed_at) if streak else now
            failed.append(Failure(member, start, "EC2 reports its instance stopped, terminated or impaired"))
        elif not member.healthy and streak is not None and is_confirmed(streak, config):
            why = f"it failed {streak.count} consecutive probes over {int(streak.span.total_seconds())} s" + (
                f" ({member.error})" if member.error else ""
            )
            failed.append(Failure(member, utc(streak.first_failed_at), why))
        elif not member.healthy:
            failing.append(member)
    failed.sort(key=lambda f: (f.first_failed_at, f.member.id))
    return failed, failing


def _decide_unlocked(
    observation: ClusterHealth,
    history: History,
    config: PolicyConfig,
    cluster: str,
    now: datetime,
    ec2_failures: frozenset[int],
    cert_not_after: Mapping[str, datetime],
    ca_not_after: Mapping[str, datetime],
) -> Decision:
    failed, failing = _failures(observation, history, config, now, ec2_failures)
    failed_voters = [f for f in failed if not f.member.is_learner]
    failed_learners = [f for f in failed if f.member.is_learner]
    notes = (
        *notifications(cluster, observation, history, config, now, failed_learners, cert_not_after, ca_not_after),
        *mixed_versions(cluster, observation, history, config, now),
        *even_voters(cluster, observation, history, now),
    )
    voters = observation.voters
    n = len(voters)
    healthy = healthy_voters(observation, ec2_failures)

    # Invariant 4: quorum lost -> never a membership change; escalate once confirmed.
    if quorum_lost(observation, ec2_failures):
        standing = n - len(failed_voters)  # voters not (yet) confirmed failed
        if is_confirmed(history.quorum_loss, config) or standing < observation.quorum:
            return escalation(cluster, observation, history, ec2_failures, failed_voters, now, notes)
        why = "no leader" if not has_leader(observation) else f"{len(healthy)} of {n} voters healthy"
        return Decision(
            action=Action.WAIT,
            reason=(
                f"Quorum appears lost on cluster {cluster} ({why}, quorum {observation.quorum}); "
                f"confirming before escalating: {_progress(history.quorum_loss, config)}. "
                "No membership change while quorum is lost."
            ),
            cluster=cluster,
            notifications=notes,
        )

    if failed_voters:
        return _replacement(cluster, observation, config, failed_voters, ec2_failures, notes)
    return _watch_or_notify(cluster, observation, history, config, now, failing, healthy, notes)


def _replacement(
    cluster: str,
    observation: ClusterHealth,
    config: PolicyConfig,
    failed_voters: list[Failure],
    ec2_failures: frozenset[int],
    notes: tuple[Notification, ...],
) -> Decision:
    """Invariant 1: the voter failed longest is replaced when that is safe (else WAIT, a guard)."""
    n = len(observation.voters)
    target = failed_voters[0]
    safety = change_safety(observation, target.member.id, ec2_failures)
    needed, leader_ok = safety.needed, safety.leader_ok
    if not safety.safe:
        # Unreachable when quorum holds and the target is failed; kept as a guard (invariant 1).
        return Decision(
            action=Action.WAIT,
            reason=(
                f"Member {target.member.label} of cluster {cluster} has failed ({target.why}), "
                f"but replacing it is not safe now: {safety.others_healthy} healthy voters besides it, "
                f"{needed} needed"
                + ("" if leader_ok else ", and the leader is not a healthy voter other than it")
                + "."
            ),
            cluster=cluster,
            target_member_id=target.member.id,
            target_member_name=target.member.name,
            target_member_label=target.member.label,
            notifications=notes,
        )
    approval = config.approval == "always"
    others = len(failed_voters) - 1
    turn = "its turn" if others == 1 else "their turn"
    more = f" {count(others, 'more failed voter waits', 'more failed voters wait')} {turn}." if others else ""
    return Decision(
        action=Action.REPLACE_MEMBER,
        reason=(
            f"Replace member {target.member.label} of cluster {cluster}: {target.why}. "
            f"It is safe: the leader is up and {safety.others_healthy} other voters are healthy, "
            f"at least the quorum {needed} of the {n}-voter cluster during the change."
            + more
            + (" Waiting for a human approval (approval: always)." if approval else "")
        ),
        cluster=cluster,
        target_member_id=target.member.id,
        target_member_name=target.member.name,
        target_member_label=target.member.label,
        incident_id=incident_id(cluster, "replace", target.first_failed_at, target.member.id),
        requires_approval=approval,
        notifications=notes,
    )


def _watch_or_notify(
    cluster: str,
    observation: ClusterHealth,
    history: History,
    config: PolicyConfig,
    now: datetime,
    failing: list[MemberHealth],
    healthy: tuple[MemberHealth, ...],
    notes: tuple[Notification, ...],
) -> Decision:
    """No voter is confirmed failed: watch the one failing longest, else tell what needs attention, else none."""
    n = len(observation.voters)
    failing_voters = sorted((m for m in failing if not m.is_learner), key=lambda m: m.id)
    if failing_voters:
        watched = min(
            failing_voters,
            key=lambda m: (utc(s.first_failed_at) if (s := history.streaks.get(m.id)) else now, m.id),
        )
        return Decision(
            action=Action.WAIT,
            reason=(
                f"Member {watched.label} of cluster {cluster} is failing "
                f"({_progress(history.streaks.get(watched.id), config)}); not yet declared failed."
            ),
            cluster=cluster,
            target_member_id=watched.id,
            target_member_name=watched.name,
            target_member_label=watched.label,
            notifications=notes,
        )

    if notes:
        kinds = ", ".join(dict.fromkeys(str(n.kind) for n in notes))
        return Decision(
            action=Action.NOTIFY,
            reason=f"Cluster {cluster} keeps quorum; {count(len(notes), 'thing needs', 'things need')} "
            f"attention: {kinds}.",
            cluster=cluster,
            notifications=notes,
        )
    return Decision(
        action=Action.NONE,
        reason=f"Cluster {cluster} is healthy: {len(healthy)} of {n} voting members healthy, leader present.",
        cluster=cluster,
    )


def decide(
    observation: ClusterHealth,
    history: History,
    config: PolicyConfig,
    *,
    cluster: str,
    now: datetime,
    ec2_failures: frozenset[int] = frozenset(),
    lock_held: bool = False,
    cert_not_after: Mapping[str, datetime] | None = None,
    ca_not_after: Mapping[str, datetime] | None = None,
) -> Decision:
    """Decide what to do about one cluster (see the module docstring for the rules).

    ``history`` should already include this observation (:func:`update_history`). ``cluster`` is
    the cluster's name (used in reasons, incident ids and the RestoreCluster input);
    ``ec2_failures`` the member ids whose instances EC2 reports stopped, terminated or impaired;
    ``lock_held`` says an operation is running even if ``history.lock`` does not show it;
    ``cert_not_after`` maps certificate names to their expiry, ``ca_not_after`` the CAs the clients trust.
    """
    now = utc(now)
    decision = _decide_unlocked(
        observation, history, config, cluster, now, frozenset(ec2_failures), cert_not_after or {}, ca_not_after or {}
    )
    locked = lock_held or lock_active(history.lock, now)
    if not locked or decision.action not in (Action.REPLACE_MEMBER, Action.ESCALATE_QUORUM_LOSS):
        return decision
    lock = history.lock if lock_active(history.lock, now) else None
    holder = (
        f"{lock.owner} holds the operation lock until {utc(lock.expires_at).isoformat()}"
        if lock is not None
        else "an operation is running"
    )
    deferred = "replacing" if decision.action is Action.REPLACE_MEMBER else "escalating"
    return replace(
        decision,
        action=Action.WAIT,
        reason=f"Not {deferred} yet: {holder}. Deferred: {decision.reason}",
        requires_approval=False,
        backup_id=None,
        restore_input=None,
    )
