"""``etcdops pki`` on an EC2 cluster: client certificates in (emulated) Secrets Manager, and the listing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws
from moto_ec2 import emulated_account

from etcdops.adapters import pki
from etcdops.adapters.pki_store import SecretsPki
from etcdops.app.pki import issue_client
from etcdops.domain.errors import PkiError, UsageError
from etcdops_local.cli import main as cli

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("prod CA")


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, ca: pki.KeyPair) -> Iterator[Any]:
    emulated_account(monkeypatch, REGION)
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        client.create_secret(
            Name="etcdops/prod/ca",
            SecretString=json.dumps({"certificate": ca.cert_pem.decode(), "private_key": ca.key_pem.decode()}),
        )
        member = pki.issue_certificate(ca, "m1", kind="peer", dns_names=["m1"], ip_addresses=["10.0.0.5"])
        client.create_secret(
            Name="etcdops/prod/members/m1",
            SecretString=json.dumps({"certificate": member.cert_pem.decode(), "private_key": member.key_pem.decode()}),
        )
        yield client


def _config(tmp_path: Path, name: str = "prod") -> Path:
    path = tmp_path / f"{name}.yaml"
    document = {
        "name": name,
        "endpoints": ["http://10.0.0.5:2379"],
        "plaintext": True,
        "compute": {"provider": "ec2", "launch_template": "lt-1", "subnets": ["subnet-0123abcd"]},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_issue_client_stores_certificate_key_and_ca_in_its_own_secret(
    secrets: Any, ca: pki.KeyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path))
    code, out, err = _cli(capsys, "pki", "issue-client", "kube-apiserver", "--days", "90", "--json", "--config", config)
    assert code == 0, err
    issued = json.loads(out)
    assert issued["location"] == "etcdops/prod/clients/kube-apiserver"
    stored = json.loads(secrets.get_secret_value(SecretId=issued["location"])["SecretString"])
    pair = pki.KeyPair(stored["certificate"].encode(), stored["private_key"].encode())
    pki.verify_chain(ca, pair)  # signed by the cluster CA, key fits
    assert stored["ca"] == ca.cert_pem.decode() and stored["client"] == "kube-apiserver"
    assert f"{pair.certificate.serial_number:x}" == issued["serial"]
    tags = {t["Key"]: t["Value"] for t in secrets.describe_secret(SecretId=issued["location"])["Tags"]}
    assert tags == {"etcdops:cluster": "prod", "etcdops:client": "kube-apiserver"}

    code, out, err = _cli(capsys, "pki", "list", "--json", "--config", config)
    listed = json.loads(out)
    assert [(c["role"], c["name"], c["location"]) for c in listed] == [
        ("ca", "ca", "etcdops/prod/ca"),
        ("member", "m1", "etcdops/prod/members/m1"),
        ("client", "kube-apiserver", "etcdops/prod/clients/kube-apiserver"),
    ]
    assert listed[1]["sans"] == ["DNS:m1", "IP:10.0.0.5"] and listed[2]["serial"] == issued["serial"]

    # an existing client is kept without --force: one line, exit 2, the secret unchanged
    version = secrets.describe_secret(SecretId=issued["location"])["VersionIdsToStages"]
    code, out, err = _cli(capsys, "pki", "issue-client", "kube-apiserver", "--config", config)
    assert (code, out) == (2, "") and "already has a certificate" in err and len(err.splitlines()) == 1
    assert secrets.describe_secret(SecretId=issued["location"])["VersionIdsToStages"] == version
    code, out, err = _cli(capsys, "pki", "issue-client", "kube-apiserver", "--force", "--json", "--config", config)
    assert code == 0 and json.loads(out)["serial"] != issued["serial"]


def test_a_client_issued_for_a_stacks_fleet_carries_its_fleet_tag(secrets: Any) -> None:
    # `pki issue-client --stack-name S`: the grants of S on a registered cluster's issued clients need the tag
    def tags(secret_id: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in secrets.describe_secret(SecretId=secret_id)["Tags"]}

    made = issue_client(SecretsPki(secrets, "prod", fleet="etcdops-prod"), "api").location
    assert tags(made) == {"etcdops:cluster": "prod", "etcdops:client": "api", "etcdops:fleet": "etcdops-prod"}
    # one issued before (no fleet known) gets the tag when replaced for the stack
    old = issue_client(SecretsPki(secrets, "prod"), "scheduler").location
    assert "etcdops:fleet" not in tags(old)
    issue_client(SecretsPki(secrets, "prod", fleet="etcdops-prod"), "scheduler", force=True)
    assert tags(old)["etcdops:fleet"] == "etcdops-prod"


def test_issue_client_for_an_unknown_cluster_or_bad_input_changes_nothing(
    secrets: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "pki", "issue-client", "api", "--config", str(_config(tmp_path, "other")))
    assert code == 1 and "no CA secret etcdops/other/ca" in err and len(err.splitlines()) == 1
    for args in (("api", "--days", "-3"), ("api", "--days", "0"), ("bad/name",)):
        code, out, err = _cli(capsys, "pki", "issue-client", *args, "--config", str(_config(tmp_path)))
        assert out == "" and code == 2 and len(err.splitlines()) == 1, err
    store = SecretsPki(secrets, "prod")
    assert [c.role for c in store.certificates()] == ["ca", "member"]  # no client secret was made
    with pytest.raises(UsageError, match="--days"):
        issue_client(store, "api", days=3651)
    with pytest.raises(PkiError, match="no CA secret"):
        SecretsPki(secrets, "nope").read_ca()


def test_pki_list_shows_the_next_and_the_old_ca_with_the_rotation_phase(
    secrets: Any, ca: pki.KeyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a CA rotation in phase 2 on EC2: the new CA promoted (its record in the CA secret), the old kept
    new = pki.create_ca("prod CA (rotated)")
    record = {"begun": 2, "finished": 1}
    for which, pair in (("ca", new), ("ca-next", new), ("ca-old", ca)):
        value = {"certificate": pair.cert_pem.decode(), "private_key": pair.key_pem.decode()}
        if which == "ca":
            secrets.put_secret_value(SecretId="etcdops/prod/ca", SecretString=json.dumps({**value, "rotation": record}))
        else:
            secrets.create_secret(Name=f"etcdops/prod/{which}", SecretString=json.dumps(value))
    config = str(_config(tmp_path))

    # Then pki list shows the three CAs, each with the phase (text and JSON)
    code, out, err = _cli(capsys, "pki", "list", "--json", "--config", config)
    listed = json.loads(out)
    assert code == 0 and [(c["role"], c.get("rotation")) for c in listed] == [
        ("ca", record), ("ca-next", record), ("ca-old", record), ("member", None),
    ], err  # fmt: skip
    assert listed[2]["subject"] == "CN=prod CA" and listed[0]["subject"] == "CN=prod CA (rotated)"
    code, out, err = _cli(capsys, "pki", "list", "--config", config)
    assert code == 0 and out.splitlines()[2].startswith("ca-next"), out
    assert "CA rotation under way: phase 2 of 3 begun, not finished (phase 2: issue every member" in out
    assert "etcdops runbook start rotate-certs --ca" in out

    # and once the rotation ended (record removed, next and old CA deleted) neither line nor field is left
    secrets.put_secret_value(SecretId="etcdops/prod/ca", SecretString=json.dumps(
        {"certificate": new.cert_pem.decode(), "private_key": new.key_pem.decode()}
    ))  # fmt: skip
    for which in ("ca-next", "ca-old"):
        secrets.delete_secret(SecretId=f"etcdops/prod/{which}", ForceDeleteWithoutRecovery=True)
    code, out, err = _cli(capsys, "pki", "list", "--config", config)
    assert code == 0 and "rotation" not in out and "ca-next" not in out, out
    # an unreadable record is one line
    secrets.put_secret_value(SecretId="etcdops/prod/ca", SecretString=json.dumps(
        {"certificate": new.cert_pem.decode(), "private_key": new.key_pem.decode(), "rotation": "phase two"}
    ))  # fmt: skip
    code, out, err = _cli(capsys, "pki", "list", "--config", config)
    assert (code, out) == (1, "") and "unreadable CA rotation record" in err and len(err.splitlines()) == 1
