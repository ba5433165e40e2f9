"""RotateCertificates' CA mode step by step on a real 3-member TLS cluster of etcd 3.5.30 (client-cert-auth
on) with a writer throughout: phase 1 (new CA beside the old, both trusted, rolling restart), phase 2 (new
leaves and the operator's client certificate from the new CA), phase 3 (only the new CA trusted, rolling
restart). The writer loads the files anew between the phases, as README asks of clients. After the last
phase a client certificate of the old CA is refused and one of the new accepted; every acknowledged write
is there, and a write fails at most while a member restarts (see the end). A new start after phase 1
continues at phase 2 (the phase recorded). A client `pki issue-client` made before the rotation works
before and after it: phase 2 reissued it from the new CA in its own files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from builders import Writer
from etcd_versions import etcd_flavour
from retries import with_retries
from test_replace_steps import context_for

from etcdops.adapters import pki
from etcdops.adapters.etcd.client import EtcdClient, TlsFiles
from etcdops.adapters.pki_store import FilePki
from etcdops.app.pki import issue_client
from etcdops.app.runbook import RunbookContext, rotate
from etcdops.domain.errors import EtcdError
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.integration


def step(ctx: RunbookContext, name: str, doc: dict[str, Any]) -> dict[str, Any]:
    return with_retries(lambda: rotate.run_step(ctx, name, doc))


def run_phase(ctx: RunbookContext, doc: dict[str, Any], restarts: list[tuple[float, float]]) -> dict[str, Any]:
    """One phase as the state machine runs it: begin, every member in turn (RollMember run twice: a retried
    restart or renewal converges), finish. ``restarts`` gets the time span of each restart (phases 1, 3)."""
    doc = step(ctx, "BeginCaPhase", doc)
    while not (doc := step(ctx, "NextCaMember", doc))["members_done"]:
        started = time.monotonic()
        doc = step(ctx, "RollMember", step(ctx, "RollMember", doc))
        doc = step(ctx, "ConfirmRolled", doc)
        if doc["ca_phase"] != 2:
            restarts.append((started, time.monotonic()))
    return step(ctx, "FinishCaPhase", doc)


def test_ca_rotated_in_three_phases_with_a_writer(start_cluster: Any, tmp_path: Path) -> None:
    cluster: LocalCluster = start_cluster(etcd_flavour("etcd3530"))
    ctx = context_for(cluster)
    old_ca = pki.load_pem(cluster.pki_dir / "ca.crt", cluster.pki_dir / "ca.key")
    for name in ("client.crt", "client.key"):
        shutil.copy(cluster.pki_dir / name, tmp_path / name)
    old_client = TlsFiles(ca=cluster.trusted_ca, cert=tmp_path / "client.crt", key=tmp_path / "client.key")
    issue_client(FilePki(cluster.pki_dir, []), "kube-apiserver", days=30)
    issued = TlsFiles(ca=cluster.trusted_ca, cert=cluster.pki_dir / "clients" / "kube-apiserver.crt",
                      key=cluster.pki_dir / "clients" / "kube-apiserver.key")  # fmt: skip
    endpoints = [m.client_url for m in cluster.state().members]
    with EtcdClient(endpoints, tls=issued, timeout=3.0) as client:
        client.put(b"/issued", b"before")
    issued_serial = pki.certificate_serial(issued.cert)
    pids = {m.name: m.pid for m in cluster.state().members}
    writer = Writer(cluster)
    writer.thread.start()
    restarts: list[tuple[float, float]] = []

    doc: dict[str, Any] = {"cluster": "local", "execution": "rotate-ca-test", "mode": "ca"}
    doc = step(ctx, "CheckCa", step(ctx, "AcquireLock", doc))
    assert doc["ca_finished"] == 0
    doc = step(ctx, "NextCaPhase", doc)
    assert doc["ca_phase"] == 1 and not doc["phase_requires_approval"]
    doc = run_phase(ctx, doc, restarts)
    assert (cluster.pki_dir / "trusted-ca.crt").read_bytes().count(b"BEGIN CERTIFICATE") == 2
    restarted = {m.name: m.pid for m in cluster.state().members}
    assert all(restarted[name] != pid for name, pid in pids.items())  # each member restarted (trust reloaded)
    writer.reload_files()  # clients take the bundle between phase 1 and 3

    # A new start after phase 1 continues at phase 2 (the phase is recorded beside the CA)
    again = step(ctx, "NextCaPhase", step(ctx, "CheckCa", {k: v for k, v in doc.items() if k != "ca_finished"}))
    assert again["ca_recorded"] == {"begun": 1, "finished": 1} and again["ca_phase"] == 2

    doc = run_phase(ctx, step(ctx, "NextCaPhase", doc), restarts)
    new_ca = pki.load_pem(cluster.pki_dir / "ca.crt", cluster.pki_dir / "ca.key")
    assert new_ca.certificate != old_ca.certificate
    pki.verify_chain(new_ca, pki.load_pem(cluster.pki_dir / "client.crt", cluster.pki_dir / "client.key"))
    assert [r["name"] for r in doc["rotated"]] == ["m1", "m2", "m3"]
    writer.reload_files()  # and their certificate of the new CA before phase 3
    with EtcdClient([m.client_url for m in cluster.state().members], tls=old_client, timeout=3.0) as client:
        client.put(b"/old-ca", b"still accepted before phase 3")

    doc = step(ctx, "NextCaPhase", doc)
    assert doc["ca_phase"] == 3 and "refused" in doc["approval_summary"]
    doc = run_phase(ctx, doc, restarts)
    assert step(ctx, "NextCaPhase", doc)["done"]
    doc = rotate.run_step(ctx, "ReleaseLock", doc)
    assert ctx.compute.ca_rotation() == {"begun": 0, "finished": 0}
    assert [p["phase"] for p in doc["ca_phases"]] == [1, 2, 3]

    # The old CA's client certificate is refused, the new one accepted; every served certificate is the new CA's
    # (the server ends the TLS 1.3 session after the handshake: gRPC reports the alert as TSI_DATA_CORRUPTED)
    refused = EtcdClient([m.client_url for m in cluster.state().members], tls=old_client, timeout=3.0)
    with refused, pytest.raises(EtcdError, match=r"TSI_DATA_CORRUPTED|certificate|handshake"):
        refused.put(b"/old-ca", b"refused")
    with cluster.client() as client:
        client.put(b"/new-ca", b"accepted")
    # and the issued client, reissued in place in phase 2 (a new connection reads its files), still works
    assert pki.certificate_serial(issued.cert) != issued_serial
    with EtcdClient([m.client_url for m in cluster.state().members], tls=issued, timeout=3.0) as client:
        client.put(b"/issued", b"after")
        assert client.get(b"/issued") == b"after"
    for member in cluster.state().members:
        for url in (member.client_url, member.peer_url):
            served = pki.served_certificate(url, cert=cluster.tls.cert, key=cluster.tls.key)
            served.verify_directly_issued_by(new_ca.certificate)
    # No acknowledged write is missing, and no write failed but while a member restarted: etcd drops a
    # proposal made while leadership is handed on before the leader's restart ("raft proposal dropped",
    # not applied, not acknowledged; a client retries it), so a failed write outside a restart is an error
    assert writer.acked and not writer.lost()
    assert writer.failed_outside(restarts) == []
