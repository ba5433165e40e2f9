"""RotateCertificates through the real state machine on real 3-member TLS clusters (client-cert-auth on),
with a writer throughout:

* leaf mode, started by HealthCheck because the members' certificates expire within
  ``certificates.renew_days``: every member is renewed one at a time without a restart, serves the new
  serial on its client and peer ports, and no write fails;
* CA mode, started by the operator under ``approval: always`` and approved before phases 1 and 3 as a human
  does: after the last phase a certificate of the old CA is refused and the new one accepted, a client
  ``pki issue-client`` made before the rotation works before and after it (reissued in place in phase 2),
  every acknowledged write is there, and a write failed at most while a member restarted.

Both on etcd 3.4.23 (the oldest under test: etcd reads its certificate on every new connection since 3.2;
the pki test of tests/integration/test_cli.py runs client TLS on 3.4.23 and 3.5.30, and
tests/integration/test_rotate_ca_steps.py the CA rotation's steps on 3.5.30).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from autopilot_scenarios import running_autopilot, wait_for
from builders import Writer
from etcd_versions import etcd_flavour

from etcdops.adapters import pki
from etcdops.adapters.etcd.client import EtcdClient, TlsFiles
from etcdops.app.approval import decide_approval
from etcdops.domain.errors import EtcdError
from etcdops_local.aws.executions import Step
from etcdops_local.aws.stack import (
    LocalAws,
    execution_history,
    execution_name,
    start_execution,
    wait_for_execution,
)
from etcdops_local.cli import main as cli
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


def answer_approvals(pilot: SimpleNamespace, name: str, arn: str, before: Any) -> list[str]:
    """Wait for each approval the execution ``name`` asks for and approve it as the operator does (after
    ``before(summary)``), until the execution ends; the summaries asked about, in order."""
    asked: list[str] = []
    seen: set[str] = set()

    def waiting() -> Any:
        approval = pilot.state.load_approval(name)
        if approval and approval.request_id not in seen and approval.decision is None:
            return approval
        return "ended" if pilot.sfn.describe_execution(executionArn=arn)["status"] != "RUNNING" else None

    while (approval := wait_for("an approval request or the end", waiting, timeout=900)) != "ended":
        seen.add(approval.request_id)
        asked.append(approval.summary)
        before(approval.summary)
        decide_approval(name, "approve", None, store=pilot.state, sfn=pilot.sfn, now=datetime.now(UTC), by="test")
    return asked


def restart_windows(steps: list[Step]) -> list[tuple[float, float]]:
    """The monotonic-clock spans of phases 1 and 3's member restarts: each "Roll the member" step to the end
    of the "Confirm the member rolled" after it (phase 2 renews without a restart)."""
    offset = time.time() - time.monotonic()
    rolls = [i for i, s in enumerate(steps) if s.name == "Roll the member"]
    spans = []
    for n, i in enumerate(rolls):
        if 3 <= n < 6:
            continue  # phase 2's three members
        confirm = next(s for s in steps[i:] if s.name == "Confirm the member rolled")
        assert confirm.ended is not None
        spans.append((steps[i].started.timestamp() - offset, confirm.ended.timestamp() - offset))
    return spans


@pytest.mark.timeout(900)  # a hang guard only
def test_the_ca_is_rotated_through_the_state_machine_with_approvals_and_a_writer(
    start_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a 3-member cluster of etcd 3.4.23 (client-cert-auth on; 3.5.30 runs the steps in
    # tests/integration/test_rotate_ca_steps.py), a client certificate from `pki issue-client`, a copy of the
    # operator's certificate of the old CA, a policy of approval: always, and a writer
    cluster: LocalCluster = start_cluster(etcd_flavour("etcd34"))
    where = ["--state-dir", str(cluster.state_dir)]
    assert cli.main(["pki", "issue-client", "kube-apiserver", "--days", "30", *where]) == 0
    capsys.readouterr()
    issued_cert = cluster.pki_dir / "clients" / "kube-apiserver.crt"
    issued = TlsFiles(ca=cluster.trusted_ca, cert=issued_cert, key=issued_cert.with_suffix(".key"))
    issued_serial = pki.certificate_serial(issued_cert)
    for name in ("client.crt", "client.key"):
        shutil.copy(cluster.pki_dir / name, tmp_path / name)
    old_operator = TlsFiles(ca=cluster.trusted_ca, cert=tmp_path / "client.crt", key=tmp_path / "client.key")
    old_ca = pki.load_pem(cluster.pki_dir / "ca.crt", cluster.pki_dir / "ca.key")
    endpoints = [m.client_url for m in cluster.state().members]

    def put(tls: TlsFiles, value: bytes) -> None:
        with EtcdClient(endpoints, tls=tls, timeout=3.0) as client:
            client.put(b"/ca-rotation/" + value, value)

    put(issued, b"issued-before")
    writer = Writer(cluster)
    writer.thread.start()
    with LocalAws() as aws, running_autopilot(aws, cluster, approval="always", schedules=False) as pilot:
        # When the operator starts a CA rotation and approves phase 1 and, once the clients hold the bundle and
        # a certificate of the new CA, phase 3
        def before_approving(summary: str) -> None:
            if "phase 3 of 3" in summary:
                assert pki.certificate_serial(issued_cert) != issued_serial  # reissued in phase 2
                put(issued, b"issued-in-phase-2")
                put(old_operator, b"old-ca-still-accepted")  # phases 1 and 2 change nothing for old clients
                writer.reload_files()

        name = execution_name("rotate-ca")
        machine = pilot.stack.state_machines["RotateCertificatesStateMachine"]
        arn = start_execution(pilot.sfn, machine, {"cluster": "local", "mode": "ca", "reason": "test"}, name=name)
        asked = answer_approvals(pilot, name, arn, before_approving)
        ended = wait_for_execution(pilot.sfn, arn, timeout=60)
        history = execution_history(pilot.sfn, arn)
        steps = [(s.name, s.status, s.error) for s in history]

        # Then it asked before phases 1 and 3 and went through the three phases, member by member
        assert ended["status"] == "SUCCEEDED", steps
        assert len(asked) == 2 and "phase 1 of 3" in asked[0], asked
        assert "phase 3 of 3" in asked[1] and "refused" in asked[1], asked
        member = ["Pick the next member of the phase", "Roll the member", "Confirm the member rolled"]
        phase = ["Pick the next CA phase", "Begin the CA phase", *member * 3, member[0], "Finish the CA phase"]
        asking = [phase[0], "Wait for the phase approval", *phase[1:]]
        done = [n for n, status, _ in steps if status == "succeeded" and n in asking]
        assert done == [*asking, *phase, *asking, "Pick the next CA phase"], steps
        report = json.loads(ended["output"])
        assert [p["phase"] for p in report["ca_phases"]] == [1, 2, 3]
        assert wait_for("the report", lambda: "etcdops: rotated the CA of local" in pilot.inbox())

    # and a certificate of the old CA is refused now, the new one (the operator's, the issued client's) accepted
    new_ca = pki.load_pem(cluster.pki_dir / "ca.crt", cluster.pki_dir / "ca.key")
    assert new_ca.certificate != old_ca.certificate and not (cluster.pki_dir / "ca-old.crt").exists()
    with pytest.raises(EtcdError, match=r"TSI_DATA_CORRUPTED|certificate|handshake"):
        put(old_operator, b"refused")
    put(issued, b"issued-after")
    with cluster.client() as client:
        assert client.get(b"/ca-rotation/issued-after") == b"issued-after"
    for member in cluster.state().members:
        for url in (member.client_url, member.peer_url):
            pki.served_certificate(url, cert=cluster.tls.cert, key=cluster.tls.key).verify_directly_issued_by(
                new_ca.certificate
            )
    # and every acknowledged write is there; a write failed at most while a member restarted (etcd drops a
    # proposal made while leadership is handed on before a leader's restart: not applied, not acknowledged)
    assert writer.acked and not writer.lost()
    spans = restart_windows(history)
    assert writer.failed_outside(spans) == []
