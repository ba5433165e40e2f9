"""HealthCheck without a cluster: metric computations, the alarm-report rule, acting on decisions
(one execution per incident, one message per incident), instance lookup, settings, leader changes."""

from __future__ import annotations

import json
import runpy
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

import boto3
import builders
import pytest
from moto import mock_aws
from moto_ec2 import register_host_image, without_public_images

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.awserrors import AwsError
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.health_aws import InstanceDirectory, RecordingReplaceStarter, StepFunctionsReplaceStarter
from etcdops.adapters.healthmetrics import (
    RecordingMetrics,
    compute_health_metrics,
    publish_health_metrics,
    version_number,
)
from etcdops.adapters.state import StateStore
from etcdops.adapters.state_delta import InMemoryDeltaChainStore
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.backup.delta import covering_chain
from etcdops.app.health_actions import act, renew_certificates_if_due, replace_input
from etcdops.app.healthcheck import HealthContext, discount_alarm_reports
from etcdops.domain.backup.chain import ChainHead
from etcdops.domain.backup.manifest import cluster_id_text
from etcdops.domain.config import parse_config
from etcdops.domain.decisions import DeltaChainRef
from etcdops.domain.errors import ConfigError, PkiError
from etcdops.domain.health import Alarm
from etcdops.domain.policy import Action, Decision, Notification, NotificationKind
from etcdops.entrypoints.observability import function_metrics
from etcdops.entrypoints.settings import HealthSettings

NOW = datetime(2026, 11, 25, 20, 30, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
CONFIG = parse_config(
    {
        "name": "prod",
        "endpoints": ["http://10.0.0.1:2379"],
        "plaintext": True,
        "health": {"member_instances": {"m1": "i-00000000000000001"}},
    }
)


# a member as a probe that got its status reports it
member = partial(builders.member, db_size=1000, db_size_in_use=800, raft_index=100, raft_term=2, leader=1)
cluster = partial(builders.cluster, cluster_id=7, observed_at=NOW)


# ---- metrics --------------------------------------------------------------------------------------------


def test_a_healthy_cluster_has_a_leader_and_a_quorum_margin_of_one() -> None:
    health = cluster(member(1, "m1"), member(2, "m2", raft_index=97), member(3, "m3", raft_index=100))

    metrics = compute_health_metrics(health, now=NOW, quota_bytes=10_000)

    assert metrics.has_leader and metrics.healthy_members == 3 and metrics.voting_members == 3
    assert metrics.quorum_margin == 1
    assert metrics.raft_index_lag == {"m1": 0, "m2": 3, "m3": 0}
    assert metrics.max_raft_index_lag == 3


def test_db_size_ratio_and_fragmentation_take_the_worst_member() -> None:
    health = cluster(
        member(1, "m1", db_size=4000, db_size_in_use=3000),  # 25 % fragmented
        member(2, "m2", db_size=8000, db_size_in_use=2000),  # 75 % fragmented, the largest
        member(3, "m3", healthy=False, db_size=None, db_size_in_use=None, raft_index=None, raft_term=None),
    )

    metrics = compute_health_metrics(health, now=NOW, quota_bytes=10_000)

    assert metrics.db_size == 8000
    assert metrics.db_size_quota_ratio == 0.8
    assert metrics.fragmentation == 0.75
    assert "m3" not in metrics.raft_index_lag  # no status, no lag to report


def test_a_dead_and_an_ec2_failed_member_leave_a_margin_of_minus_one() -> None:
    health = cluster(member(1, "m1"), member(2, "m2"), member(3, "m3", healthy=False, db_size=None))

    metrics = compute_health_metrics(health, now=NOW, quota_bytes=10_000, ec2_failures=[2])

    assert metrics.healthy_members == 1
    assert metrics.quorum_margin == -1


def test_no_leader_when_the_reported_leader_is_not_a_healthy_voter() -> None:
    assert not compute_health_metrics(cluster(member(1, "m1"), leader=None), now=NOW, quota_bytes=1).has_leader
    failed_leader = cluster(member(1, "m1", healthy=False), member(2, "m2"), member(3, "m3"))
    assert not compute_health_metrics(failed_leader, now=NOW, quota_bytes=1).has_leader


def test_alarms_are_counted_by_kind_once_per_member() -> None:
    alarms = (Alarm(1, "NOSPACE"), Alarm(2, "NOSPACE"), Alarm(2, "NOSPACE"), Alarm(3, "CORRUPT"))
    health = cluster(member(1, "m1"), member(2, "m2"), member(3, "m3"), alarms=alarms)

    metrics = compute_health_metrics(health, now=NOW, quota_bytes=1)

    assert (metrics.nospace_alarms, metrics.corrupt_alarms, metrics.active_alarms) == (2, 1, 3)


def test_certificate_days_and_backup_age() -> None:
    health = cluster(member(1, "m1"))
    served = {"m1": NOW + timedelta(days=40), "m2": NOW + timedelta(days=12, hours=12)}

    metrics = compute_health_metrics(
        health,
        now=NOW,
        quota_bytes=1,
        served_certificates=served,
        newest_verified_backup_at=NOW - timedelta(minutes=90),
    )

    assert metrics.certificate_expiry_days == 12.5
    assert metrics.newest_verified_backup_age == 5400.0


def test_the_earliest_trusted_ca_gives_the_ca_expiry_days(tmp_path: Path) -> None:
    """CaCertificateExpiryDays: the earliest CA of the clients' trust file (both CAs during a rotation);
    a leaf certificate in the file is no CA and is left out."""
    from etcdops.adapters import pki

    old, new = pki.create_ca("old CA", valid_days=45), pki.create_ca("new CA")
    leaf = pki.issue_certificate(old, "m1", kind="peer", valid_days=10)
    (tmp_path / "trusted.crt").write_bytes(new.cert_pem + old.cert_pem + leaf.cert_pem)

    trusted = pki.ca_expiries(tmp_path / "trusted.crt")
    sink = RecordingMetrics()
    publish_health_metrics(compute_health_metrics(cluster(member(1, "m1")), now=NOW, quota_bytes=1,
                                                  trusted_cas=trusted), sink)  # fmt: skip

    assert sorted(trusted) == [f"CN=new CA (serial {new.certificate.serial_number:x})",
                               f"CN=old CA (serial {old.certificate.serial_number:x})"]  # fmt: skip
    assert sink.values["CaCertificateExpiryDays"] == round((old.not_after - NOW).total_seconds() / 86400, 3)
    with pytest.raises(PkiError, match="not a PEM certificate"):
        (tmp_path / "bad.crt").write_text("nothing")
        pki.ca_expiries(tmp_path / "bad.crt")


def test_unknown_values_are_left_out_not_published_as_zero() -> None:
    health = cluster(member(1, "m1", db_size=None, db_size_in_use=None, raft_index=None, raft_term=None), leader=None)
    sink = RecordingMetrics()

    publish_health_metrics(compute_health_metrics(health, now=NOW, quota_bytes=1, leader_changes=2), sink)

    for absent in (
        "DbSize",
        "DbSizeQuotaRatio",
        "Fragmentation",
        "CertificateExpiryDays",
        "CaCertificateExpiryDays",
        "NewestVerifiedBackupAge",
        "ClusterVersion",
        "MemberVersions",
    ):
        assert absent not in sink.values
    assert sink.values["HasLeader"] == 0 and sink.values["LeaderChanges"] == 2
    assert sink.member_values == {}


def test_the_cluster_version_and_the_number_of_member_versions_are_published() -> None:
    sink = RecordingMetrics()
    mixed = cluster(
        member(1, "m1", version="3.4.23"),
        member(2, "m2", version="3.5.30"),
        member(3, "m3", version="3.5.30"),
        cluster_version="3.4.0",
    )

    publish_health_metrics(compute_health_metrics(mixed, now=NOW, quota_bytes=1), sink)

    assert sink.values["ClusterVersion"] == 304 and sink.values["MemberVersions"] == 2
    assert [version_number(v) for v in ("3.5.0", "3.10.0", "4.0", "not_decided", "", None)] == [
        305,
        310,
        400,
        None,
        None,
        None,
    ]


def test_member_lag_is_published_per_member() -> None:
    sink = RecordingMetrics()
    health = cluster(member(1, "m1", raft_index=50), member(2, "m2", raft_index=45))

    publish_health_metrics(compute_health_metrics(health, now=NOW, quota_bytes=1), sink)

    assert sink.member_values == {("m1", "RaftIndexLag"): 0, ("m2", "RaftIndexLag"): 5}
    assert sink.values["MaxRaftIndexLag"] == 5


def test_emf_output_carries_the_cluster_and_member_dimensions(capsys: pytest.CaptureFixture[str]) -> None:
    from etcdops.adapters.healthmetrics import EmfHealthMetrics

    powertools = function_metrics()
    sink = EmfHealthMetrics(powertools)
    sink.add_dimension("cluster", "prod")
    publish_health_metrics(compute_health_metrics(cluster(member(1, "m1")), now=NOW, quota_bytes=10), sink)
    powertools.flush_metrics()

    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    lag = next(d for d in documents if "RaftIndexLag" in d)
    assert (lag["cluster"], lag["member"], lag["RaftIndexLag"]) == ("prod", "m1", [0.0])
    assert sorted(lag["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == ["cluster", "member"]
    cluster_level = next(d for d in documents if "QuorumMargin" in d)
    assert cluster_level["cluster"] == "prod" and cluster_level["HasLeader"] == [1.0]
    assert "member" not in cluster_level


def test_two_clusters_rounds_at_once_publish_each_under_its_own_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    """Two HealthCheck sandboxes in one process (the local stack runs the fan-out's rounds as threads): each
    round's EMF document carries exactly its own cluster and values, and Powertools warns of nothing."""
    from aws_lambda_powertools.warnings import PowertoolsUserWarning

    from etcdops.adapters.healthmetrics import EmfHealthMetrics

    sandboxes = [runpy.run_path(str(ROOT / "functions" / "health_check" / "app.py")) for _ in range(2)]
    both_set = threading.Barrier(2)
    rounds = {"c1": cluster(member(1, "m1", raft_index=None)),
              "c2": cluster(*(member(i, f"m{i}", raft_index=None) for i in (1, 2, 3)))}  # fmt: skip

    def one_round(sandbox: dict[str, Any], name: str) -> None:
        sink = EmfHealthMetrics(sandbox["metrics"])
        sink.add_dimension("cluster", name)
        both_set.wait()  # both clusters' dimensions are set before either round publishes
        publish_health_metrics(compute_health_metrics(rounds[name], now=NOW, quota_bytes=10), sink)
        both_set.wait()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(one_round, sandboxes, ["c1", "c2"]))
        for sandbox in sandboxes:
            sandbox["metrics"].flush_metrics()

    assert [str(w.message) for w in caught if issubclass(w.category, PowertoolsUserWarning)] == []
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert sorted((d["cluster"], d["VotingMembers"]) for d in documents) == [("c1", [1.0]), ("c2", [3.0])]
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["cluster"]] for d in documents)


# ---- alarms reported in Status.errors -------------------------------------------------------------------


def test_members_marked_unhealthy_only_by_alarm_reports_count_as_serving() -> None:
    nospace = "memberID:5462195499683183827 alarm:NOSPACE "
    health = cluster(
        member(1, "m1", healthy=False, error=nospace),
        member(2, "m2", healthy=False, error=f"{nospace}; memberID:1 alarm:CORRUPT "),
        member(3, "m3", healthy=False, error="read failed: deadline exceeded"),
        leader=None,
        alarms=(Alarm(1, "NOSPACE"),),
    )

    seen = discount_alarm_reports(health)

    assert [m.healthy for m in seen.members] == [True, True, False]
    assert seen.leader == 1 and seen.alarms == health.alarms


def test_a_member_that_sees_no_leader_stays_unhealthy_despite_alarm_reports() -> None:
    health = cluster(member(1, "m1", healthy=False, leader=None, error="memberID:1 alarm:NOSPACE"), leader=None)

    assert discount_alarm_reports(health) == health


# ---- acting ---------------------------------------------------------------------------------------------


def context(store: StateStore, starter: Any, notifier: MemoryNotifier | None) -> HealthContext:
    return HealthContext(
        config=CONFIG,
        client=cast(EtcdClient, None),  # acting does not talk to etcd
        state=store,
        metrics=RecordingMetrics(),
        notifier=notifier,
        replace=starter,
        instances=InstanceDirectory(CONFIG),
        backups=None,
    )


REPLACE = Decision(
    action=Action.REPLACE_MEMBER,
    reason="Replace member m3 (3): it failed 3 consecutive probes over 2 s.",
    cluster="prod",
    target_member_id=0xAB,
    target_member_name="m3",
    incident_id="prod-replace-ab-20261125T203000Z-0123456789",
)


def test_a_replace_decision_starts_one_run_and_sends_one_message_however_often_it_repeats(store: StateStore) -> None:
    starter, notifier = RecordingReplaceStarter(), MemoryNotifier()
    ctx = context(store, starter, notifier)

    first = act(ctx, REPLACE, frozenset(), NOW)
    again = act(
        ctx, replace(REPLACE, reason="the same failure, one probe later"), frozenset(), NOW + timedelta(minutes=1)
    )

    execution = f"{REPLACE.incident_id}-a1"  # attempts, not incidents, name executions
    assert first[0] == f"started ReplaceMember {execution}"
    assert again == [f"Attempt 1 of {REPLACE.incident_id} ({execution}) is running."]
    assert starter.started == {
        execution: {
            "cluster": "prod",
            "member_id": "ab",
            "member_name": "m3",
            "member_label": "ab",
            "incident_id": REPLACE.incident_id,
            "attempt": 1,
            "max_attempts": 3,
            "reason": REPLACE.reason,
            "requires_approval": False,
            "ec2_failed": False,
        }
    }
    assert [subject for subject, _, _ in notifier.messages] == ["etcdops: replacing member m3 of prod"]


def test_without_a_runbook_the_replacement_is_announced_with_its_input() -> None:
    notifier = MemoryNotifier()

    act(context(InMemoryStateStore(), None, notifier), REPLACE, frozenset({0xAB}), NOW)

    [(subject, message, attributes)] = notifier.messages
    assert subject == "etcdops: member m3 of prod must be replaced (no runbook configured)"
    assert '"ec2_failed": true' in message and REPLACE.incident_id in message
    assert attributes == {"cluster": "prod", "kind": "replace-needed", "incident": REPLACE.incident_id}


def test_an_escalation_is_sent_once_with_the_backup_and_the_restore_input(store: StateStore) -> None:
    notifier = MemoryNotifier()
    decision = Decision(
        action=Action.ESCALATE_QUORUM_LOSS,
        reason="Quorum lost on cluster prod: no leader.",
        cluster="prod",
        incident_id="prod-quorum-loss-cluster-20261125T203000Z-0123456789",
        backup_id="20261125T200000Z-ab12",
        restore_input={"cluster": "prod", "backup_id": "20261125T200000Z-ab12", "mode": "in-place"},
    )
    ctx = context(store, RecordingReplaceStarter(), notifier)

    for minute in range(3):
        act(ctx, decision, frozenset(), NOW + timedelta(minutes=minute))

    [(subject, message, _)] = notifier.messages
    assert subject == "etcdops: QUORUM LOST on cluster prod - a restore needs a human"
    assert "Latest verified backup: 20261125T200000Z-ab12" in message
    assert (
        'RestoreCluster input: {"backup_id": "20261125T200000Z-ab12", "cluster": "prod", "mode": "in-place"}' in message
    )
    assert cast(RecordingReplaceStarter, ctx.replace).started == {}


def test_the_escalation_names_the_delta_chain_of_the_incarnation_that_answered() -> None:
    chains = InMemoryDeltaChainStore()
    head = ChainHead("prod", "b-1", cluster_id_text(7) or "", 100, 5120, "d-9", NOW - timedelta(seconds=30))
    assert chains.move_chain_head(None, head)

    assert covering_chain(chains, "prod", 7) == DeltaChainRef(head.cluster_id, 5120, head.updated_at)
    assert covering_chain(chains, "prod", 8) is None  # a chain of another incarnation does not cover this one
    assert covering_chain(chains, "prod", None) is not None  # nobody answered: the chain is named
    assert covering_chain(chains, "other", 7) is None and covering_chain(None, "prod", 7) is None


def test_each_notification_is_sent_once_per_key(store: StateStore) -> None:
    notifier = MemoryNotifier()
    nospace = Notification(NotificationKind.ALARM_NOSPACE, "etcd alarm NOSPACE ...", "prod-alarm-nospace-1-abc")
    stale = Notification(NotificationKind.BACKUP_STALE, "The latest verified backup ...", "prod-backup-stale-x-def")
    ctx = context(store, None, notifier)

    for minute in range(3):
        decision = Decision(Action.NOTIFY, "things", "prod", notifications=(nospace, stale))
        act(ctx, decision, frozenset(), NOW + timedelta(minutes=minute))

    assert [s for s, _, _ in notifier.messages] == [
        "etcdops: alarm-nospace on cluster prod",
        "etcdops: backup-stale on cluster prod",
    ]


def test_without_a_topic_nothing_is_recorded_as_sent() -> None:
    store, notifier = InMemoryStateStore(), MemoryNotifier()
    nospace = Notification(NotificationKind.ALARM_NOSPACE, "NOSPACE", "prod-alarm-nospace-1-abc")
    decision = Decision(Action.NOTIFY, "things", "prod", notifications=(nospace,))

    assert act(context(store, None, None), decision, frozenset(), NOW) == []
    act(context(store, None, notifier), decision, frozenset(), NOW)  # a topic configured later still hears it

    assert len(notifier.messages) == 1


def test_replace_input_refuses_other_decisions() -> None:
    with pytest.raises(ValueError, match="not a replacement decision"):
        replace_input(Decision(Action.NONE, "fine", "prod"), frozenset())


# ---- Step Functions and EC2 (moto) ----------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    without_public_images(monkeypatch)
    with mock_aws():
        yield


def pass_machine_starter() -> StepFunctionsReplaceStarter:
    """A starter for a one-state machine that succeeds (in moto); its client is ``.sfn``."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(
        name="replace-member",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]
    return StepFunctionsReplaceStarter(sfn, machine)


def test_the_execution_name_makes_a_second_start_a_no_op(aws: None) -> None:
    starter = pass_machine_starter()

    first = starter.start("incident-1", {"reason": "first"})
    second = starter.start("incident-1", {"reason": "a later round says it differently"})

    assert first.started and not second.started
    assert first.execution_arn == second.execution_arn
    assert len(starter.sfn.list_executions(stateMachineArn=starter.state_machine_arn)["executions"]) == 1


def test_other_step_functions_errors_are_named(aws: None) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    starter = StepFunctionsReplaceStarter(sfn, "arn:aws:states:us-east-1:123456789012:stateMachine:missing")

    with pytest.raises(AwsError, match="StateMachineDoesNotExist"):
        starter.start("incident-1", {})


def test_instances_map_to_members_by_config_then_by_tags(aws: None) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    image = register_host_image(ec2)

    def launch(tags: dict[str, str]) -> str:
        spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        instance: str = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=spec)["Instances"][
            0
        ]["InstanceId"]
        return instance

    ours = launch({"etcdops:cluster": "prod", "etcdops:member": "m2"})
    theirs = launch({"etcdops:cluster": "staging", "etcdops:member": "m2"})
    untagged = launch({"Name": "bastion"})
    directory = InstanceDirectory(CONFIG, ec2)

    assert directory.member_of("i-00000000000000001") == "m1"  # health.member_instances
    assert directory.member_of(ours) == "m2"
    assert directory.member_of(theirs) is None  # another cluster's m2
    assert directory.member_of(untagged) is None
    assert directory.member_of("i-0fffffffffffffff0") is None  # unknown instance
    assert InstanceDirectory(CONFIG).member_of(ours) is None  # no EC2 client: config only


# ---- settings, leader changes, the local schedule -------------------------------------------------------


def test_settings_name_what_is_missing() -> None:
    with pytest.raises(ConfigError, match=r"^CLUSTER_CONFIG_PARAMETER: not set"):
        HealthSettings.from_env({"TABLE_NAME": "t"})
    with pytest.raises(ConfigError, match=r"^TABLE_NAME: not set"):
        HealthSettings.from_env({"CLUSTER_CONFIG_PARAMETER": "/c"})
    with pytest.raises(ConfigError, match=r"^REPLACE_STATE_MACHINE_ARN: 'replace' is not"):
        HealthSettings.from_env(
            {"CLUSTER_CONFIG_PARAMETER": "/c", "TABLE_NAME": "t", "REPLACE_STATE_MACHINE_ARN": "replace"}
        )
    settings = HealthSettings.from_env(
        {"CLUSTER_CONFIG_PARAMETER": "/c", "TABLE_NAME": "t", "REPLACE_STATE_MACHINE_ARN": ""}
    )
    assert (settings.topic_arn, settings.replace_state_machine_arn) == (None, None)


def test_leader_changes_count_each_term_move_once(store: StateStore) -> None:
    assert store.advance_raft_term("prod", 5, NOW) == 0  # first sight: nothing to compare with
    assert store.advance_raft_term("prod", 5, NOW) == 0
    assert store.advance_raft_term("prod", 7, NOW) == 2
    assert store.advance_raft_term("prod", 7, NOW) == 0  # a concurrent round saw the same move
    assert store.advance_raft_term("prod", 6, NOW) == 0  # a stale member's term never counts back
    assert store.advance_raft_term("other", 9, NOW) == 0


def test_a_certificate_within_renew_days_starts_one_rotation_a_day_of_the_members_due() -> None:
    rotate = RecordingReplaceStarter()
    ctx = replace(context(InMemoryStateStore(), None, None), rotate=rotate)
    renew_days = CONFIG.certificates.renew_days

    assert renew_certificates_if_due(ctx, renew_days + 0.5, NOW) == []  # not due yet
    assert renew_certificates_if_due(ctx, None, NOW) == []  # no member's certificate was read
    first = renew_certificates_if_due(ctx, renew_days - 0.5, NOW)
    later = renew_certificates_if_due(ctx, renew_days - 0.6, NOW + timedelta(minutes=5))
    next_day = renew_certificates_if_due(ctx, renew_days - 1.5, NOW + timedelta(days=1))

    assert first == [f"started RotateCertificates rotate-prod-{NOW:%Y%m%d}"] and later == [] and len(next_day) == 1
    document = rotate.started[f"rotate-prod-{NOW:%Y%m%d}"]
    assert document["cluster"] == "prod" and document["only_expiring"] is True
    assert f"certificates.renew_days: {renew_days}" in document["reason"]
    # without the runbook configured, nothing is started
    assert renew_certificates_if_due(replace(ctx, rotate=None), 1.0, NOW) == []
