"""HealthCheck rounds on real 3-member TLS clusters (etcd 3.4.23, 3.5.1 and 3.5.30).

Each scenario reads like the runbook it automates: break the cluster the way hosts break, run
health rounds at injected times (K=3 probes spanning T=2 s), and check what etcdops decided and
did: one ReplaceMember run per failure, an escalation naming the backup and the RestoreCluster
input when quorum is gone, one message per incident.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import boto3
import pytest
from builders import Writer, write_until_nospace
from moto import mock_aws

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.backup.store import BackupStore, open_store
from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.etcd.connect import client_for
from etcdops.adapters.health_aws import (
    InstanceDirectory,
    RecordingReplaceStarter,
    ReplaceStarter,
    StepFunctionsReplaceStarter,
)
from etcdops.adapters.healthmetrics import RecordingMetrics
from etcdops.adapters.state import StateStore
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.backup.catalogue import list_backups
from etcdops.app.backup.job import ensure_fresh_backup, run_backup
from etcdops.app.healthcheck import HealthContext, HealthRoundResult, Trigger, round_seeds, run_health_round
from etcdops.app.probe import probe_cluster
from etcdops.domain.backup.errors import StorePermissionError
from etcdops.domain.config import ClusterConfig
from etcdops.domain.member_metrics import StarvationThresholds
from etcdops.domain.policy import Action
from etcdops.entrypoints.events import HealthCheckEvent, parse_event
from etcdops.entrypoints.health_triggers import trigger_from_event
from etcdops_local.cluster import EtcdBinaries, LocalCluster, free_ports

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 25, 20, 30, tzinfo=UTC)
K, T = 3, 2  # failure threshold and window of these tests
INSTANCES = {"m1": "i-0a1b2c3d4e5f60001", "m2": "i-0a1b2c3d4e5f60002", "m3": "i-0a1b2c3d4e5f60003"}
# these scenarios are about failed members, not about how slow the test machine's disk is today:
# starvation notices are tested by their own scenario, with its own thresholds
UNSTARVED = StarvationThresholds(wal_fsync_p99=3600, backend_commit_p99=3600, peer_rtt_p99=3600)
EVENTS = os.path.join(os.path.dirname(__file__), "..", "..", "events")


def with_health(config: ClusterConfig, **health: Any) -> ClusterConfig:
    settings = {"failure_threshold": K, "failure_window_seconds": T, "member_instances": INSTANCES, **health}
    return config.model_copy(update={"health": config.health.model_copy(update=settings)})


@dataclass
class Autopilot:
    """The HealthCheck of one cluster, with everything it remembers and everything it did."""

    config: ClusterConfig
    state: StateStore = field(default_factory=InMemoryStateStore)
    notifier: MemoryNotifier = field(default_factory=MemoryNotifier)
    replace: ReplaceStarter = field(default_factory=RecordingReplaceStarter)
    metrics: RecordingMetrics = field(default_factory=RecordingMetrics)
    store: BackupStore | None = None  # the config's backup destination unless given
    starvation: StarvationThresholds = UNSTARVED

    def round(self, seconds: float, trigger: Trigger | None = None) -> HealthRoundResult:
        """One round at T0 + ``seconds`` (the probe itself runs now, against the real cluster)."""
        store = self.store or (open_store(self.config.backup.destination) if self.config.backup else None)
        seeds = round_seeds(self.config, self.state)
        with client_for(self.config, endpoints=seeds, timeout=self.config.health.probe_deadline_seconds) as client:
            ctx = HealthContext(
                config=self.config,
                client=client,
                state=self.state,
                metrics=self.metrics,
                notifier=self.notifier,
                replace=self.replace,
                instances=InstanceDirectory(self.config),
                backups=store,
                starvation=self.starvation,
            )
            return run_health_round(ctx, trigger or Trigger.manual(), T0 + timedelta(seconds=seconds))

    def subjects(self) -> list[str]:
        return [subject for subject, _, _ in self.notifier.messages]


def member_id(cluster: LocalCluster, name: str) -> int:
    with cluster.client() as client:
        return next(m.id for m in client.member_list() if m.name == name)


def event(name: str, **detail: Any) -> Trigger:
    with open(os.path.join(EVENTS, f"health_{name}.json")) as f:
        loaded: dict[str, Any] = json.load(f)
    loaded["detail"].update(detail)
    return trigger_from_event(parse_event(loaded, HealthCheckEvent))


def wait_for_new_leader(cluster: LocalCluster, timeout: float = 30.0) -> None:
    """After a member is lost (perhaps the leader), wait until the others have elected a leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with cluster.client() as client:
            if probe_cluster(client).leader:
                return
        time.sleep(0.2)
    raise AssertionError(f"no leader within {timeout} s")


def follower_and_others(cluster: LocalCluster) -> tuple[str, list[str]]:
    """The name of a member that is not the leader, and the names of the other members."""
    wait_for_new_leader(cluster)
    with cluster.client() as client:
        health = probe_cluster(client)
    assert health.leader is not None, health
    names = sorted(m.name for m in health.members)
    follower = next(m.name for m in health.members if m.id != health.leader)
    return follower, [n for n in names if n != follower]


def take_verified_backup(cluster: LocalCluster) -> str:
    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    with client_for(config) as client:
        result = run_backup(config, client, probe_cluster(client), store, keyring)
    assert result.manifest.verified
    return result.manifest.id


@pytest.fixture
def resume_paused(cluster: LocalCluster) -> Iterator[Callable[[str], None]]:
    paused: list[str] = []

    def pause(name: str) -> None:
        cluster.pause(name)
        paused.append(name)

    yield pause
    for name in paused:
        cluster.resume(name)


# ---- one member lost -------------------------------------------------------------------------------------


def test_a_killed_member_is_replaced_after_k_probes_spanning_t(cluster: LocalCluster) -> None:
    # Given a healthy cluster watched by the autopilot
    autopilot = Autopilot(with_health(cluster.config()))
    assert autopilot.round(-10).decision is not None
    target = member_id(cluster, "m2")

    # When m2's host is lost and the rounds go on
    cluster.kill("m2")
    wait_for_new_leader(cluster)
    first, second, third = autopilot.round(0), autopilot.round(1), autopilot.round(2)

    # Then the first K-1 rounds wait, the K-th (spanning T) decides to replace m2, once
    assert first.decision and first.decision.action is Action.WAIT and "1 of 3 failed probes" in first.decision.reason
    assert second.decision and second.decision.action is Action.WAIT
    assert third.decision and third.decision.action is Action.REPLACE_MEMBER
    assert third.decision.target_member_id == target and third.decision.target_member_name == "m2"
    assert isinstance(autopilot.replace, RecordingReplaceStarter)
    [(name, document)] = autopilot.replace.started.items()
    assert name == f"{third.decision.incident_id}-a1"  # attempt 1 of the incident
    assert document["member_id"] == f"{target:x}" and document["member_name"] == "m2"
    assert document["requires_approval"] is False and document["ec2_failed"] is False
    assert autopilot.subjects().count(f"etcdops: replacing member m2 of {autopilot.config.name}") == 1
    assert autopilot.metrics.values["QuorumMargin"] == 0 and autopilot.metrics.values["HasLeader"] == 1
    # and the health check itself changed no membership
    with cluster.client() as client:
        assert sorted(m.name for m in client.member_list()) == ["m1", "m2", "m3"]


def test_a_paused_member_is_treated_as_killed_and_does_not_stall_the_round(
    cluster: LocalCluster, resume_paused: Callable[[str], None]
) -> None:
    autopilot = Autopilot(with_health(cluster.config(), approval="always"))
    target = member_id(cluster, "m3")

    resume_paused("m3")
    wait_for_new_leader(cluster)
    results = [autopilot.round(seconds) for seconds in (0, 1, 2)]

    decision = results[-1].decision
    assert decision is not None and decision.action is Action.REPLACE_MEMBER
    assert decision.target_member_id == target
    assert isinstance(autopilot.replace, RecordingReplaceStarter)
    assert [d["member_name"] for d in autopilot.replace.started.values()] == ["m3"]
    # (that a frozen member costs a round no more than the probe deadline is measured by bench/bench_probe.py)


def test_three_triggers_at_once_start_exactly_one_execution(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        machine = sfn.create_state_machine(
            name="etcdops-replace-member",
            definition=json.dumps({"StartAt": "Placeholder", "States": {"Placeholder": {"Type": "Pass", "End": True}}}),
            roleArn="arn:aws:iam::123456789012:role/etcdops-sfn",
        )["stateMachineArn"]
        autopilot = Autopilot(with_health(cluster.config()), replace=StepFunctionsReplaceStarter(sfn, machine))

        # Given m2 lost and K-1 failed probes already counted
        cluster.kill("m2")
        wait_for_new_leader(cluster)
        autopilot.round(0)
        autopilot.round(1)

        # When the schedule, our quorum alarm and the EC2 status-check alarm of m2 arrive together
        triggers = [
            event("schedule"),
            event("alarm"),
            event(
                "ec2_status_check",
                configuration={
                    "metrics": [
                        {
                            "id": "m",
                            "metricStat": {
                                "metric": {
                                    "namespace": "AWS/EC2",
                                    "name": "StatusCheckFailed",
                                    "dimensions": {"InstanceId": INSTANCES["m2"]},
                                }
                            },
                        }
                    ]
                },
            ),
        ]
        results: list[HealthRoundResult] = []
        barrier = threading.Barrier(len(triggers))

        def run(trigger: Trigger) -> None:
            barrier.wait()
            results.append(autopilot.round(2, trigger))

        threads = [threading.Thread(target=run, args=(t,)) for t in triggers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        # Then all three decide to replace m2 under the same incident id, and one execution runs
        assert len(results) == 3
        decisions = [r.decision for r in results]
        assert all(d is not None and d.action is Action.REPLACE_MEMBER for d in decisions)
        assert len({d.incident_id for d in decisions if d}) == 1
        executions = sfn.list_executions(stateMachineArn=machine)["executions"]
        assert [e["name"] for e in executions] == [f"{decisions[0].incident_id if decisions[0] else None}-a1"]
        started = sum(1 for r in results for a in r.actions if a.startswith("started ReplaceMember"))
        assert started == 1
        assert autopilot.subjects().count(f"etcdops: replacing member m2 of {autopilot.config.name}") == 1
        document = json.loads(sfn.describe_execution(executionArn=executions[0]["executionArn"])["input"])
        assert document["member_name"] == "m2" and document["cluster"] == autopilot.config.name


# ---- the live membership, not the configuration, is the truth ----------------------------------------------


def test_seeds_that_are_gone_or_frozen_neither_stall_nor_blind_the_round(
    cluster: LocalCluster, resume_paused: Callable[[str], None]
) -> None:
    # Given a configuration whose endpoints are a member that is gone, a frozen one, then a live one
    # (the frozen one a follower: freezing the leader would add an election, which is not what this
    # is about, and until it is over the live members rightly fail their reads)
    gone = f"https://127.0.0.1:{free_ports(1)[0]}"
    urls = {p.name: p.client_urls[0] for p in cluster.ps()}
    frozen, others = follower_and_others(cluster)
    resume_paused(frozen)
    wait_for_new_leader(cluster)  # the others still have their leader (had it moved, a new one)
    config = with_health(cluster.config()).model_copy(update={"endpoints": [gone, urls[frozen], urls[others[-1]]]})
    autopilot = Autopilot(config)

    # When a round runs (how long a frozen member costs a round is measured by bench/bench_probe.py,
    # not asserted here: a loaded machine must not fail a functional test)
    result = autopilot.round(0)

    # Then it sees all three members, by name, with the frozen one failing and the others healthy
    assert result.health is not None
    assert sorted(m.name for m in result.health.members) == ["m1", "m2", "m3"]
    assert {m.name for m in result.health.members if not m.healthy} == {frozen}
    reason = result.decision.reason if result.decision else ""
    assert f"{frozen} (" in reason and "unnamed" not in reason
    # and it remembered the live members as the next round's seeds
    assert sorted(autopilot.state.load_endpoints(config.name)) == sorted(urls.values())


def test_a_configuration_that_went_stale_does_not_blind_the_autopilot(shared_cluster: LocalCluster) -> None:
    # Given a round that saw the members
    autopilot = Autopilot(with_health(shared_cluster.config()))
    assert autopilot.round(0).health.has_quorum  # type: ignore[union-attr]

    # When every configured endpoint is stale (the members behind them were all replaced long ago)
    stale = [f"https://127.0.0.1:{port}" for port in free_ports(3)]
    autopilot.config = autopilot.config.model_copy(update={"endpoints": stale})
    result = autopilot.round(1)

    # Then the members seen last are asked, and the cluster is healthy, not "QUORUM LOST"
    assert result.health is not None and result.health.has_quorum and len(result.health.healthy_voters) == 3
    assert result.decision is not None and result.decision.action in (Action.NONE, Action.NOTIFY), result.decision
    assert all("QUORUM" not in s for s in autopilot.subjects())


def test_when_nothing_answers_the_members_are_named_by_their_endpoints(shared_cluster: LocalCluster) -> None:
    stale = [f"https://127.0.0.1:{port}" for port in free_ports(3)]
    autopilot = Autopilot(with_health(shared_cluster.config()).model_copy(update={"endpoints": stale}))

    results = [autopilot.round(s) for s in (0, 1, 2)]

    escalation = results[-1].decision
    assert escalation is not None and escalation.action is Action.ESCALATE_QUORUM_LOSS
    assert "unnamed" not in escalation.reason and "(0)" not in escalation.reason
    assert all(f"the member at {url}" in escalation.reason for url in stale)
    assert "every stored endpoint is stale" in escalation.reason


def test_an_ec2_stopped_event_fails_the_member_at_once(cluster: LocalCluster) -> None:
    autopilot = Autopilot(with_health(cluster.config()))
    cluster.kill("m3")
    wait_for_new_leader(cluster)

    result = autopilot.round(0, event("ec2_state_change", **{"instance-id": INSTANCES["m3"], "state": "stopped"}))

    assert result.decision is not None and result.decision.action is Action.REPLACE_MEMBER
    assert result.decision.target_member_name == "m3"
    assert isinstance(autopilot.replace, RecordingReplaceStarter)
    assert [d["ec2_failed"] for d in autopilot.replace.started.values()] == [True]


def test_events_about_other_instances_and_clusters_change_nothing(shared_cluster: LocalCluster) -> None:
    autopilot = Autopilot(with_health(shared_cluster.config()))
    stranger = event("ec2_state_change", **{"instance-id": "i-0fffffffffffffff0", "state": "terminated"})
    other = event("alarm")  # names cluster "local"; this config's cluster is renamed below
    autopilot.config = autopilot.config.model_copy(update={"name": "prod-eu"})

    for trigger in (stranger, other):
        result = autopilot.round(0, trigger)
        assert result.decision is None and result.skipped
        assert result.health is None  # not even probed

    assert autopilot.state.load_streaks("prod-eu").version == 0
    assert autopilot.notifier.messages == [] and autopilot.state.load_last_decision("prod-eu") is None


# ---- quorum lost -----------------------------------------------------------------------------------------


def test_two_members_killed_escalate_with_the_backup_and_the_restore_input(cluster: LocalCluster) -> None:
    # Given a verified backup and a healthy cluster
    backup_id = take_verified_backup(cluster)
    autopilot = Autopilot(with_health(cluster.config()))

    # When two of three members are lost
    cluster.kill("m2")
    cluster.kill("m3")
    results = [autopilot.round(s) for s in (0, 1, 2, 3, 60)]

    # Then it escalates (once confirmed), names the backup and the exact RestoreCluster input, once
    actions = [r.decision.action for r in results if r.decision]
    assert Action.ESCALATE_QUORUM_LOSS in actions and Action.REPLACE_MEMBER not in actions
    escalation = next(r.decision for r in results if r.decision and r.decision.action is Action.ESCALATE_QUORUM_LOSS)
    assert escalation.backup_id == backup_id
    restore = {"cluster": autopilot.config.name, "backup_id": backup_id, "mode": "in-place"}
    assert escalation.restore_input == restore
    [(subject, message, _)] = [m for m in autopilot.notifier.messages if "QUORUM LOST" in m[0]]
    assert subject == f"etcdops: QUORUM LOST on cluster {autopilot.config.name} - a restore needs a human"
    assert f"Latest verified backup: {backup_id}" in message
    assert f"RestoreCluster input: {json.dumps(restore, sort_keys=True)}" in message
    assert isinstance(autopilot.replace, RecordingReplaceStarter) and autopilot.replace.started == {}
    # the survivor sees no leader, so it does not serve either: 0 healthy voters, quorum 2
    assert autopilot.metrics.values["HasLeader"] == 0 and autopilot.metrics.values["QuorumMargin"] == -2
    # and no membership change was made: the survivor still lists all three
    last = results[-1].health
    assert last is not None and sorted(m.name for m in last.members) == ["m1", "m2", "m3"]


def test_a_backup_of_a_previous_incarnation_with_the_same_name_is_never_used_as_fresh(
    cluster: LocalCluster, etcd_binaries: EtcdBinaries
) -> None:
    # Given a verified backup of cluster "local", then that cluster destroyed and a new one made with the same name
    old_id = take_verified_backup(cluster)
    cluster.down(purge=True)
    cluster.up(binaries=etcd_binaries)
    config = with_health(cluster.config())
    assert config.backup is not None and config.name == "local"
    store, keyring = open_backup_target(config)
    (old,) = list_backups(store)
    autopilot = Autopilot(config)

    # When HealthCheck looks at the new cluster, then loses its quorum
    healthy = autopilot.round(0)
    cluster.kill("m2")
    cluster.kill("m3")
    results = [autopilot.round(s) for s in (10, 11, 12, 13, 70)]

    # Then the old backup counts for nothing: no age, "no verified backup", and the escalation names none
    assert healthy.health is not None and f"{healthy.health.cluster_id:x}" != old.cluster_id
    [missing] = [body for subject, body, _ in autopilot.notifier.messages if "backup-missing" in subject]
    assert f"no verified backup of its current incarnation (cluster id {healthy.health.cluster_id:x}" in missing
    escalation = next(r.decision for r in results if r.decision and r.decision.action is Action.ESCALATE_QUORUM_LOSS)
    assert escalation.backup_id is None and escalation.restore_input == {
        "cluster": config.name,
        "backup_id": None,
        "mode": "in-place",
    }
    [(_, message, _)] = [m for m in autopilot.notifier.messages if "QUORUM LOST" in m[0]]
    assert old_id not in message and "NO verified backup of this cluster incarnation" in message
    assert "NewestVerifiedBackupAge" not in autopilot.metrics.values

    # When the cluster is back and ReplaceMember's EnsureBackup asks for a fresh verified backup
    cluster.kill("m1")
    cluster.up()
    wait_for_new_leader(cluster)
    with client_for(config) as client:
        fresh = ensure_fresh_backup(config, client, store, keyring, timedelta(hours=2))

    # Then it takes a new one of this cluster rather than the old one that is only minutes old
    assert fresh.id != old_id and fresh.verified and fresh.cluster_id == f"{healthy.health.cluster_id:x}"
    assert sorted(m.id for m in list_backups(store)) == sorted([old_id, fresh.id])


class DeniedStore:
    """A backup store whose reads are refused, as S3 refuses SSE-KMS objects without kms:Decrypt."""

    def __init__(self, store: BackupStore) -> None:
        self.uri = store.uri

    def list(self, prefix: str = "") -> list[str]:
        raise StorePermissionError(f"listing {self.uri}: AccessDenied: not authorized to perform kms:Decrypt")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"HealthCheck only reads the catalogue, it called {name}")


def test_an_unreadable_backup_catalogue_is_said_once_and_no_backup_age_is_made_up(cluster: LocalCluster) -> None:
    # Given a verified backup that HealthCheck may not read
    take_verified_backup(cluster)
    config = with_health(cluster.config())
    assert config.backup is not None
    autopilot = Autopilot(config, store=cast(BackupStore, DeniedStore(open_store(config.backup.destination))))

    # When rounds run
    results = [autopilot.round(s) for s in (0, 60, 120)]

    # Then failure detection goes on, people hear once that the catalogue is unreadable (not "no backup"),
    # and the age metric is left out rather than published as if there were none
    assert [r.decision.action for r in results if r.decision] == [Action.NOTIFY] * 3
    assert autopilot.subjects() == [f"etcdops: backup-unreadable on cluster {config.name}"]
    (_, message, _) = autopilot.notifier.messages[0]
    assert "AccessDenied" in message and "kms:Decrypt" in message
    assert "NewestVerifiedBackupAge" not in autopilot.metrics.values
    assert autopilot.metrics.values["HasLeader"] == 1


# ---- etcd alarms -----------------------------------------------------------------------------------------


def test_a_nospace_alarm_is_notified_exactly_once(
    start_cluster: Callable[..., LocalCluster], etcd_binaries: EtcdBinaries
) -> None:
    quota = 2_000_000
    cluster = start_cluster(etcd_binaries, extra=(f"--quota-backend-bytes={quota}",))
    value = os.urandom(100_000)
    write_until_nospace(cluster, ((f"fill/{i}".encode(), value) for i in itertools.count()), quota)
    autopilot = Autopilot(with_health(cluster.config(), quota_backend_bytes=quota))

    results = [autopilot.round(s) for s in (0, 1, 2, 3, 120)]

    nospace = [s for s in autopilot.subjects() if "alarm-nospace" in s]
    assert nospace == [f"etcdops: alarm-nospace on cluster {autopilot.config.name}"]
    for result in results:
        assert result.decision is not None
        assert result.decision.action not in (Action.REPLACE_MEMBER, Action.ESCALATE_QUORUM_LOSS)
    assert autopilot.metrics.values["NoSpaceAlarm"] >= 1 and autopilot.metrics.values["HasLeader"] == 1
    assert autopilot.metrics.values["DbSizeQuotaRatio"] > 0.8
    assert isinstance(autopilot.replace, RecordingReplaceStarter) and autopilot.replace.started == {}


# ---- etcd versions ---------------------------------------------------------------------------------------


def test_a_cluster_left_mixed_after_a_half_done_upgrade_is_notified_once(
    start_cluster: Callable[..., LocalCluster], etcd351: EtcdBinaries, etcd3530: EtcdBinaries
) -> None:
    # Given a 3.5.1 cluster whose m3 was upgraded to 3.5.30 (stopped, etcd swapped, started again)
    cluster = start_cluster(etcd351)
    cluster.stop_member("m3")
    cluster.swap_member_binaries("m3", etcd3530)
    cluster.spawn_member("m3", initial_cluster=",".join(f"{m.name}={m.peer_url}" for m in cluster.state().members))
    cluster.wait_ready()
    take_verified_backup(cluster)
    autopilot = Autopilot(with_health(cluster.config(), mixed_versions_warn_minutes=60))

    # When HealthCheck runs for a while, and then the upgrade is never finished for more than an hour
    results = [autopilot.round(s) for s in (0, 60, 1800, 3599, 3600, 3660, 7200)]

    # Then every round publishes the cluster version (3.5) and the two member versions,
    for result in results:
        assert result.health is not None and result.health.cluster_version == "3.5.0"
        assert sorted(result.health.member_versions) == ["3.5.1", "3.5.30"]
    assert autopilot.metrics.values["ClusterVersion"] == 305 and autopilot.metrics.values["MemberVersions"] == 2
    # says nothing while an upgrade could still be running, and warns exactly once after the hour
    mixed = [s for s in autopilot.subjects() if "mixed-versions" in s]
    assert mixed == [f"etcdops: mixed-versions on cluster {autopilot.config.name}"]
    first = next(i for i, r in enumerate(results) if r.decision and r.decision.notifications)
    assert first == 4  # the round at 3600 s
    body = next(b for s, b, _ in autopilot.notifier.messages if "mixed-versions" in s)
    assert "3.5.1 on m1" in body and "3.5.30 on m3" in body and "cluster version 3.5.0" in body
    assert isinstance(autopilot.replace, RecordingReplaceStarter) and autopilot.replace.started == {}


# ---- starvation -------------------------------------------------------------------------------------


def test_a_member_slowed_by_sigstop_cycles_is_named_starved_of_disk_once(
    start_cluster: Any, etcd3530: EtcdBinaries
) -> None:
    """issue 15: a member whose process is stopped most of the time (SIGSTOP 100 ms, SIGCONT 1 ms, under
    a writer) shows a WAL fsync p99 of its own far above a healthy disk's, and one notice names it. (With
    5 ms running windows a quiet machine finished most fsyncs inside one window: half the runs saw no slow
    fsync; with 1 ms nearly every fsync spans a stop.)"""
    cluster: LocalCluster = start_cluster(etcd3530)
    slowed, _ = follower_and_others(cluster)
    pid = cluster.member(slowed).pid
    assert pid is not None
    autopilot = Autopilot(with_health(cluster.config()), starvation=StarvationThresholds(0.05, 3600, 3600))
    judge = Autopilot(with_health(cluster.config()), starvation=StarvationThresholds())  # the default levels

    def starve(seconds: float) -> None:
        until = time.monotonic() + seconds
        try:
            while time.monotonic() < until:
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.1)
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.001)
        finally:
            os.kill(pid, signal.SIGCONT)

    writer = Writer(cluster)
    writer.thread.start()
    try:
        autopilot.round(0)  # the base: the first round of a member judges nothing
        judge.round(0)
        starve(4)
        first = autopilot.round(60)
        judge.round(60)
        starve(2)
        autopilot.round(120)
        judge.round(120)
    finally:
        assert writer.lost() == {}

    assert first.metrics is not None
    slowed_p99 = first.metrics.members[slowed].wal_fsync_p99
    assert slowed_p99 is not None and slowed_p99 > 0.05, first.metrics.to_dict()["Members"]
    assert autopilot.metrics.member_values[(slowed, "WalFsyncP99")] > 0  # published per member (the last round's)
    notices = [(s, b) for s, b, _ in autopilot.notifier.messages if f"member {slowed} is starved: disk" in s]
    assert len(notices) == 1, autopilot.subjects()  # once per incident
    assert notices[0][1].startswith(f"{slowed}: disk: WAL fsync p99 ")
    assert " over 60 s (threshold 50 ms)" in notices[0][1]  # the window its p99 is of
    # and at the default levels (the etcd mixin's) no healthy member's disk is called starved
    healthy = [p.name for p in cluster.ps() if p.name != slowed]
    assert not [s for s in judge.subjects() for name in healthy if f"member {name} is starved: disk" in s], (
        judge.subjects()
    )
