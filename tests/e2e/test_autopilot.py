"""The whole autopilot: real etcd, template.yaml in emulated AWS, HealthCheck on a timer, ReplaceMember
run by the Step Functions interpreter with our handlers in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from autopilot_scenarios import executions, finished, follower, healthy, running_autopilot, wait_for, wait_rounds
from builders import Writer
from etcd_versions import E2E_VERSIONS, ETCD_VERSIONS

from etcdops.app.approval import decide_approval
from etcdops.app.probe import probe_cluster
from etcdops.domain.config import ClusterConfig, loads_config
from etcdops_local.aws.stack import LocalAws, execution_history
from etcdops_local.cli.status import LiveScreen, Runbooks, health_check_last_round
from etcdops_local.cluster import OLD_DATA_PREFIX, EtcdBinaries, LocalCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def autopilot(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    with LocalAws() as aws, running_autopilot(aws, cluster, **getattr(request, "param", {})) as pilot:
        yield pilot


def test_a_killed_member_is_replaced_and_no_acknowledged_write_is_lost(
    autopilot: SimpleNamespace, cluster: LocalCluster
) -> None:
    # Given a writer and a healthy cluster, When a follower is killed -9
    writer = Writer(cluster)
    writer.thread.start()
    victim = follower(cluster)
    cluster.kill(victim.name)

    # Then the autopilot detects it, and ReplaceMember runs to SUCCEEDED
    done = wait_for("ReplaceMember to finish", lambda: finished(autopilot))
    assert [e["status"] for e in done] == ["SUCCEEDED"], [  # the steps, with the error of the failed one
        (step.name, step.status, step.error, step.cause)
        for step in execution_history(autopilot.sfn, done[0]["executionArn"])
    ]
    writer.stop.set()
    writer.thread.join()

    # and the cluster is back to 3 healthy voters, with a new member instead of the victim
    health = wait_for(
        "3 healthy voters", lambda: (h := healthy(cluster)).has_quorum and len(h.healthy_voters) == 3 and h
    )
    ids = {m.id for m in health.voters}
    assert victim.id not in ids and len(ids) == 3 and not health.learners

    # and every acknowledged write is readable
    with cluster.client() as client:
        stored = {kv.key: kv.value for kv in client.range(b"/writer/", prefix=True).kvs}
    assert writer.acked and all(stored.get(k) == v for k, v in writer.acked.items())

    # and SNS carried a start and a finish message
    subjects = wait_for(
        "the finish message", lambda: (s := autopilot.inbox()) and any("replaced" in x for x in s) and s
    )
    assert any(s.startswith(f"etcdops: replacing member {victim.name}") for s in subjects)
    assert any(s.startswith(f"etcdops: replaced member {victim.name}") for s in subjects)
    assert len(executions(autopilot)) == 1


@pytest.mark.parametrize("autopilot", [{"approval": "always"}], indirect=True)
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_with_approval_always_a_human_decides(autopilot: SimpleNamespace, cluster: LocalCluster, decision: str) -> None:
    # Given approval: always, When a follower is paused (SIGSTOP: a hung host)
    victim = follower(cluster)
    cluster.pause(victim.name)
    members_before = {m.id for m in cluster.client().member_list()}

    # Then the runbook waits for the approval and has changed nothing yet
    running = wait_for(
        "the approval request",
        lambda: autopilot.state.load_approval(executions(autopilot)[0]["name"]) if executions(autopilot) else None,
    )
    assert running is not None
    assert {m.id for m in cluster.client().member_list()} == members_before

    # When the operator decides
    name = executions(autopilot)[0]["name"]
    decide_approval(
        name,
        decision,
        "not now" if decision == "reject" else None,  # type: ignore[arg-type]
        store=autopilot.state,
        sfn=autopilot.sfn,
        now=datetime.now(UTC),
        by="test",
    )
    done = wait_for("the execution to end", lambda: finished(autopilot))

    if decision == "approve":
        # the hung member was removed and its host retired (its process ended)
        assert done[0]["status"] == "SUCCEEDED"
        assert victim.id not in {m.id for m in cluster.client().member_list()}
        assert victim.name not in {p.name for p in cluster.ps()}
    else:
        cluster.resume(victim.name)
        # a rejection changes nothing
        assert done[0]["status"] == "FAILED"
        assert {m.id for m in cluster.client().member_list()} == members_before
        assert autopilot.state.get_lock("local") is None


def test_quorum_loss_is_escalated_and_the_named_restore_brings_the_data_back(
    autopilot: SimpleNamespace, cluster: LocalCluster
) -> None:
    # Given keys and a verified backup
    from etcdops.adapters.backup.target import open_backup_target
    from etcdops.app.backup.job import run_backup

    with cluster.client() as client:
        for i in range(50):
            client.put(f"/restore/{i:03d}", f"v{i}")
        config = cluster.config()
        store, keyring = open_backup_target(config, create_local_key=True)
        backup = run_backup(config, client, probe_cluster(client), store, keyring).manifest
        expected = {kv.key: kv.value for kv in client.range(b"/restore/", prefix=True).kvs}
        client.delete(b"/restore/000")  # a change after the backup, which the restore must undo

    # When two of three members are lost
    health = healthy(cluster)
    for member in [m for m in health.members if m.id != health.leader]:
        cluster.kill(member.name)

    # Then HealthCheck escalates, naming the backup and the exact RestoreCluster input, and changes nothing
    subjects = wait_for("the escalation", lambda: [s for s in autopilot.inbox() if "QUORUM LOST" in s])
    assert subjects and not executions(autopilot)

    # When the operator starts the restore it names and approves it
    restore_machine = autopilot.stack.state_machines["RestoreClusterStateMachine"]
    name = "restore-local-e2e"
    autopilot.sfn.start_execution(
        stateMachineArn=restore_machine,
        name=name,
        input=json.dumps({"cluster": "local", "backup_id": backup.id, "mode": "in-place"}),
    )
    wait_for("the approval request", lambda: autopilot.state.load_approval(name), timeout=120)
    decide_approval(name, "approve", None, store=autopilot.state, sfn=autopilot.sfn, now=datetime.now(UTC), by="test")

    # Then the cluster is healthy again with exactly the backed-up data
    def ended() -> dict[str, Any] | None:
        described: dict[str, Any] = autopilot.sfn.describe_execution(
            executionArn=f"{restore_machine.replace(':stateMachine:', ':execution:')}:{name}"
        )
        return described if described["status"] != "RUNNING" else None

    described = wait_for("the restore to finish", ended, timeout=300)
    assert described["status"] == "SUCCEEDED", described
    health = wait_for(
        "a healthy cluster", lambda: (h := healthy(cluster)).has_quorum and len(h.healthy_voters) == 3 and h
    )
    with cluster.client() as client:
        assert {kv.key: kv.value for kv in client.range(b"/restore/", prefix=True).kvs} == expected


def test_a_rejected_restore_touches_nothing(autopilot: SimpleNamespace, cluster: LocalCluster) -> None:
    from etcdops.adapters.backup.target import open_backup_target
    from etcdops.app.backup.job import run_backup

    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    with cluster.client() as client:
        backup = run_backup(config, client, probe_cluster(client), store, keyring).manifest
        client.put(b"/after-backup", b"kept")
    processes = [(p.name, p.pid, p.state) for p in cluster.ps()]

    # When a restore is started and the operator rejects it
    machine = autopilot.stack.state_machines["RestoreClusterStateMachine"]
    name = "restore-local-rejected"
    arn = autopilot.sfn.start_execution(
        stateMachineArn=machine, name=name, input=json.dumps({"cluster": "local", "backup_id": backup.id})
    )["executionArn"]
    wait_for("the approval request", lambda: autopilot.state.load_approval(name), timeout=120)
    decide_approval(name, "reject", "not now", store=autopilot.state, sfn=autopilot.sfn, now=datetime.now(UTC), by="t")

    # Then the execution fails, nothing was stopped or restored, and the lock is free again
    described = wait_for(
        "the restore to end",
        lambda: (d := autopilot.sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
    )
    assert described["status"] == "FAILED"
    assert [(p.name, p.pid, p.state) for p in cluster.ps()] == processes
    with cluster.client() as client:
        assert client.get(b"/after-backup") == b"kept"
    assert autopilot.state.get_lock("local") is None


# ---- repeated and partial failures (issue 9) -----------------------------------------------------------


def stored_endpoints(pilot: SimpleNamespace, cluster: LocalCluster) -> tuple[list[str], list[str], str]:
    """The endpoints of the configuration where it lives: the SSM parameter (what the functions
    read) and cluster.yaml (what the command line reads); and the parameter's type."""
    parameter = pilot.aws.client("ssm").get_parameter(Name=pilot.parameter, WithDecryption=True)["Parameter"]
    return loads_config(parameter["Value"]).endpoints, cluster.config().endpoints, parameter["Type"]


def whole(cluster: LocalCluster) -> Any:
    """The cluster's health once it has 3 healthy voters and a leader (else None)."""
    health = healthy(cluster)
    return health if health.has_quorum and len(health.healthy_voters) == 3 else None


def live_client_urls(cluster: LocalCluster) -> list[str]:
    health = healthy(cluster)
    return sorted(u for m in health.members for u in m.client_urls)


def live_screen(pilot: SimpleNamespace, config: ClusterConfig) -> LiveScreen:
    """`etcdops status --watch`'s screen on this autopilot, seeded only by the endpoints ``config``
    names (as a screen started with --endpoints, or before the first replacement, would be)."""
    arns = {"replace": pilot.machine, "restore": pilot.stack.state_machines["RestoreClusterStateMachine"]}
    return LiveScreen(
        load_config=lambda: config,
        last_round=lambda name: health_check_last_round(pilot.aws, pilot.stack.table or "", name, "autopilot"),
        runbooks=lambda: Runbooks(pilot.sfn, arns, pilot.state),
    )


def assert_the_screen_shows_the_healthy_cluster(screen: LiveScreen, cluster: LocalCluster) -> None:
    """One refresh of the live screen, as text: 3 healthy voters under the names they have now, no notes."""
    health = whole(cluster)
    text = screen.refresh()["text"]
    head, rows = text.splitlines()[0], text.split("\n\n")[1].splitlines()[1:]
    assert head.startswith(f"cluster local ({health.cluster_id:x}): QUORUM, leader {health.leader:x}, "), text
    assert "3/3 voters healthy, quorum margin 1" in head, text
    assert sorted(row.split()[0] for row in rows) == sorted(m.name for m in health.members), text
    assert all(" healthy " in row for row in rows) and "note:" not in text and "UNHEALTHY" not in text, text


@pytest.mark.timeout(1200)  # a hang guard only: every wait below has its own bound; under load repairs take minutes
def test_three_original_members_fail_one_after_another_and_each_is_repaired(
    autopilot: SimpleNamespace, cluster: LocalCluster, etcd_binaries: EtcdBinaries
) -> None:
    # Given a writer running throughout, and the live screen started on the original members only
    writer = Writer(cluster)
    writer.thread.start()
    originals = ["m3", "m2", "m1"]
    ids = {m.name: m.id for m in healthy(cluster).members}
    screen = live_screen(autopilot, cluster.config())
    assert_the_screen_shows_the_healthy_cluster(screen, cluster)

    for repaired, victim in enumerate(originals, start=1):
        # When an original member is killed -9 (the last one with both others replaced already)
        cluster.kill(victim)

        # Then the autopilot replaces it: one more ReplaceMember execution SUCCEEDED
        done = wait_for(f"the repair of {victim}", lambda n=repaired: len(ended := finished(autopilot)) >= n and ended)
        assert [e["status"] for e in done] == ["SUCCEEDED"] * repaired, [
            autopilot.sfn.describe_execution(executionArn=e["executionArn"]) for e in done
        ]
        health = wait_for("3 healthy voters", lambda: whole(cluster))
        assert ids[victim] not in {m.id for m in health.voters} and not health.learners
        # and the stored configuration names exactly the live members, where it lives
        ssm, local, kind = stored_endpoints(autopilot, cluster)
        assert sorted(ssm) == sorted(local) == live_client_urls(cluster) and kind == "SecureString"
        # and the live screen, refreshed, shows the healthy cluster under its members' names now
        assert_the_screen_shows_the_healthy_cluster(screen, cluster)
        newest = screen.refresh()["runbooks"]["newest"]
        assert (newest["runbook"], newest["status"]) == ("replace", "SUCCEEDED"), newest

    writer.stop.set()
    writer.thread.join()

    # and none of the original members is left, no acknowledged write is lost
    assert not set(ids.values()) & {m.id for m in healthy(cluster).voters}
    with cluster.client() as client:
        stored = {kv.key: kv.value for kv in client.range(b"/writer/", prefix=True).kvs}
    assert len(writer.acked) > 100 and all(stored.get(k) == v for k, v in writer.acked.items())

    # and every message named the members; none said QUORUM LOST or "unnamed"
    def all_finished() -> list[str] | None:
        subjects = autopilot.inbox()
        return list(subjects) if sum("replaced member" in s for s in subjects) == 3 else None

    subjects = wait_for("the last finish message", all_finished)
    for victim in originals:
        assert any(s.startswith(f"etcdops: replacing member {victim} of local") for s in subjects)
        assert any(s.startswith(f"etcdops: replaced member {victim} of local") for s in subjects)
    assert not [s for s in subjects if "QUORUM LOST" in s or "unnamed" in s or "FAILED" in s]
    assert all(e["name"].endswith("-a1") for e in executions(autopilot))
    if etcd_binaries.version == ETCD_VERSIONS[E2E_VERSIONS[-1]][0]:  # the rest once, on the newest (time budget)
        a_fourth_replacement_and_a_restore_leave_no_retired_members_data(autopilot, cluster, screen)


def a_fourth_replacement_and_a_restore_leave_no_retired_members_data(
    pilot: SimpleNamespace, cluster: LocalCluster, screen: LiveScreen
) -> None:
    # When a replacement member fails too (the fourth replacement)
    victim = follower(cluster)
    cluster.kill(victim.name)
    wait_for(f"the repair of {victim.name}", lambda: len(ended := finished(pilot)) >= 4 and ended)
    assert {e["status"] for e in finished(pilot)} == {"SUCCEEDED"}
    wait_for("3 healthy voters", lambda: whole(cluster))

    # and the operator restores the live cluster from its newest verified backup (one the runbooks took)
    restore = pilot.stack.state_machines["RestoreClusterStateMachine"]
    name = "restore-local-after-four"
    arn = pilot.sfn.start_execution(stateMachineArn=restore, name=name, input=json.dumps({"cluster": "local"}))
    wait_for("the approval request", lambda: pilot.state.load_approval(name), timeout=120)
    waiting = screen.refresh()
    assert [r["name"] for r in waiting["runbooks"]["running"]] == [name]
    what = pilot.state.load_approval(name).summary
    assert f"waiting for approval: {what} — approve with `etcdops approve {name}`" in waiting["text"]
    decide_approval(name, "approve", None, store=pilot.state, sfn=pilot.sfn, now=datetime.now(UTC), by="test")
    ended = wait_for(
        "the restore to end",
        lambda: (d := pilot.sfn.describe_execution(executionArn=arn["executionArn"]))["status"] != "RUNNING" and d,
        timeout=300,
    )
    assert ended["status"] == "SUCCEEDED", ended

    # Then the live screen shows the restored cluster, and its newest runbook is the restore
    assert_the_screen_shows_the_healthy_cluster(screen, cluster)
    newest = screen.refresh()["runbooks"]["newest"]
    assert (newest["name"], newest["status"]) == (name, "SUCCEEDED"), newest
    # and the state folder holds only the members that are left: no retired member's data; the old
    # data the restore set aside (kept by design, `local gc` ages it out) only in their folders
    left = sorted(p.name for p in cluster.ps())
    assert len(left) == 3 and not {"m1", "m2", "m3", victim.name} & set(left)
    assert sorted(p.name for p in (cluster.state_dir / "members").iterdir()) == left
    for member in left:
        kept = {p.name for p in cluster.member_dir(member).iterdir()}
        assert {"data", "etcd.log"} <= kept and all(
            k in ("data", "etcd.log") or k.startswith(OLD_DATA_PREFIX) or not (cluster.member_dir(member) / k).is_dir()
            for k in kept
        ), kept


def block_backups(cluster: LocalCluster) -> Path:
    """A cause that makes "Make sure a fresh verified backup exists" fail: a directory where the
    backup key file goes (there is no backup yet, so the runbook must take one, and cannot)."""
    key = Path(urlsplit(cluster.config().backup.encryption_key).path)  # type: ignore[union-attr]
    assert not key.exists()
    key.mkdir()
    return key


def statuses(pilot: SimpleNamespace) -> dict[str, str]:
    return {e["name"].rsplit("-", 1)[-1]: e["status"] for e in executions(pilot)}


@pytest.mark.parametrize(
    "autopilot",
    # attempt 2 waits 8 s after attempt 1 ended: time for the test to remove the cause; and the
    # replacement hosts come online 15 s after launch (as fresh EC2 instances do, once their SSM agent
    # registers): "Start etcd on the replacement", seconds after the launch, meets HostNotReadyError
    # and its Retry waits for the host
    [{"health": {"repair_backoff_seconds": 8}, "compute": {"boot_seconds": 15}}],
    indirect=True,
)
def test_a_repair_that_fails_once_is_retried_and_completes(autopilot: SimpleNamespace, cluster: LocalCluster) -> None:
    # Given a cause that makes the repair fail, and a member killed
    blocked = block_backups(cluster)
    victim = follower(cluster)
    cluster.kill(victim.name)

    # When the first attempt has failed, and the cause is removed
    wait_for("attempt 1 to fail", lambda: statuses(autopilot).get("a1") == "FAILED")
    blocked.rmdir()

    # Then a later round starts attempt 2, which replaces the member
    wait_for("attempt 2 to finish", lambda: statuses(autopilot).get("a2") not in (None, "RUNNING"))
    assert statuses(autopilot) == {"a1": "FAILED", "a2": "SUCCEEDED"}
    health = wait_for("3 healthy voters", lambda: whole(cluster))
    assert victim.id not in {m.id for m in health.voters}
    # and the fresh host was not online at first: etcd was started on it by a retry
    second = next(e for e in executions(autopilot) if e["name"].endswith("-a2"))
    steps = {s.name: s for s in execution_history(autopilot.sfn, second["executionArn"])}
    assert steps["Start etcd on the replacement"].attempts >= 2
    # and people were told: the failure with its cause, the second attempt, the success; no escalation
    subjects = wait_for("the finish message", lambda: any("replaced member" in s for s in autopilot.inbox()) and
                        autopilot.inbox())  # fmt: skip
    assert any(s.startswith("etcdops: ReplaceMember FAILED for local (attempt 1 of 3)") for s in subjects)
    assert any(s.startswith(f"etcdops: replacing member {victim.name} of local (attempt 2 of 3)") for s in subjects)
    assert not [s for s in subjects if "GAVE UP" in s]


def test_a_repair_that_keeps_failing_escalates_exactly_once(autopilot: SimpleNamespace, cluster: LocalCluster) -> None:
    # Given a cause that does not go away, When a member is killed
    block_backups(cluster)
    victim = follower(cluster)
    cluster.kill(victim.name)

    # Then max_repair_attempts (3) attempts run one after the other and fail, then one escalation
    escalation = wait_for("the escalation", lambda: [s for s in autopilot.inbox() if "GAVE UP" in s])
    expected = f"etcdops: REPAIR OF MEMBER {victim.name} OF local GAVE UP after 3 attempts - a human must act"
    assert escalation == [expected]
    assert statuses(autopilot) == {"a1": "FAILED", "a2": "FAILED", "a3": "FAILED"}
    # and the rounds that follow (three of them, counted) start nothing and say nothing more
    wait_rounds(autopilot, 3)
    assert len(executions(autopilot)) == 3
    assert [s for s in autopilot.inbox() if "GAVE UP" in s] == escalation
    # and the membership is untouched (the attempts failed before any change)
    assert victim.id in {m.id for m in cluster.client().member_list()}


def last_error(pilot: SimpleNamespace, execution_arn: str, state: str) -> str | None:
    """The error ``state`` of an execution failed with last (None: it has not failed, or not run)."""
    steps = [s for s in execution_history(pilot.sfn, execution_arn) if s.name == state]
    return steps[-1].error if steps else None


# the replacement host comes online 20 s after its launch: attempt 1 is aborted while it waits for it
@pytest.mark.parametrize("autopilot", [{"compute": {"boot_seconds": 20}}], indirect=True)
def test_an_attempt_aborted_halfway_is_seen_through_step_functions_and_carried_on(
    autopilot: SimpleNamespace, cluster: LocalCluster
) -> None:
    # Given attempt 1 past "Remove the failed member", retrying "Start etcd on the replacement"
    victim = follower(cluster)
    cluster.kill(victim.name)
    first = wait_for("attempt 1 to run", lambda: [e for e in executions(autopilot) if e["name"].endswith("-a1")])[0]
    starting = "Start etcd on the replacement"
    wait_for(
        "the host not to be online yet",
        lambda: last_error(autopilot, first["executionArn"], starting) == "HostNotReadyError",
    )
    assert victim.id not in {m.id for m in cluster.client().member_list()}  # removed already
    assert autopilot.state.get_lock("local").owner == first["name"]  # type: ignore[union-attr]

    # When it is aborted (a crash: no failure step runs, the lock stays, nothing records the end)
    autopilot.sfn.stop_execution(executionArn=first["executionArn"], error="Crash", cause="the test aborted it")

    # Then a round sees through Step Functions that it ended, releases its lock, and attempt 2 carries
    # the repair on (the member is gone already: it adds the new member) to the end
    wait_for("attempt 2 to finish", lambda: statuses(autopilot).get("a2") not in (None, "RUNNING"), timeout=240)
    assert statuses(autopilot) == {"a1": "ABORTED", "a2": "SUCCEEDED"}
    health = wait_for("3 healthy voters", lambda: whole(cluster))
    assert victim.id not in {m.id for m in health.voters} and not health.learners
    assert autopilot.state.get_lock("local") is None
    ssm, local, _ = stored_endpoints(autopilot, cluster)
    assert sorted(ssm) == sorted(local) == live_client_urls(cluster)
