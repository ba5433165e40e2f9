"""The local stack's CA rotation files, phase by phase, each phase's preparation run again and after a
crash halfway (invariant 7 and 23): pure file work in a temporary PKI directory, no etcd."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from etcdops.adapters import pki
from etcdops.domain.errors import PkiError
from etcdops_local import ca_rotation


def certs(path: Path) -> int:
    return path.read_bytes().count(b"BEGIN CERTIFICATE")


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    ca = pki.create_ca("etcdops local CA")
    pki.write_pem(ca, tmp_path / "ca.crt", tmp_path / "ca.key")
    pki.write_trusted(tmp_path / "trusted-ca.crt", [ca.cert_pem])
    pki.write_pem(pki.issue_certificate(ca, "etcdops", kind="client"), tmp_path / "client.crt", tmp_path / "client.key")
    return tmp_path


def test_three_phases_each_run_twice(pki_dir: Path) -> None:
    old = (pki_dir / "ca.crt").read_bytes()
    assert ca_rotation.recorded(pki_dir) == {"begun": 0, "finished": 0}
    ca_rotation.begin(pki_dir, 1)
    new = (pki_dir / "ca-next.crt").read_bytes()
    ca_rotation.begin(pki_dir, 1)  # the same new CA, not a second one
    assert (pki_dir / "ca-next.crt").read_bytes() == new and certs(pki_dir / "trusted-ca.crt") == 2
    assert ca_rotation.recorded(pki_dir) == {"begun": 1, "finished": 0}
    ca_rotation.finish(pki_dir, 1)
    assert ca_rotation.recorded(pki_dir) == {"begun": 1, "finished": 1}

    ca_rotation.begin(pki_dir, 2)
    ca_rotation.begin(pki_dir, 2)
    assert (pki_dir / "ca.crt").read_bytes() == new and (pki_dir / "ca-old.crt").read_bytes() == old
    assert not (pki_dir / "ca-next.crt").exists() and certs(pki_dir / "trusted-ca.crt") == 2
    new_ca = pki.load_pem(pki_dir / "ca.crt", pki_dir / "ca.key")
    pki.verify_chain(new_ca, pki.load_pem(pki_dir / "client.crt", pki_dir / "client.key"))
    ca_rotation.finish(pki_dir, 2)

    ca_rotation.begin(pki_dir, 3)
    assert (pki_dir / "trusted-ca.crt").read_bytes() == new
    ca_rotation.finish(pki_dir, 3)
    assert ca_rotation.recorded(pki_dir) == {"begun": 0, "finished": 0}
    assert not (pki_dir / "ca-old.crt").exists() and not (pki_dir / "ca-old.key").exists()


def test_a_crash_halfway_through_the_promotion_keeps_the_old_ca(pki_dir: Path) -> None:
    old = (pki_dir / "ca.crt").read_bytes()
    ca_rotation.begin(pki_dir, 1)
    # the crash: ca-old not written yet, ca.crt already the new CA's, ca-next still there
    shutil.copy(pki_dir / "ca-next.crt", pki_dir / "ca.crt")
    ca_rotation.begin(pki_dir, 2)
    assert not (pki_dir / "ca-old.crt").exists()  # the old CA was not saved as the new one
    pki.check_ca(pki.load_pem(pki_dir / "ca.crt", pki_dir / "ca.key"))  # the key matches the certificate again
    assert (pki_dir / "ca.crt").read_bytes() != old


def test_bad_phase_and_a_stack_without_a_trust_file_change_nothing(pki_dir: Path) -> None:
    with pytest.raises(PkiError, match="not a CA rotation phase"):
        ca_rotation.begin(pki_dir, 4)
    (pki_dir / "trusted-ca.crt").unlink()
    with pytest.raises(PkiError, match="predates CA rotation"):
        ca_rotation.begin(pki_dir, 1)
    assert not (pki_dir / "ca-next.crt").exists() and ca_rotation.recorded(pki_dir)["begun"] == 0


@pytest.mark.parametrize("phase", [1, 3])
def test_a_member_rolled_in_a_trust_phase_fetches_its_certificates_before_it_is_stopped(
    phase: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EC2 hosts hold the trust bundle in their own ca.crt: RollMember has it written before the restart."""
    from types import SimpleNamespace

    from etcdops.app.runbook import rotate_ca

    calls: list[str] = []
    host = SimpleNamespace(name="m2")
    compute = SimpleNamespace(find=lambda name: host, fetch_certificates=lambda h: calls.append(f"fetch {h.name}"))
    monkeypatch.setattr(rotate_ca, "stop_for_restart", lambda ctx, h, member_id: calls.append(f"stop {member_id:x}"))
    monkeypatch.setattr(rotate_ca, "start_again", lambda ctx, h, alone: calls.append(f"start {h.name}"))
    doc = {"ca_phase": phase, "current": {"name": "m2", "id": "2a"}, "to_roll": ["m1", "m2"]}

    rotate_ca.roll_member(SimpleNamespace(compute=compute), doc)  # type: ignore[arg-type]

    assert calls == ["fetch m2", "stop 2a", "start m2"]


def test_the_listing_shows_the_next_and_the_old_ca_with_the_phase(pki_dir: Path) -> None:
    """pki list on the local stack: ca-next (phase 1), ca-old (phase 2), each CA row with the recorded phase."""
    from etcdops.adapters.pki_store import FilePki

    store = FilePki(pki_dir, [])
    ca_rotation.begin(pki_dir, 1)
    rows = store.certificates()
    assert [(c.role, c.rotation) for c in rows] == [
        ("ca", {"begun": 1, "finished": 0}), ("ca-next", {"begun": 1, "finished": 0}), ("operator", None),
    ]  # fmt: skip
    assert "rotation" not in rows[-1].to_json() and rows[1].to_json()["rotation"] == {"begun": 1, "finished": 0}
    ca_rotation.finish(pki_dir, 1)
    ca_rotation.begin(pki_dir, 2)
    assert [(c.role, c.rotation) for c in store.certificates()][:2] == [
        ("ca", {"begun": 2, "finished": 1}), ("ca-old", {"begun": 2, "finished": 1}),
    ]  # fmt: skip
    ca_rotation.finish(pki_dir, 2)
    ca_rotation.begin(pki_dir, 3)
    ca_rotation.finish(pki_dir, 3)
    assert [(c.role, c.rotation) for c in store.certificates()] == [("ca", None), ("operator", None)]

    (pki_dir / "ca-rotation.json").write_text('{"begun": "one"}')
    with pytest.raises(PkiError, match="unreadable CA rotation record"):
        store.certificates()



def test_issued_clients_are_reissued_from_the_new_ca_in_phase_2_in_place(
    pki_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pki issue-client's clients follow the rotation: phase 2 writes a certificate of the new CA with the same
    name and as many days into the same files (they trust trusted-ca.crt); run again, it is kept; an expired
    one is left as it is."""
    from datetime import UTC, datetime, timedelta

    from etcdops.adapters.pki import certificates
    from etcdops.adapters.pki_store import FilePki
    from etcdops.app.pki import issue_client

    store = FilePki(pki_dir, [])
    issue_client(store, "kube-apiserver", days=30)
    clients = pki_dir / "clients"
    old = pki.load_pem(clients / "kube-apiserver.crt", clients / "kube-apiserver.key")
    with monkeypatch.context() as then:  # a client whose certificate expired 10 days ago
        then.setattr(certificates, "_now", lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(days=40))
        expired = pki.issue_certificate(pki.create_ca("an earlier CA"), "gone", kind="client", valid_days=30)
    pki.write_pem(expired, clients / "gone.crt", clients / "gone.key")
    ca_rotation.begin(pki_dir, 1)
    assert store.clients()["kube-apiserver"][0] == old  # phase 1 issues nothing

    ca_rotation.begin(pki_dir, 2)
    new = pki.load_pem(clients / "kube-apiserver.crt", clients / "kube-apiserver.key")
    pki.verify_chain(pki.load_pem(pki_dir / "ca.crt", pki_dir / "ca.key"), new)
    assert new.certificate.subject == old.certificate.subject and new.key_pem != old.key_pem
    lifetime = new.not_after - new.certificate.not_valid_before_utc
    assert lifetime == old.not_after - old.certificate.not_valid_before_utc  # as many days as before
    ca_rotation.begin(pki_dir, 2)  # run again: the reissued certificate is kept
    assert store.clients()["kube-apiserver"][0] == new and store.clients()["gone"][0] == expired
    ca_rotation.finish(pki_dir, 2)
    ca_rotation.begin(pki_dir, 3)
    ca_rotation.finish(pki_dir, 3)
    assert store.clients()["kube-apiserver"][0] == new
