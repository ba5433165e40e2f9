"""The safety policy: examples for each action, and properties for the safety invariants 1-4."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from builders import cluster, member
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcdops.domain.config import HealthConfig, parse_config
from etcdops.domain.decisions import DeltaChainRef
from etcdops.domain.errors import ConfigError
from etcdops.domain.health import Alarm, ClusterHealth, MemberHealth, quorum_of
from etcdops.domain.policy import (
    Action,
    BackupRef,
    Decision,
    History,
    NotificationKind,
    PolicyConfig,
    Streak,
    decide,
    incident_id,
    update_history,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
CLUSTER = "prod-etcd"
EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
FRESH_BACKUP = BackupRef("bk-20240501T1130Z", T0 - timedelta(minutes=30))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def history(
    streaks: dict[int, Streak] | None = None,
    *,
    backup: BackupRef | None = FRESH_BACKUP,
    quorum_loss: Streak | None = None,
    lock: FakeLock | None = None,
) -> History:
    return History(streaks=streaks or {}, quorum_loss=quorum_loss, latest_backup=backup, lock=lock)


@dataclass(frozen=True)
class FakeLock:
    owner: str
    expires_at: datetime


CONFIRMED = Streak(at(-60), at(0), 3)  # 3 probes over 60 s: the defaults exactly
CONFIG = PolicyConfig()


# ---- NONE ---------------------------------------------------------------------------------


def test_healthy_cluster_needs_nothing() -> None:
    # Given three healthy voters with a leader and a fresh verified backup
    obs = cluster(member(1), member(2), member(3))
    # When the policy decides
    decision = decide(obs, history(), CONFIG, cluster=CLUSTER, now=T0)
    # Then nothing is done, and the reason says why
    assert decision.action is Action.NONE
    assert "healthy" in decision.reason
    assert decision.incident_id is None and decision.notifications == ()


# ---- REPLACE_MEMBER -----------------------------------------------------------------------


def test_confirmed_failed_voter_is_replaced() -> None:
    # Given member 3 failed 3 consecutive probes spanning 60 s, the others healthy with a leader
    obs = cluster(member(1), member(2), member(3, healthy=False))
    # When the policy decides
    decision = decide(obs, history({3: CONFIRMED}), CONFIG, cluster=CLUSTER, now=T0)
    # Then member 3 is replaced automatically, under an incident id derived from the streak start
    assert decision.action is Action.REPLACE_MEMBER
    assert (decision.target_member_id, decision.target_member_name) == (3, "etcd-3")
    assert decision.requires_approval is False
    assert decision.incident_id == incident_id(CLUSTER, "replace", CONFIRMED.first_failed_at, 3)
    assert EXECUTION_NAME.match(decision.incident_id)
    assert "etcd-3" in decision.reason and "3 consecutive probes" in decision.reason


def test_replacement_waits_for_approval_when_policy_says_always() -> None:
    # Given approval: always
    config = PolicyConfig(approval="always")
    obs = cluster(member(1), member(2), member(3, healthy=False))
    # When a replacement is decided
    decision = decide(obs, history({3: CONFIRMED}), config, cluster=CLUSTER, now=T0)
    # Then it requires a human approval
    assert decision.action is Action.REPLACE_MEMBER
    assert decision.requires_approval is True
    assert "approval" in decision.reason


def test_ec2_event_declares_failure_without_waiting_for_probes() -> None:
    # Given EC2 reports member 2's instance terminated, before any failed probe
    obs = cluster(member(1), member(2, healthy=False), member(3))
    ec2 = frozenset({2})
    hist = update_history(history(), obs, T0, ec2)
    # When the policy decides
    decision = decide(obs, hist, CONFIG, cluster=CLUSTER, now=T0, ec2_failures=ec2)
    # Then member 2 is replaced at once
    assert decision.action is Action.REPLACE_MEMBER
    assert decision.target_member_id == 2
    assert "EC2" in decision.reason


def test_ec2_failure_counts_a_probe_healthy_member_as_down() -> None:
    # Given a 3-member cluster where EC2 says member 2 is impaired although its probe answered
    obs = cluster(member(1), member(2), member(3))
    ec2 = frozenset({2})
    # When the policy decides
    decision = decide(obs, update_history(history(), obs, T0, ec2), CONFIG, cluster=CLUSTER, now=T0, ec2_failures=ec2)
    # Then member 2 is replaced (2 healthy others >= quorum 2 of 3)
    assert decision.action is Action.REPLACE_MEMBER
    assert decision.target_member_id == 2


def test_longest_failed_voter_is_the_one_target() -> None:
    # Given a 5-member cluster with two confirmed failed voters, 4 failing longer than 5
    obs = cluster(member(1), member(2), member(3), member(4, healthy=False), member(5, healthy=False))
    streaks = {5: CONFIRMED, 4: Streak(at(-300), at(0), 11)}
    # When the policy decides
    decision = decide(obs, history(streaks), CONFIG, cluster=CLUSTER, now=T0)
    # Then only member 4 is replaced now (3 healthy others >= quorum 3 of 5)
    assert decision.action is Action.REPLACE_MEMBER
    assert decision.target_member_id == 4
    assert "1 more failed voter waits its turn." in decision.reason


def test_leader_that_is_the_failed_member_blocks_replacement() -> None:
    # Given a stale observation naming the failed member as leader
    obs = cluster(member(1), member(2), member(3, healthy=False), leader=3)
    # When the policy decides
    decision = decide(obs, history({3: CONFIRMED}), CONFIG, cluster=CLUSTER, now=T0)
    # Then it waits for a healthy leader instead of changing membership
    assert decision.action is Action.WAIT
    assert "leader" in decision.reason


# ---- WAIT ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "streak",
    [
        Streak(at(-59), at(0), 3),  # enough probes, not enough time
        Streak(at(-600), at(0), 2),  # enough time, not enough probes
        Streak(at(0), at(0), 1),
    ],
)
def test_unconfirmed_failure_waits(streak: Streak) -> None:
    # Given member 3 failing, but not K probes over T seconds yet
    obs = cluster(member(1), member(2), member(3, healthy=False))
    # When the policy decides
    decision = decide(obs, history({3: streak}), CONFIG, cluster=CLUSTER, now=T0)
    # Then it waits and says how far the streak is
    assert decision.action is Action.WAIT
    assert decision.target_member_id == 3
    assert f"{streak.count} of 3 failed probes" in decision.reason


def test_failure_is_confirmed_over_rounds() -> None:
    # Given probes every 30 s, member 3 down from the first
    obs = cluster(member(1), member(2), member(3, healthy=False))
    hist = history()
    actions = []
    # When four rounds are observed and decided
    for i in range(4):
        hist = update_history(hist, obs, at(30 * i))
        actions.append(decide(obs, hist, CONFIG, cluster=CLUSTER, now=at(30 * i)))
    # Then rounds 1 and 2 wait, round 3 (3 probes over 60 s) replaces, round 4 repeats the same incident
    assert [d.action for d in actions] == [Action.WAIT, Action.WAIT, Action.REPLACE_MEMBER, Action.REPLACE_MEMBER]
    assert actions[2].incident_id == actions[3].incident_id


def test_operation_lock_defers_replacement() -> None:
    # Given a confirmed failure while a runbook holds the lock
    obs = cluster(member(1), member(2), member(3, healthy=False))
    lock = FakeLock("ScaleCluster-prod-1", at(120))
    # When the policy decides
    decision = decide(obs, history({3: CONFIRMED}, lock=lock), CONFIG, cluster=CLUSTER, now=T0)
    # Then it waits, naming the holder and what it defers
    assert decision.action is Action.WAIT
    assert "ScaleCluster-prod-1" in decision.reason and "Replace member" in decision.reason
    assert decision.requires_approval is False


def test_lock_held_flag_defers_replacement() -> None:
    obs = cluster(member(1), member(2), member(3, healthy=False))
    decision = decide(obs, history({3: CONFIRMED}), CONFIG, cluster=CLUSTER, now=T0, lock_held=True)
    assert decision.action is Action.WAIT
    assert "operation is running" in decision.reason


def test_expired_lock_does_not_block() -> None:
    # Given the lock of a crashed runbook whose lease ended
    obs = cluster(member(1), member(2), member(3, healthy=False))
    lock = FakeLock("crashed", at(0))
    # When the policy decides
    decision = decide(obs, history({3: CONFIRMED}, lock=lock), CONFIG, cluster=CLUSTER, now=T0)
    # Then the replacement goes ahead
    assert decision.action is Action.REPLACE_MEMBER


# ---- ESCALATE_QUORUM_LOSS -----------------------------------------------------------------


def test_two_failed_of_three_is_quorum_loss() -> None:
    # Given two of three voters confirmed failed
    obs = cluster(member(1), member(2, healthy=False), member(3, healthy=False))
    # When the policy decides
    decision = decide(obs, history({2: CONFIRMED, 3: CONFIRMED}), CONFIG, cluster=CLUSTER, now=T0)
    # Then it escalates with the latest verified backup and the exact RestoreCluster input
    assert decision.action is Action.ESCALATE_QUORUM_LOSS
    assert decision.backup_id == FRESH_BACKUP.id
    assert decision.restore_input == {"cluster": CLUSTER, "backup_id": FRESH_BACKUP.id, "mode": "in-place"}
    assert FRESH_BACKUP.id in decision.reason and "No automatic membership change" in decision.reason
    assert decision.target_member_id is None
    assert decision.incident_id is not None and EXECUTION_NAME.match(decision.incident_id)


def test_escalation_offers_the_point_in_time_restore_when_a_delta_chain_covers_the_cluster() -> None:
    # Given quorum lost on a cluster whose delta chain was stored 40 s ago
    obs = cluster(member(1), member(2, healthy=False), member(3, healthy=False))
    chain = DeltaChainRef("c1", 5120, T0 - timedelta(seconds=40))
    confirmed = replace(history({2: CONFIRMED, 3: CONFIRMED}), delta_chain=chain)
    # When the policy decides
    decision = decide(obs, confirmed, CONFIG, cluster=CLUSTER, now=T0)
    # Then the page names restore --latest (about a minute lost), and the input says latest instead of a backup
    assert decision.action is Action.ESCALATE_QUORUM_LOSS
    assert decision.restore_input == {"cluster": CLUSTER, "latest": True, "mode": "in-place"}
    assert "`etcdops runbook start restore --latest`" in decision.reason
    assert "up to revision 5120" in decision.reason and "(40 s before this round)" in decision.reason
    assert "at most about 60 s" in decision.reason and '"latest": true' in decision.reason
    # Without a chain the page names the full snapshot restore of the latest verified backup
    plain = decide(obs, history({2: CONFIRMED, 3: CONFIRMED}), CONFIG, cluster=CLUSTER, now=T0)
    assert "No delta chain covers this cluster" in plain.reason
    assert f"`etcdops runbook start restore --backup {FRESH_BACKUP.id}`" in plain.reason


def test_escalation_without_backup_says_so() -> None:
    obs = cluster(member(1), member(2, healthy=False), member(3, healthy=False))
    decision = decide(obs, history({2: CONFIRMED, 3: CONFIRMED}, backup=None), CONFIG, cluster=CLUSTER, now=T0)
    assert decision.action is Action.ESCALATE_QUORUM_LOSS
    assert decision.backup_id is None
    assert decision.restore_input == {"cluster": CLUSTER, "backup_id": None, "mode": "in-place"}
    assert "NO verified backup of this cluster incarnation (cluster id c1)" in decision.reason


def test_when_no_member_answers_no_backup_is_named_and_none_is_said_to_be_missing() -> None:
    # Given no member answered the round, so the live cluster id (the incarnation) is unknown
    obs = cluster(member(1, healthy=False), member(2, healthy=False), member(3, healthy=False), leader=None)
    obs = replace(obs, cluster_id=None)
    lost = history({1: CONFIRMED, 2: CONFIRMED, 3: CONFIRMED}, backup=None)
    # When quorum loss is confirmed
    decision = decide(obs, lost, CONFIG, cluster=CLUSTER, now=T0)
    # Then the escalation names no backup, says why and how to choose one, and no "no backup" notice goes out
    assert decision.action is Action.ESCALATE_QUORUM_LOSS and decision.backup_id is None
    assert "live cluster id is unknown" in decision.reason and "etcdops backup list" in decision.reason
    assert NotificationKind.BACKUP_MISSING not in {n.kind for n in decision.notifications}


def test_escalation_restores_to_new_hosts_when_ec2_says_hosts_are_gone() -> None:
    # Given EC2 reports two of three instances terminated
    obs = cluster(member(1), member(2, healthy=False), member(3, healthy=False), leader=None)
    ec2 = frozenset({2, 3})
    # When the policy decides
    decision = decide(obs, update_history(history(), obs, T0, ec2), CONFIG, cluster=CLUSTER, now=T0, ec2_failures=ec2)
    # Then it escalates at once, restoring onto new hosts
    assert decision.action is Action.ESCALATE_QUORUM_LOSS
    assert decision.restore_input is not None and decision.restore_input["mode"] == "new-hosts"


def test_leaderless_cluster_is_escalated_once_confirmed() -> None:
    # Given no leader seen while every member still answers (an election that does not end)
    obs = cluster(member(1), member(2), member(3), leader=None)
    hist = history()
    decisions = []
    # When rounds every 30 s are decided
    for i in range(4):
        hist = update_history(hist, obs, at(30 * i))
        decisions.append(decide(obs, hist, CONFIG, cluster=CLUSTER, now=at(30 * i)))
    # Then it waits to confirm, then escalates under one stable incident id; never replaces
    assert [d.action for d in decisions] == [
        Action.WAIT,
        Action.WAIT,
        Action.ESCALATE_QUORUM_LOSS,
        Action.ESCALATE_QUORUM_LOSS,
    ]
    assert "Quorum appears lost" in decisions[0].reason
    assert decisions[2].incident_id == decisions[3].incident_id


def test_lock_defers_escalation() -> None:
    # Given a restore runbook holds the lock (members are down on purpose)
    obs = cluster(member(1), member(2, healthy=False), member(3, healthy=False), leader=None)
    lock = FakeLock("RestoreCluster-prod-1", at(600))
    # When the policy decides
    decision = decide(obs, history({2: CONFIRMED, 3: CONFIRMED}, lock=lock), CONFIG, cluster=CLUSTER, now=T0)
    # Then it waits for the operation instead of paging
    assert decision.action is Action.WAIT
    assert decision.restore_input is None
    assert "RestoreCluster-prod-1" in decision.reason


# ---- NOTIFY -------------------------------------------------------------------------------


def test_failed_learner_is_notified_not_replaced() -> None:
    # Given a confirmed failed learner in a healthy cluster
    obs = cluster(member(1), member(2), member(3), member(4, healthy=False, learner=True))
    # When the policy decides
    decision = decide(obs, history({4: CONFIRMED}), CONFIG, cluster=CLUSTER, now=T0)
    # Then people are told; nothing is replaced
    assert decision.action is Action.NOTIFY
    assert [n.kind for n in decision.notifications] == [NotificationKind.LEARNER_FAILED]
    assert decision.notifications[0].member_id == 4


def test_alarms_db_size_certs_and_backup_age_are_notified() -> None:
    # Given NOSPACE and CORRUPT alarms, a db at 85 % of quota, a cert expiring in 10 days, a stale backup
    quota = 1000
    obs = cluster(
        member(1, db_size=850),
        member(2, db_size=799),
        member(3),
        alarms=(Alarm(1, "NOSPACE"), Alarm(2, "CORRUPT")),
    )
    config = PolicyConfig(health=HealthConfig(quota_backend_bytes=quota))
    stale = BackupRef("bk-old", T0 - timedelta(hours=3))
    certs = {"peer-etcd-1": T0 + timedelta(days=10), "client-admin": T0 + timedelta(days=300)}
    # When the policy decides
    decision = decide(obs, history(backup=stale), config, cluster=CLUSTER, now=T0, cert_not_after=certs)
    # Then each one is a notification with a message and a stable key
    assert decision.action is Action.NOTIFY
    kinds = [n.kind for n in decision.notifications]
    assert kinds == [
        NotificationKind.ALARM_CORRUPT,
        NotificationKind.ALARM_NOSPACE,
        NotificationKind.DB_SIZE_HIGH,
        NotificationKind.CERT_EXPIRING,
        NotificationKind.BACKUP_STALE,
    ]
    assert "85 %" in decision.notifications[2].message
    assert "peer-etcd-1" in decision.notifications[3].message
    assert all(EXECUTION_NAME.match(n.key) for n in decision.notifications)
    again = decide(obs, history(backup=stale), config, cluster=CLUSTER, now=at(60), cert_not_after=certs)
    assert [n.key for n in again.notifications] == [n.key for n in decision.notifications]


def test_missing_backup_and_expired_cert_are_notified() -> None:
    obs = cluster(member(1), member(2), member(3))
    decision = decide(
        obs, history(backup=None), CONFIG, cluster=CLUSTER, now=T0, cert_not_after={"ca": T0 - timedelta(days=1)}
    )
    assert {n.kind for n in decision.notifications} == {NotificationKind.CERT_EXPIRED, NotificationKind.BACKUP_MISSING}


def test_an_unreadable_backup_catalogue_is_notified_as_such_not_as_a_missing_backup() -> None:
    # Given HealthCheck could not read the manifests (e.g. no kms:Decrypt on the bucket's key)
    obs = cluster(member(1), member(2), member(3))
    unknown = replace(history(backup=None), backup_unknown="StorePermissionError: AccessDenied")
    # When the policy decides
    decision = decide(obs, unknown, CONFIG, cluster=CLUSTER, now=T0)
    # Then people hear that the catalogue is unreadable (once per key), not that there is no backup
    (notification,) = decision.notifications
    assert notification.kind is NotificationKind.BACKUP_UNREADABLE
    assert "AccessDenied" in notification.message and "KMS" in notification.message
    assert EXECUTION_NAME.match(notification.key)
    again = decide(obs, unknown, CONFIG, cluster=CLUSTER, now=T0 + timedelta(minutes=5))
    assert [n.key for n in again.notifications] == [notification.key]


def test_escalation_with_an_unreadable_catalogue_does_not_claim_there_is_no_backup() -> None:
    obs = cluster(member(1), member(2, healthy=False), member(3, healthy=False))
    unknown = replace(history({2: CONFIRMED, 3: CONFIRMED}, backup=None), backup_unknown="StorePermissionError: x")
    decision = decide(obs, unknown, CONFIG, cluster=CLUSTER, now=T0)
    assert decision.action is Action.ESCALATE_QUORUM_LOSS
    assert decision.restore_input == {"cluster": CLUSTER, "backup_id": None, "mode": "in-place"}
    assert "UNKNOWN" in decision.reason and "NO verified backup" not in decision.reason


def test_notifications_ride_along_with_a_replacement() -> None:
    obs = cluster(member(1), member(2), member(3, healthy=False), alarms=(Alarm(1, "NOSPACE"),))
    decision = decide(obs, history({3: CONFIRMED}), CONFIG, cluster=CLUSTER, now=T0)
    assert decision.action is Action.REPLACE_MEMBER
    assert [n.kind for n in decision.notifications] == [NotificationKind.ALARM_NOSPACE]


# ---- history, ids, config -----------------------------------------------------------------


def test_update_history_extends_resets_and_drops() -> None:
    # Given streaks for members 2 (still failing), 3 (recovered) and 9 (removed from the cluster)
    before = history({2: Streak(at(-30), at(-30), 1), 3: Streak(at(-30), at(-30), 1), 9: CONFIRMED})
    obs = cluster(member(1), member(2, healthy=False), member(3), member(4, healthy=False), member(5))
    # When a round is folded in
    after = update_history(before, obs, T0)
    # Then 2 is extended, 3 reset, 9 dropped, 4 started; backup kept
    assert dict(after.streaks) == {2: Streak(at(-30), T0, 2), 4: Streak(T0, T0, 1)}
    assert after.latest_backup == before.latest_backup
    assert after.quorum_loss is None


def test_update_history_tracks_quorum_loss() -> None:
    obs = cluster(member(1), member(2, healthy=False), member(3, healthy=False))
    h1 = update_history(history(), obs, T0)
    h2 = update_history(h1, obs, at(30))
    assert h2.quorum_loss == Streak(T0, at(30), 2)
    healed = update_history(h2, cluster(member(1), member(2), member(3)), at(60))
    assert healed.quorum_loss is None and dict(healed.streaks) == {}


@pytest.mark.parametrize("name", ["prod-etcd", "a" * 200, "k8s/etcd cluster #1 ✓", "-", "_x_"])
def test_incident_ids_are_valid_execution_names(name: str) -> None:
    first = incident_id(name, "replace", at(0.123456), 2**64 - 1)
    assert EXECUTION_NAME.match(first)
    assert first == incident_id(name, "replace", at(0.123456), 2**64 - 1)
    assert first != incident_id(name, "replace", at(0.123457), 2**64 - 1)
    assert first != incident_id(name, "replace", at(0.123456), 2**64 - 2)
    assert first != incident_id(name + "x", "replace", at(0.123456), 2**64 - 1)


def test_naive_and_aware_utc_times_give_the_same_incident_id() -> None:
    assert incident_id(CLUSTER, "replace", T0, 1) == incident_id(CLUSTER, "replace", T0.replace(tzinfo=None), 1)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"policy\.health\.failure_threshold"):
        PolicyConfig.from_mapping({"health": {"failure_threshold": 0}})
    with pytest.raises(ConfigError, match=r"policy\.approval"):
        PolicyConfig.from_mapping({"approval": "sometimes"})
    with pytest.raises(ConfigError, match=r"policy\.unknown"):
        PolicyConfig.from_mapping({"unknown": 1})
    window = PolicyConfig.from_mapping({"health": {"failure_window_seconds": 30}}).failure_window
    assert window == timedelta(seconds=30)


def test_config_comes_from_the_cluster_document() -> None:
    # Given a cluster document with its health, backup and approval settings
    document = parse_config(
        {
            "name": "prod-eu",
            "endpoints": ["http://127.0.0.1:2379"],
            "plaintext": True,
            "approval": "always",
            "health": {"failure_threshold": 4, "failure_window_seconds": 90, "quota_backend_bytes": 8 * 1024**3},
            "backup": {"destination": "file:///var/backups", "encryption_key": "file:///k.key", "max_age_minutes": 30},
        }
    )
    # When the policy settings are derived from it
    config = PolicyConfig.from_cluster_config(document)
    # Then they carry the document's values
    assert config.health is document.health  # the document's section itself, not a copy of its fields
    assert (config.health.failure_threshold, config.approval) == (4, "always")
    assert config.failure_window == timedelta(seconds=90)
    assert config.health.quota_backend_bytes == 8 * 1024**3
    assert config.backup_max_age == timedelta(minutes=30)


def test_decision_round_trips_through_dict() -> None:
    obs = cluster(member(1), member(2, healthy=False), member(3, healthy=False), alarms=(Alarm(1, "NOSPACE"),))
    decision = decide(obs, history({2: CONFIRMED, 3: CONFIRMED}), CONFIG, cluster=CLUSTER, now=T0)
    assert Decision.from_dict(decision.to_dict()) == decision


# ---- properties: safety invariants 1-4 ----------------------------------------------------

SMALL_IDS = st.integers(min_value=1, max_value=12)
ANY_IDS = st.one_of(SMALL_IDS, st.integers(min_value=1, max_value=2**64 - 1))


@st.composite
def observations(draw: st.DrawFn) -> ClusterHealth:
    ids = draw(st.lists(ANY_IDS, min_size=1, max_size=7, unique=True))
    members = tuple(
        MemberHealth(
            id=i,
            name=draw(st.sampled_from([f"etcd-{k}", "", "node/ä"])),
            client_urls=(),
            peer_urls=(),
            is_learner=draw(st.sampled_from([False, False, False, True])),
            healthy=draw(st.sampled_from([True, True, False])),
            db_size=draw(st.none() | st.integers(min_value=0, max_value=3 * 2**30)),
        )
        for k, i in enumerate(ids)
    )
    if draw(st.booleans()):
        # Degraded but quorate (where replacements happen): a healthy voter leads and at most the
        # quorum margin of voters is down.
        voters = [m for m in members if not m.is_learner]
        down = (
            set(draw(st.lists(st.sampled_from([m.id for m in voters]), max_size=max(0, len(voters) - 1))))
            if voters
            else set()
        )
        keep = len(voters) - quorum_of(len(voters))
        down = set(sorted(down)[:keep])
        members = tuple(replace(m, healthy=m.id not in down) if not m.is_learner else m for m in members)
        up = [m.id for m in members if not m.is_learner and m.healthy]
        leader = draw(st.sampled_from(up)) if up else None
    else:
        leader = draw(st.one_of(st.sampled_from(ids), st.none(), st.just(0), ANY_IDS))
    alarms = tuple(
        draw(st.lists(st.builds(Alarm, st.sampled_from(ids), st.sampled_from(["NOSPACE", "CORRUPT", "X"])), max_size=3))
    )
    return ClusterHealth(cluster_id=1, leader=leader, members=members, alarms=alarms)


def streaks(now: datetime) -> st.SearchStrategy[Streak]:
    return st.builds(
        lambda back, span, count: Streak(now - timedelta(seconds=back), now - timedelta(seconds=back - span), count),
        st.floats(min_value=0, max_value=1000, allow_nan=False),
        st.floats(min_value=0, max_value=1000, allow_nan=False) | st.sampled_from([0.0, 59.0, 60.0, 300.0]),
        st.integers(min_value=1, max_value=8),
    ).map(
        lambda s: s if s.last_failed_at >= s.first_failed_at else Streak(s.first_failed_at, s.first_failed_at, s.count)
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ClusterHealth, History, PolicyConfig, datetime, frozenset[int], bool, str]:
    now = draw(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)))
    obs = draw(observations())
    ids = [m.id for m in obs.members]
    history_ids = set(draw(st.lists(st.sampled_from(ids) | ANY_IDS, max_size=8)))
    failing = [m.id for m in obs.members if not m.healthy]
    if failing:
        history_ids |= set(draw(st.lists(st.sampled_from(failing))))
    confirmed = st.sampled_from(
        [Streak(now - timedelta(seconds=60), now, 3), Streak(now - timedelta(seconds=300), now, 8)]
    )
    member_streaks = {i: draw(streaks(now) | confirmed) for i in sorted(history_ids)}
    lock = draw(
        st.none()
        | st.none()
        | st.builds(
            FakeLock,
            st.sampled_from(["exec-A", "exec-B"]),
            st.integers(min_value=-600, max_value=600).map(lambda s: now + timedelta(seconds=s)),
        )
    )
    backup = draw(
        st.none() | st.builds(BackupRef, st.sampled_from(["bk-1", "bk-2"]), st.just(now - timedelta(hours=1)))
    )
    hist = History(
        streaks=member_streaks,
        quorum_loss=draw(st.none() | streaks(now)),
        latest_backup=backup,
        lock=lock,
    )
    config = PolicyConfig(
        health=HealthConfig(
            failure_threshold=draw(st.integers(min_value=1, max_value=5)),
            failure_window_seconds=draw(st.sampled_from([0, 1, 30, 60, 300])),
        ),
        approval=draw(st.sampled_from(["auto", "always"])),
    )
    ec2 = frozenset(draw(st.lists(st.one_of(st.sampled_from(ids), ANY_IDS), max_size=3)))
    lock_held = draw(st.sampled_from([False, False, False, True]))
    name = draw(st.text(min_size=1, max_size=100))
    return obs, hist, config, now, ec2, lock_held, name


def lock_active(hist: History, lock_held: bool, now: datetime) -> bool:
    return lock_held or (hist.lock is not None and hist.lock.expires_at > now)


def check_invariants(
    decision: Decision,
    obs: ClusterHealth,
    hist: History,
    config: PolicyConfig,
    now: datetime,
    ec2: frozenset[int],
    lock_held: bool,
    name: str,
) -> None:
    # Ids are valid execution names everywhere.
    for key in [decision.incident_id, *(n.key for n in decision.notifications)]:
        assert key is None or EXECUTION_NAME.match(key), key
    assert decision.reason

    if decision.action is Action.REPLACE_MEMBER:
        target = obs.member(decision.target_member_id)  # type: ignore[arg-type]
        assert target is not None and not target.is_learner
        voters = obs.voters
        n = len(voters)
        others_healthy = [v for v in voters if v.id != target.id and v.healthy and v.id not in ec2]
        # Invariant 1: a leader, and enough healthy voters besides the target, before and after removal.
        assert obs.leader not in (None, 0) and obs.leader != target.id
        assert len(others_healthy) >= quorum_of(n - 1)
        assert len(others_healthy) >= quorum_of(n)
        # Invariant 2: never while an operation holds the lock.
        assert not lock_active(hist, lock_held, now)
        # Invariant 3: K probes over T seconds, or an EC2 event.
        streak = hist.streaks.get(target.id)
        assert target.id in ec2 or (
            streak is not None
            and not target.healthy
            and streak.count >= config.health.failure_threshold
            and streak.span >= timedelta(seconds=config.health.failure_window_seconds)
        )
        # Invariant 4: never with quorum lost.
        assert obs.has_quorum
        assert decision.requires_approval == (config.approval == "always")
        start = streak.first_failed_at if streak is not None else now
        assert decision.incident_id == incident_id(name, "replace", start, target.id)
    else:
        assert decision.requires_approval is False

    healthy_voters = [v for v in obs.healthy_voters if v.id not in ec2]
    quorum_lost = obs.leader in (None, 0) or len(healthy_voters) < obs.quorum
    if quorum_lost and not lock_active(hist, lock_held, now):
        assert decision.action in (Action.ESCALATE_QUORUM_LOSS, Action.WAIT)

    # Liveness: a confirmed failed voter in a cluster that keeps quorum with a healthy leader is replaced.
    def failed(m: MemberHealth) -> bool:
        s = hist.streaks.get(m.id)
        window = timedelta(seconds=config.health.failure_window_seconds)
        confirmed = s is not None and s.count >= config.health.failure_threshold and s.span >= window
        return m.id in ec2 or (not m.healthy and confirmed)

    if (
        not quorum_lost
        and not lock_active(hist, lock_held, now)
        and any(failed(v) for v in obs.voters)
        and any(v.id == obs.leader for v in healthy_voters)
    ):
        assert decision.action is Action.REPLACE_MEMBER

    if decision.action is Action.ESCALATE_QUORUM_LOSS:
        assert quorum_lost
        assert not lock_active(hist, lock_held, now)
        expected_backup = hist.latest_backup.id if hist.latest_backup is not None else None
        assert decision.backup_id == expected_backup
        assert decision.restore_input is not None
        assert set(decision.restore_input) == {"cluster", "backup_id", "mode"}
        assert decision.restore_input["cluster"] == name
        assert decision.restore_input["backup_id"] == expected_backup
        assert decision.restore_input["mode"] in ("in-place", "new-hosts")
        if expected_backup is None:
            assert "NO verified backup" in decision.reason
        else:
            assert expected_backup in decision.reason
        assert decision.incident_id is not None
    else:
        assert decision.restore_input is None


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_decision_breaks_the_safety_invariants(
    scenario: tuple[ClusterHealth, History, PolicyConfig, datetime, frozenset[int], bool, str],
) -> None:
    obs, hist, config, now, ec2, lock_held, name = scenario
    decision = decide(obs, hist, config, cluster=name, now=now, ec2_failures=ec2, lock_held=lock_held)
    check_invariants(decision, obs, hist, config, now, ec2, lock_held, name)
    # Deterministic: the same inputs give the same decision.
    assert decide(obs, hist, config, cluster=name, now=now, ec2_failures=ec2, lock_held=lock_held) == decision


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(min_value=1, max_value=120))
def test_invariants_hold_after_update_and_duplicate_triggers_share_the_incident(
    scenario: tuple[ClusterHealth, History, PolicyConfig, datetime, frozenset[int], bool, str],
    later: int,
) -> None:
    # Given the same failure seen by two triggers (schedule and alarm) `later` seconds apart
    obs, prior, config, now, ec2, lock_held, name = scenario
    then = now + timedelta(seconds=later)
    first_history = update_history(prior, obs, now, ec2)
    second_history = update_history(first_history, obs, then, ec2)
    # When each decides
    first = decide(obs, first_history, config, cluster=name, now=now, ec2_failures=ec2, lock_held=lock_held)
    second = decide(obs, second_history, config, cluster=name, now=then, ec2_failures=ec2, lock_held=lock_held)
    # Then both keep the invariants, and the same replacement gets the same incident id
    check_invariants(first, obs, first_history, config, now, ec2, lock_held, name)
    check_invariants(second, obs, second_history, config, then, ec2, lock_held, name)
    if Action.REPLACE_MEMBER == first.action == second.action and first.target_member_id == second.target_member_id:
        assert first.incident_id == second.incident_id
    if Action.ESCALATE_QUORUM_LOSS == first.action == second.action:
        assert first.incident_id == second.incident_id


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_update_history_follows_the_probes(
    scenario: tuple[ClusterHealth, History, PolicyConfig, datetime, frozenset[int], bool, str],
) -> None:
    obs, prior, _config, now, ec2, _lock_held, _name = scenario
    after = update_history(prior, obs, now, ec2)
    observed = {m.id: m for m in obs.members}
    # Only observed members keep streaks; exactly the failing ones (probe or EC2) have one.
    assert set(after.streaks) == {i for i, m in observed.items() if not m.healthy or i in ec2}
    for i, streak in after.streaks.items():
        before = prior.streaks.get(i)
        if before is None:
            assert streak == Streak(now, now, 1)
        else:
            assert streak.first_failed_at == before.first_failed_at
            assert streak.count == before.count + 1
            assert streak.last_failed_at == max(before.last_failed_at, now)
    assert after.latest_backup == prior.latest_backup and after.lock == prior.lock


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_lock_never_lets_a_change_or_page_through(
    scenario: tuple[ClusterHealth, History, PolicyConfig, datetime, frozenset[int], bool, str],
) -> None:
    # Given any situation with a live lock
    obs, hist, config, now, ec2, _lock_held, name = scenario
    locked = replace(hist, lock=FakeLock("exec-running", now + timedelta(seconds=1)))
    # When the policy decides
    decision = decide(obs, locked, config, cluster=name, now=now, ec2_failures=ec2)
    # Then it neither replaces nor escalates
    assert decision.action not in (Action.REPLACE_MEMBER, Action.ESCALATE_QUORUM_LOSS)


# ---- mixed etcd versions ------------------------------------------------------------------


def versions(*each: str | None, cluster_version: str | None = "3.5.0") -> ClusterHealth:
    """Three healthy members running the given server versions (None: the member did not say)."""
    return cluster(*(member(i, version=v) for i, v in enumerate(each, 1)), cluster_version=cluster_version)


def test_the_mixed_versions_streak_starts_extends_holds_and_ends() -> None:
    # Given one member upgraded: the streak starts, and the next mixed round extends it
    first = update_history(history(), versions("3.5.1", "3.5.1", "3.5.30"), at(0))
    assert first.mixed_versions == Streak(at(0), at(0), 1)
    second = update_history(first, versions("3.5.1", "3.5.30", "3.5.30"), at(60))
    assert second.mixed_versions == Streak(at(0), at(60), 2)
    # a round where a member did not say its version cannot tell: the streak is kept as it was
    unknown = update_history(second, versions("3.5.30", None, "3.5.30"), at(120))
    assert unknown.mixed_versions == second.mixed_versions
    # every member on one version: the streak ends
    assert update_history(unknown, versions("3.5.30", "3.5.30", "3.5.30"), at(180)).mixed_versions is None
    # a cluster on one version never starts one
    assert update_history(history(), versions("3.4.23", "3.4.23", "3.4.23"), at(0)).mixed_versions is None


def mixed_since(start: datetime, now: datetime) -> History:
    return replace(history(), mixed_versions=Streak(start, now, 10))


def test_a_cluster_mixed_longer_than_the_limit_is_notified_once_per_mixed_period() -> None:
    obs = versions("3.5.1", "3.5.30", "3.5.30")
    config = PolicyConfig(health=HealthConfig(mixed_versions_warn_minutes=60))
    # Given mixed for less than the limit (an upgrade under way): nothing to say
    calm = decide(obs, mixed_since(at(0), at(3599)), config, cluster=CLUSTER, now=at(3599))
    assert calm.action is Action.NONE and calm.notifications == ()
    # When it has been mixed for the whole limit
    decision = decide(obs, mixed_since(at(0), at(3600)), config, cluster=CLUSTER, now=at(3600))
    # Then one notification names each version with its members, the cluster version and what to do
    assert decision.action is Action.NOTIFY
    (notice,) = decision.notifications
    assert notice.kind is NotificationKind.MIXED_VERSIONS
    assert "60 minutes" in notice.message and "3.5.0" in notice.message
    assert "3.5.1 on etcd-1 (1)" in notice.message and "3.5.30 on etcd-2 (2), etcd-3 (3)" in notice.message
    assert "finish the upgrade or roll it back" in notice.message
    assert EXECUTION_NAME.match(notice.key)
    # the same period keeps its key (announced once); a later mixed period gets a new one
    fresh = config.model_copy(update={"backup_max_age_seconds": 86400})  # (the backup may not go stale meanwhile)
    later = decide(obs, mixed_since(at(0), at(7200)), fresh, cluster=CLUSTER, now=at(7200))
    assert [n.key for n in later.notifications] == [notice.key]
    again = decide(obs, mixed_since(at(9000), at(12600)), fresh, cluster=CLUSTER, now=at(12600))
    (next_notice,) = again.notifications
    assert next_notice.kind is NotificationKind.MIXED_VERSIONS and next_notice.key != notice.key


def test_a_stale_streak_says_nothing_once_the_members_agree() -> None:
    # the streak is reset by update_history; decide itself also needs two versions in the observation
    obs = versions("3.5.30", "3.5.30", "3.5.30")
    fresh = CONFIG.model_copy(update={"backup_max_age_seconds": 86400})
    decision = decide(obs, mixed_since(at(0), at(7200)), fresh, cluster=CLUSTER, now=at(7200))
    assert decision.action is Action.NONE and decision.notifications == ()


def test_the_mixed_versions_limit_comes_from_the_cluster_configuration() -> None:
    doc = {"name": "c", "endpoints": ["https://10.0.0.1:2379"], "tls": {"ca": "ca.pem"}}
    assert PolicyConfig.from_cluster_config(parse_config(doc)).mixed_versions_warn == timedelta(hours=1)
    doc["health"] = {"mixed_versions_warn_minutes": 90}
    assert PolicyConfig.from_cluster_config(parse_config(doc)).mixed_versions_warn == timedelta(minutes=90)
    with pytest.raises(ConfigError, match="mixed_versions_warn_minutes"):
        parse_config({**doc, "health": {"mixed_versions_warn_minutes": 0}})


# ---- an even number of voters (a notice, not a repair) --------------------------------------


def even_notices(observation: ClusterHealth, lock: FakeLock | None = None) -> list[str]:
    decision = decide(observation, history(lock=lock), CONFIG, cluster=CLUSTER, now=T0)
    assert decision.action is (Action.NOTIFY if decision.notifications else Action.NONE)
    return [n.key for n in decision.notifications if n.kind is NotificationKind.EVEN_VOTERS]


def test_an_even_number_of_voters_is_noticed_once_per_set_of_voters_and_never_while_a_runbook_holds_the_lock() -> None:
    four = cluster(member(1), member(2), member(3), member(4))
    (key,) = even_notices(four)
    assert EXECUTION_NAME.match(key) and even_notices(four) == [key]  # the same incident every round
    (notice,) = decide(four, history(), CONFIG, cluster=CLUSTER, now=T0).notifications
    assert "runs with 4 voting members" in notice.message and "Scale it to 3 or 5" in notice.message
    assert "tolerates 1 failed member, no more than 3 do" in notice.message
    # another set of four voters is another incident; a learner does not count
    (other,) = even_notices(cluster(member(1), member(2), member(3), member(5)))
    assert other != key
    assert even_notices(cluster(member(1), member(2), member(3), member(4, learner=True))) == []
    # an odd number, a membership nobody could read, or a runbook at work (scaling passes 4 on purpose): none
    assert even_notices(cluster(member(1), member(2), member(3), member(4), member(5))) == []
    assert even_notices(cluster(member(1), member(2), member(3), member(4), cluster_id=None)) == []  # type: ignore[arg-type]
    assert even_notices(four, lock=FakeLock("scale-local-5", T0 + timedelta(minutes=10))) == []
    assert even_notices(four, lock=FakeLock("scale-local-5", T0 - timedelta(minutes=1))) == [key]  # expired


def test_a_ca_near_its_end_asks_once_per_ca_for_a_ca_rotation_and_changes_nothing() -> None:
    # Given a healthy cluster whose clients trust two CAs (a rotation under way): one ends in 50 days
    obs = cluster(member(1), member(2), member(3))
    old, new = "CN=etcd CA (serial 1a)", "CN=etcd CA 2 (serial 2b)"
    cas = {old: T0 + timedelta(days=50), new: T0 + timedelta(days=3650)}
    # When the policy decides (health.ca_warn_days: 60 by default)
    decision = decide(obs, history(), CONFIG, cluster=CLUSTER, now=T0, ca_not_after=cas)
    # Then one notice names the CA and the command that rotates it; nothing is started
    assert decision.action is Action.NOTIFY
    (notice,) = decision.notifications
    assert notice.kind is NotificationKind.CA_EXPIRING and old in notice.message and "in 50 days" in notice.message
    assert "etcdops runbook start rotate-certs --ca" in notice.message and EXECUTION_NAME.match(notice.key)
    # and the next rounds carry the same key (announced once per incident), expired or not
    later = decide(obs, history(), CONFIG, cluster=CLUSTER, now=at(3600), ca_not_after=cas)
    assert [n.key for n in later.notifications] == [notice.key]
    expired = decide(obs, history(), CONFIG, cluster=CLUSTER, now=T0 + timedelta(days=51), ca_not_after=cas)
    assert [n.kind for n in expired.notifications if n.kind.startswith("ca-")] == [NotificationKind.CA_EXPIRED]
    # a CA further away than ca_warn_days, or a smaller setting, says nothing
    quiet = PolicyConfig(health=HealthConfig(ca_warn_days=30))
    assert decide(obs, history(), quiet, cluster=CLUSTER, now=T0, ca_not_after=cas).notifications == ()
    assert decide(obs, history(), CONFIG, cluster=CLUSTER, now=T0, ca_not_after={new: cas[new]}).notifications == ()


@pytest.mark.parametrize("days", [0, 3651, "x"])
def test_ca_warn_days_outside_its_range_is_refused_by_name(days: object) -> None:
    with pytest.raises(ConfigError, match=r"health\.ca_warn_days"):
        parse_config({"name": "c", "endpoints": ["http://127.0.0.1:2379"], "plaintext": True,
                      "health": {"ca_warn_days": days}})  # fmt: skip
