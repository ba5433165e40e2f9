"""The local compute provider on real etcd: the replacement flow, stop/start, restore, targets."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from retries import retry

from etcdops.adapters.etcd.client import EtcdClient
from etcdops.domain.compute.base import Host
from etcdops.domain.compute.errors import ActionParameterError, HostNotFoundError, HostNotReadyError
from etcdops.domain.errors import (
    EtcdError,
    EtcdLearnerNotReadyError,
    EtcdUnavailableError,
    EtcdUnhealthyClusterError,
)
from etcdops_local.cluster import LocalCluster
from etcdops_local.compute import LocalComputeProvider

pytestmark = pytest.mark.integration


def add_learner(client: EtcdClient, host: Host) -> tuple[int, str]:
    """member add --learner for ``host``; returns its id and the initial-cluster string it starts with."""
    # a cluster younger than a few seconds refuses membership changes as "unhealthy": retry by design
    added = retry(lambda: client.member_add([host.peer_url], learner=True), retry_on=(EtcdUnhealthyClusterError,))
    members = client.member_list()
    initial = ",".join(f"{host.name if m.id == added.id else m.name}={m.peer_urls[0]}" for m in members if m.peer_urls)
    return added.id, initial


def answers(client: EtcdClient, host: Host) -> None:
    status = client.status(host.client_url, timeout=2.0)
    assert status.leader


def test_a_launched_host_joins_as_learner_is_promoted_and_retired(cluster: LocalCluster) -> None:
    compute = LocalComputeProvider(cluster)

    # Given a launched host: ports and certificate reserved, etcd not started; launching again is a no-op
    host = compute.launch("m4")
    assert host.state == "stopped" and host.peer_url.startswith("https://127.0.0.1:")
    assert compute.launch("m4") == host
    assert Path(compute.issue_certificates("m4")).is_file()

    with cluster.client() as client:
        # When it is added as a learner and started with --initial-cluster-state existing
        member_id, initial = add_learner(client, host)
        compute.start_etcd(host, initial, "existing")
        compute.start_etcd(host, initial, "existing")  # already running: a no-op

        # Then it catches up and can be promoted
        promoted = retry(
            lambda: client.member_promote(member_id),
            retry_on=(EtcdLearnerNotReadyError, EtcdUnavailableError),
            timeout=60,
        )
        assert not next(m for m in promoted if m.id == member_id).is_learner
        assert compute.find("m4") == Host(host.host_id, "m4", "127.0.0.1", host.peer_url, host.client_url, "running")

        # stop and start again: the member comes back with its data
        client.put("/compute/key", "before-stop")
        compute.stop_etcd(host)
        assert compute.find("m4").state == "stopped"  # type: ignore[union-attr]
        compute.start_etcd(host, initial, "existing")
        retry(lambda: answers(client, host), retry_on=(EtcdError, AssertionError))
        assert client.get("/compute/key") == b"before-stop"

    # clients are repointed through the local "load balancer" (local.json's targets), not the config
    old = compute.find("m1")
    assert old is not None
    configured = cluster.config_file.read_text()
    compute.register_target(host)
    compute.register_target(host)
    compute.deregister_target(old)
    endpoints = compute.targets()
    assert host.client_url in endpoints and old.client_url not in endpoints
    assert endpoints.count(host.client_url) == 1
    assert LocalComputeProvider(cluster).targets() == endpoints  # kept in local.json
    assert cluster.config_file.read_text() == configured

    # terminate: the process stops, the host and its data are gone; a second terminate is a no-op
    compute.terminate(host)
    compute.terminate(host)
    assert compute.find("m4") is None
    assert "m4" not in {p.name for p in cluster.ps()}
    assert not cluster.data_dir("m4").exists()
    with pytest.raises(HostNotFoundError):
        compute.stop_etcd(host)


def test_start_refuses_an_initial_cluster_without_the_host(cluster: LocalCluster) -> None:
    compute = LocalComputeProvider(cluster)
    host = compute.launch("m4")

    with pytest.raises(ActionParameterError, match="m4="):
        compute.start_etcd(host, "m1=https://127.0.0.1:1", "existing")
    assert compute.find("m4").state == "stopped"  # type: ignore[union-attr]


def test_a_host_slow_to_come_online_refuses_commands_until_it_is_online(cluster: LocalCluster) -> None:
    # Given a provider whose hosts take a while to come online, like fresh EC2 instances
    compute = LocalComputeProvider(cluster, boot_seconds=1.5)
    host = compute.launch("m4")
    assert compute.launch("m4") == host  # launching again finds it; it does not boot again
    initial = ",".join([*(f"{h.name}={h.peer_url}" for h in compute.hosts() if h.name != "m4"), f"m4={host.peer_url}"])

    # When etcd is started on it at once, Then it is not ready (a transient error), and nothing ran
    with pytest.raises(HostNotReadyError, match="not online yet") as refused:
        compute.start_etcd(host, initial, "existing")
    assert refused.value.retryable
    with pytest.raises(HostNotReadyError):
        compute.stop_etcd(host)
    assert compute.find("m4").state == "stopped"  # type: ignore[union-attr]

    # and once it is online, the same call goes through (a state machine's retry)
    retry(lambda: compute.start_etcd(host, initial, "existing"), retry_on=(HostNotReadyError,), timeout=10)
    assert compute.find("m4").state == "running"  # type: ignore[union-attr]
    compute.terminate(host)


def test_restore_data_dir_on_every_host_brings_back_the_snapshot(cluster: LocalCluster, tmp_path: Path) -> None:
    compute = LocalComputeProvider(cluster)
    snapshot = tmp_path / "snap.db"
    with cluster.client() as client:
        client.put("/restore/kept", "yes")
        endpoint = cluster.ps()[0].client_urls[0]
        stream = client.snapshot_stream(endpoint)
        data = b"".join(stream.chunks())
        assert stream.sha256 is not None
        snapshot.write_bytes(data + stream.sha256)  # what `etcdctl snapshot save` writes
        client.put("/restore/lost", "written after the snapshot")

    hosts = compute.hosts()
    initial = ",".join(f"{h.name}={h.peer_url}" for h in hosts)
    for host in hosts:
        compute.stop_etcd(host)
    result = compute.run_action(
        "restore-data-dir",
        None,
        {
            "snapshot_uri": snapshot.as_uri(),
            "sha256": hashlib.sha256(snapshot.read_bytes()).hexdigest(),
            "initial_cluster": initial,
            "initial_cluster_token": "restored-1",
        },
    )
    assert result.ok and [h.name for h in result.hosts] == ["m1", "m2", "m3"]
    for host in hosts:
        compute.start_etcd(host, initial, "new")

    cluster.wait_ready(30)
    with cluster.client() as client:
        assert retry(lambda: client.get("/restore/kept"), retry_on=(EtcdError,)) == b"yes"
        assert client.get("/restore/lost") is None

    # the old data was set aside on every member, aged from that moment: a day-old limit keeps it all
    aside = {h.name: list(cluster.member_dir(h.name).glob("data.before-restore-*")) for h in hosts}
    assert all(len(found) == 1 for found in aside.values()), aside
    assert cluster.collect_garbage(older_than=86400) == []
    # When m3 is retired, Then its data, log and marker are gone, but not what the restore set aside
    compute.terminate(next(h for h in hosts if h.name == "m3"))
    assert [p.name for p in cluster.member_dir("m3").iterdir()] == [aside["m3"][0].name]
    # When m1's and m3's old data are two days old, Then gc deletes them and m3's emptied folder, only
    two_days_ago = time.time() - 2 * 86400
    for name in ("m1", "m3"):
        os.utime(aside[name][0], (two_days_ago, two_days_ago))
    removed = cluster.collect_garbage(older_than=86400)
    assert removed == [aside["m1"][0], aside["m3"][0], cluster.member_dir("m3")]
    assert aside["m2"][0].is_dir() and cluster.data_dir("m1").is_dir() and not cluster.member_dir("m3").exists()


def test_preflight_finds_what_the_local_stack_lacks_and_changes_nothing(cluster: LocalCluster) -> None:
    """The local provider's preflight on a real stack: the CA files, the etcd binaries (run), the members,
    the hooks' programs; every finding at once."""
    from etcdops.app.runbook.restore import RESTORE_DOCUMENTS
    from etcdops.domain.compute.base import PreflightPlan
    from etcdops.domain.findings import describe_findings

    replace = PreflightPlan(launch=("m2-r1",), documents=("StartEtcd",), repoint=True, retire=("m2",))
    restore = PreflightPlan(documents=RESTORE_DOCUMENTS, commanded=("m1", "m2", "m3"), control_plane=True, repoint=True)
    hooks = {"stop-apiserver": ["true"], "start-apiserver": ["true"], "restart-control-plane": ["true"]}

    # Given a healthy stack, nothing is found
    assert LocalComputeProvider(cluster, hooks=hooks).preflight(replace) == []
    assert LocalComputeProvider(cluster, hooks=hooks).preflight(restore) == []

    # When the CA key is gone, the etcd binaries moved away, a member is unknown and a hook's program is missing
    state_before = cluster.state_file.read_text()
    (cluster.pki_dir / "ca.key").rename(cluster.pki_dir / "ca.key.moved")
    state = json.loads(state_before)
    state["bin_dir"] = str(cluster.state_dir / "no-etcd-here")
    cluster.state_file.write_text(json.dumps(state))
    broken_hooks = {**hooks, "stop-apiserver": ["/nonexistent/crictl-wrapper"]}
    try:
        compute = LocalComputeProvider(cluster, hooks=broken_hooks)
        members_before = {p.name: p.pid for p in cluster.ps()}
        launch = compute.preflight(replace)
        restoring = compute.preflight(
            PreflightPlan(documents=RESTORE_DOCUMENTS, commanded=("m1", "m9"), control_plane=True)
        )
    finally:
        (cluster.pki_dir / "ca.key.moved").rename(cluster.pki_dir / "ca.key")
        cluster.state_file.write_text(state_before)

    # Then each is named, with its fix, and nothing changed
    assert [f.check for f in launch] == ["ca", "host-command"], describe_findings(launch)
    assert "ca.key" in launch[0].problem and "no-etcd-here" in launch[1].problem
    assert [(f.check, f.subject) for f in restoring] == [
        ("host-command", f"etcd binaries of {cluster.state_dir}"),
        ("host", "member host m9"),
        ("control-plane", "hook stop-apiserver"),
    ]
    assert all(f.fix for f in (*launch, *restoring))
    assert {p.name: p.pid for p in cluster.ps()} == members_before
    assert not list(cluster.state_dir.glob(".etcdops-preflight-*")) and compute.find("m2-r1") is None
