"""Builders for what a probe round observes (the health model), shared by every test tier, etcd
binaries whose ``etcdutl`` is a stand-in script (:func:`binaries_with_etcdutl`) or whose ``etcd`` stops
starting (:func:`binaries_failing_after`), a :class:`Writer` that remembers every write
etcd acknowledged, and :func:`discard`, the teardown of a test's cluster.

``member(3)`` is a healthy voter named ``etcd-3`` at 10.0.0.3; an unhealthy one carries the error
a probe gives a member that does not answer, unless the test names another. Fields a test does
not set stay unknown (``None``), as they are for a member that did not answer status.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from etcdops.domain.errors import EtcdNoSpaceError, EtcdopsError
from etcdops.domain.health import Alarm, ClusterHealth, MemberHealth
from etcdops_local.aws.stack import LocalAws, LocalStack
from etcdops_local.cluster import SCRATCH_DIR, EtcdBinaries, LocalCluster

CLUSTER_ID = 0xC1
NO_ANSWER = "context deadline exceeded"


def member(
    member_id: int,
    name: str | None = None,
    *,
    healthy: bool = True,
    learner: bool = False,
    error: str | None = None,
    db_size: int | None = None,
    db_size_in_use: int | None = None,
    raft_index: int | None = None,
    raft_term: int | None = None,
    leader: int | None = None,
    version: str | None = None,
) -> MemberHealth:
    return MemberHealth(
        id=member_id,
        name=name if name is not None else f"etcd-{member_id}",
        client_urls=(f"https://10.0.0.{member_id}:2379",),
        peer_urls=(f"https://10.0.0.{member_id}:2380",),
        is_learner=learner,
        healthy=healthy,
        error=error if error is not None or healthy else NO_ANSWER,
        db_size=db_size,
        db_size_in_use=db_size_in_use,
        raft_index=raft_index,
        raft_term=raft_term,
        leader=leader,
        version=version,
    )


def cluster(
    *members: MemberHealth,
    leader: int | None = 1,
    alarms: tuple[Alarm, ...] = (),
    cluster_id: int = CLUSTER_ID,
    observed_at: datetime | None = None,
    cluster_version: str | None = None,
) -> ClusterHealth:
    return ClusterHealth(
        cluster_id=cluster_id,
        leader=leader,
        members=members,
        alarms=alarms,
        observed_at=observed_at,
        cluster_version=cluster_version,
    )


def configured_stack(aws: LocalAws, template: Path, cluster: LocalCluster | None = None, **config: Any) -> LocalStack:
    """The stack of ``template`` for cluster ``local``, its configuration where the template says it lives:
    ``cluster``'s endpoints and TLS files (local paths), backups to the stack's bucket and key; ``config``
    adds or replaces top-level keys."""
    stack = aws.build_stack(template, {"ClusterName": "local"})
    document: dict[str, Any] = {"name": "local"}
    if cluster is not None:
        tls = cluster.tls
        document["endpoints"] = cluster.config().endpoints
        document["tls"] = {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)}
    document["backup"] = {"destination": f"s3://{stack.bucket}/etcd/local", "encryption_key": stack.key_arn}
    aws.client("ssm").put_parameter(
        Name=stack.parameters["ClusterConfigParameter"], Type="SecureString", Value=json.dumps({**document, **config})
    )
    return stack


def trust_policy(principal: dict[str, str], **condition: Any) -> str:
    """A role's trust policy (the AssumeRolePolicyDocument AWS requires of every role) letting ``principal``
    (``{"Service": "ec2.amazonaws.com"}``, ``{"AWS": account}``) assume it when every ``condition`` holds
    (``StringEquals={"sts:ExternalId": "fleet-7"}``)."""
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def host_instance_profile(iam: Any, profile: str, role: str | None = None) -> str:
    """The instance profile ``profile`` of an etcd host's role (``role``, else the profile's name), a role
    EC2 may assume (what an instance profile's role must trust to give its instances credentials)."""
    role = role or profile
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust_policy({"Service": "ec2.amazonaws.com"}))
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=role)
    return profile


def operator_config(
    ssm: Any, secrets: Any, cluster: LocalCluster, name: str, parameter: str, *, secrets_at: str = "", **more: Any
) -> dict[str, Any]:
    """Cluster ``name``'s configuration as an operator deploys it: ``cluster``'s TLS files as secrets
    ``<secrets_at>/ca|cert|key`` (by default ``etcdops/<name>``), the document that names them and the
    cluster's endpoints (``more`` adds top-level keys) in the SecureString parameter ``parameter``."""
    prefix, tls = secrets_at or f"etcdops/{name}", cluster.tls
    arns = {
        field: secrets.create_secret(Name=f"{prefix}/{field}", SecretString=path.read_text())["ARN"]
        for field, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key))
        if path
    }
    document = {"name": name, "endpoints": cluster.config().endpoints, "tls": arns, **more}
    ssm.put_parameter(Name=parameter, Type="SecureString", Value=json.dumps(document))
    return document


def discard(cluster: LocalCluster) -> None:
    """End every member process of a test's cluster (and of its restore-drill scratch stack) with SIGKILL.

    The teardown of a cluster whose data goes with the test: ``down()`` stops the members one after the
    other with SIGTERM, and etcd hands its leadership over or waits for its peers on the way out (about
    1.2 s for 3 members, 7 s when all stop at once), which a cluster thrown away does not need. The
    graceful stop is still run where a test calls ``down()`` or ``etcdops local down`` itself."""
    for stack in (cluster, LocalCluster(cluster.state_dir / SCRATCH_DIR)):
        if stack.exists():
            for process in stack.ps():
                if process.state != "stopped":
                    stack.kill(process.name)


def binaries_with_etcdutl(binaries: EtcdBinaries, bin_dir: Path, script: str) -> EtcdBinaries:
    """``binaries``' etcd and etcdctl, and ``script`` (a whole shell script) as etcdutl, in ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("etcd", "etcdctl"):
        (bin_dir / name).symlink_to(getattr(binaries, name))
    etcdutl = bin_dir / "etcdutl"
    etcdutl.write_text(script)
    etcdutl.chmod(0o755)
    return EtcdBinaries.locate(bin_dir)


def snapshot_file_damaged(snapshot: Path, *, retrailer: bool) -> bytes:
    """The bytes of ``snapshot`` (an ``etcdctl snapshot save`` file) with both bbolt meta pages damaged.

    ``retrailer=False``: the sha256 trailer is the original one, so it no longer matches (a corrupt
    copy); ``retrailer=True``: the trailer is recomputed over the damaged database, so only the
    database's own structure can tell (a tampered file)."""
    data = bytearray(snapshot.read_bytes())
    db = data[:-32]
    page_size = int.from_bytes(db[24:28], "little")  # meta page 0: header 16 bytes, magic, version, page size
    for meta in (0, page_size):
        db[meta + 64] ^= 0xFF  # a byte of the txid: the meta page's checksum no longer matches
    trailer = hashlib.sha256(db).digest() if retrailer else bytes(data[-32:])
    return bytes(db) + trailer


def binaries_failing_after(binaries: EtcdBinaries, bin_dir: Path, starts: int) -> EtcdBinaries:
    """``binaries``, except that their etcd runs for the first ``starts`` starts only and exits at once on
    every later one (a binary that is broken on some hosts, whichever they turn out to be); ``etcd
    --version`` still says the version, as a bad build would."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("etcdctl", "etcdutl"):
        if getattr(binaries, name) is not None:
            (bin_dir / name).symlink_to(getattr(binaries, name))
    etcd, count = bin_dir / "etcd", bin_dir / "starts"
    etcd.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = --version ] && exec {binaries.etcd} --version\n'
        f"n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}\n"
        f'[ $n -gt {starts} ] && {{ echo "broken etcd" >&2; exit 1; }}\n'
        f'exec {binaries.etcd} "$@"\n'
    )
    etcd.chmod(0o755)
    return EtcdBinaries.locate(bin_dir)


QUOTA = 512 * 1024
"""The backend quota of the maintenance tests' small clusters (``local up --quota-backend-bytes``)."""


NOSPACE_PATIENCE = 120.0
"""Seconds :func:`write_until_nospace` waits for etcd to see its size over the quota: a hang guard only (it does
at its next backend commit, within 100 ms on a quiet machine)."""


def write_until_nospace(
    cluster: LocalCluster, writes: Iterable[tuple[bytes, bytes]], quota: int
) -> tuple[dict[bytes, bytes], tuple[bytes, bytes]]:
    """Makes the ``writes`` until etcd refuses one with NOSPACE: the acknowledged last values, and the refused
    write (etcd may have applied it all the same: its apply-time quota check answers NOSPACE after applying
    the put). etcd judges a write by its database's size at its last backend commit (every ~100 ms), so how
    many writes a fast burst gets in past the quota depends on the machine; once the quota's worth is
    written, this waits until the member written to reports a size over the quota, and then the next write
    must be refused."""
    acked: dict[bytes, bytes] = {}
    written, over = 0, False
    with cluster.client() as client:
        for key, value in writes:
            try:
                client.put(key, value)
            except EtcdNoSpaceError:
                return acked, (key, value)
            assert not over, f"etcd took a write with its size over its {quota}-byte quota: is the quota applied?"
            acked[key] = value
            written += len(key) + len(value)
            if written > quota:
                give_up = time.monotonic() + NOSPACE_PATIENCE
                while not (over := client.status().db_size >= quota) and time.monotonic() < give_up:
                    time.sleep(0.05)
                assert over, f"etcd's database stayed under its {quota}-byte quota after {written} bytes written"
    raise AssertionError("the writes ran out before etcd refused one")


def fill_to_nospace(cluster: LocalCluster) -> tuple[dict[bytes, bytes], tuple[bytes, bytes]]:
    """Overwrites 8 keys with 8 KiB values until a cluster made with a ``QUOTA`` backend quota refuses with
    NOSPACE (history that compaction can free), by :func:`write_until_nospace`."""
    overwrites = ((f"/fill/{i % 8}".encode(), (f"{i:06d}" * 1366).encode()[:8192]) for i in itertools.count())
    return write_until_nospace(cluster, overwrites, QUOTA)


def none_lost(stored: dict[bytes, bytes], acked: dict[bytes, bytes], refused: tuple[bytes, bytes]) -> bool:
    """Every acknowledged last value is stored, except where the refused write (applied after all) replaced it."""
    return all(stored.get(key) == value or (key, stored.get(key)) == refused for key, value in acked.items())


class Writer:
    """Writes keys continuously and remembers every write etcd acknowledged, and when (``time.monotonic()``,
    start and end) each write that failed was tried."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.acked: dict[bytes, bytes] = {}
        self.failed: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.renew = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def reload_files(self) -> None:
        """The writer opens a new client between two writes, reading the TLS files as they are now (as a
        client does that is given a new CA bundle or certificate); returns once it has."""
        self.renew.set()
        while self.renew.is_set() and self.thread.is_alive():
            time.sleep(0.01)

    def run(self) -> None:
        i = 0
        client = self.cluster.client(timeout=2.0)
        try:
            while not self.stop.is_set():
                if self.renew.is_set():
                    client.close()
                    client = self.cluster.client(timeout=2.0)
                    self.renew.clear()
                key, value = f"/writer/{i:06d}".encode(), f"v{i}".encode()
                tried = time.monotonic()
                try:
                    client.put(key, value)
                    self.acked[key] = value
                except Exception:  # a write that was not acknowledged is not promised
                    self.failed.append((tried, time.monotonic()))
                    time.sleep(0.1)
                    client.close()
                    client = self.cluster.client(timeout=2.0)  # the members may have changed
                i += 1
                time.sleep(0.02)
        finally:
            client.close()

    def failed_outside(self, spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
        """The failed writes that were not in flight during any of ``spans`` (``time.monotonic()`` start and
        end): a write tried just before a span began is still in flight when a restart or a leadership move
        in it drops the proposal, however fast or slow the machine."""
        spans = list(spans)
        return [
            (tried, ended)
            for tried, ended in self.failed
            if not any(tried <= end and ended >= start for start, end in spans)
        ]

    def lost(self) -> dict[bytes, bytes]:
        """Stops writing; the acknowledged writes the cluster does not have (empty: none lost)."""
        self.stop.set()
        self.thread.join()
        with self.cluster.client() as client:
            stored = {kv.key: kv.value for kv in client.range(b"/writer/", prefix=True).kvs}
        return {k: v for k, v in self.acked.items() if stored.get(k) != v}


class Sampler:
    """Reads the member list every 50 ms while a runbook changes it: the most learners and the voter counts
    seen (``most_learners``, ``voters``), and how many samples were taken."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.most_learners = 0
        self.voters: set[int] = set()
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        client = self.cluster.client(timeout=2.0)
        try:
            while not self.stop.is_set():
                try:
                    listed = client.member_list()
                except EtcdopsError:
                    client.close()
                    client = self.cluster.client(timeout=2.0)
                    continue
                learners = sum(1 for m in listed if m.is_learner)
                self.most_learners = max(self.most_learners, learners)
                self.voters.add(len(listed) - learners)
                self.samples += 1
                self.stop.wait(0.05)
        finally:
            client.close()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()


def led_last(upgraded: list[dict[str, Any]]) -> bool:
    """In an UpgradeCluster report (``upgraded``), no member that led when its turn came went before
    another, and the one that did went after handing its leadership to another member."""
    flags = [u["was_leader"] for u in upgraded]
    moved_to = upgraded[-1].get("leadership_moved_to") if upgraded else None
    return True not in flags[:-1] and (not flags[-1] or moved_to not in (None, upgraded[-1]["name"]))
