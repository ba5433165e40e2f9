"""RotateCertificates' steps on a real 3-member TLS cluster of etcd 3.5.30 with a writer, each step run twice
(invariant 7: a retried step converges). The state machine runs them on 3.4.23 in
tests/e2e/test_rotate_certificates.py, started by HealthCheck."""

from __future__ import annotations

from typing import Any

import pytest
from builders import Writer
from etcd_versions import etcd_flavour
from retries import with_retries
from test_replace_steps import context_for

from etcdops.adapters import pki
from etcdops.app.runbook import RunbookContext, rotate
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.integration


def twice(ctx: RunbookContext, step: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Run ``step`` (retried while the cluster is not ready yet), then again on its own output."""
    done = with_retries(lambda: rotate.run_step(ctx, step, doc))
    return with_retries(lambda: rotate.run_step(ctx, step, done))


def serials(cluster: LocalCluster) -> dict[str, set[str]]:
    tls = cluster.tls
    return {
        m.name: {
            f"{pki.served_certificate(url, cert=tls.cert, key=tls.key).serial_number:x}"
            for url in (m.client_url, m.peer_url)
        }
        for m in cluster.state().members
    }


def test_every_member_renewed_in_turn_without_a_restart_or_a_failed_write(start_cluster: Any) -> None:
    cluster: LocalCluster = start_cluster(etcd_flavour("etcd3530"))
    ctx = context_for(cluster)
    doc: dict[str, Any] = {"cluster": "local", "execution": "rotate-test"}

    # A paused member: refused before anything changes
    cluster.pause("m3")
    try:
        with pytest.raises(rotate.RotationRefusedError, match="m3"):
            rotate.run_step(ctx, "CheckCertificates", doc)
    finally:
        cluster.resume("m3")

    # Fresh certificates are not due: HealthCheck's only_expiring finds nothing to do
    due = with_retries(lambda: rotate.run_step(ctx, "CheckCertificates", {**doc, "only_expiring": True}))
    assert due["nothing_to_do"] and due["to_rotate"] == []

    before, pids = serials(cluster), {m.name: m.pid for m in cluster.state().members}
    writer = Writer(cluster)
    writer.thread.start()
    doc = twice(ctx, "AcquireLock", doc)
    doc = twice(ctx, "CheckCertificates", doc)
    assert doc["to_rotate"] == ["m1", "m2", "m3"] and not doc["nothing_to_do"]
    assert {name: {m["serial_before"]} for name, m in doc["members"].items()} == before
    doc = twice(ctx, "Preflight", doc)
    turns = []
    while not (doc := twice(ctx, "NextMember", doc))["done"]:
        doc = twice(ctx, "RenewMember", doc)  # the second run issues another one: that is the one served
        turns.append(doc["current"]["name"])
        doc = twice(ctx, "ConfirmServed", doc)
    doc = rotate.run_step(ctx, "ReleaseLock", doc)

    after = serials(cluster)
    assert turns == ["m1", "m2", "m3"]
    for entry in doc["rotated"]:
        assert after[entry["name"]] == {entry["serial_after"]} != before[entry["name"]]
        assert {entry["serial_before"]} == before[entry["name"]]
    assert {m.name: m.pid for m in cluster.state().members} == pids  # none restarted
    assert writer.acked and not writer.lost() and writer.failed == []
    assert "m1: certificate" in rotate.report(doc)
