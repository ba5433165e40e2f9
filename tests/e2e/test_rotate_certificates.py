"""RotateCertificates through the real state machine on a real 3-member TLS cluster (client-cert-auth on),
started by HealthCheck because the members' certificates expire within ``certificates.renew_days``, with a
writer throughout: every member is renewed one at a time without a restart, serves the new serial on its
client and peer ports, and no write fails.

One cluster, etcd 3.4.23 (the oldest under test: etcd reads its certificate on every new connection since
3.2; the pki test of tests/integration/test_cli.py runs client TLS on 3.4.23 and 3.5.30).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from autopilot_scenarios import running_autopilot, wait_for
from builders import Writer
from etcd_versions import etcd_flavour

from etcdops.adapters import pki
from etcdops_local.aws.stack import LocalAws, execution_history, wait_for_execution
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.e2e


def served(cluster: LocalCluster) -> dict[str, tuple[str, str]]:
    """The serial (hex) each member presents on its client and on its peer port, in fresh handshakes."""
    tls = cluster.tls
    return {
        m.name: tuple(  # type: ignore[misc]
            f"{pki.served_certificate(url, cert=tls.cert, key=tls.key).serial_number:x}"
            for url in (m.client_url, m.peer_url)
        )
        for m in cluster.state().members
    }


@pytest.mark.timeout(900)  # a hang guard only
def test_certificates_near_expiry_are_renewed_member_by_member_with_no_failed_write(start_cluster: Any) -> None:
    # Given a cluster whose members serve certificates that expire in 10 days (etcd picks the files up on
    # the next handshake), and a writer
    cluster: LocalCluster = start_cluster(etcd_flavour("etcd34"))
    ca = pki.load_pem(cluster.pki_dir / "ca.crt", cluster.pki_dir / "ca.key")
    for member in cluster.state().members:
        short = pki.issue_certificate(
            ca, member.name, kind="peer", dns_names=["localhost", member.name], ip_addresses=["127.0.0.1"],
            valid_days=10,
        )  # fmt: skip
        pki.write_pem(short, cluster.pki_dir / f"{member.name}.crt", cluster.pki_dir / f"{member.name}.key")
    before = served(cluster)
    assert before == {
        m.name: (f"{pki.certificate_serial(cluster.pki_dir / f'{m.name}.crt'):x}",) * 2 for m in cluster.state().members
    }
    pids = {m.name: m.pid for m in cluster.state().members}
    writer = Writer(cluster)
    writer.thread.start()
    with LocalAws() as aws, running_autopilot(aws, cluster) as pilot:
        # When HealthCheck sees CertificateExpiryDays (10) below certificates.renew_days (30, the default)
        machine = pilot.stack.state_machines["RotateCertificatesStateMachine"]
        (started,) = wait_for(
            "RotateCertificates started by HealthCheck",
            lambda: pilot.sfn.list_executions(stateMachineArn=machine)["executions"],
        )
        ended = wait_for_execution(pilot.sfn, started["executionArn"], timeout=600)
        steps = [(s.name, s.status, s.error) for s in execution_history(pilot.sfn, started["executionArn"])]

        # Then it renewed every member, one at a time, each confirmed serving its new serial
        assert ended["status"] == "SUCCEEDED", steps
        report = json.loads(ended["output"])
        assert report["only_expiring"] and sorted(report["to_rotate"]) == sorted(before)
        renewed = {r["name"]: r for r in report["rotated"]}
        now_served = served(cluster)
        for name, (client_serial, peer_serial) in now_served.items():
            assert renewed[name]["serial_before"] == before[name][0]
            assert client_serial == peer_serial == renewed[name]["serial_after"] != before[name][0]
            assert (pki.certificate_expiry(cluster.pki_dir / f"{name}.crt") - datetime.now(UTC)).days >= 364
        # (member by member: each renewal is confirmed before the next one starts)
        order = [n for n, status, _ in steps if status == "succeeded" and n.startswith(("Renew its", "Confirm it"))]
        assert order == ["Renew its certificate", "Confirm it serves the new certificate"] * 3, steps
        # and HealthCheck started it once; the next rounds see nothing due
        assert len(pilot.sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
        subject = "etcdops: renewed the certificates of 3 members of local"
        assert wait_for("the report", lambda: subject in pilot.inbox())
    # and no member was restarted, no write failed, no acknowledged write is missing
    assert {m.name: m.pid for m in cluster.state().members} == pids
    assert writer.acked and not writer.lost() and writer.failed == []
