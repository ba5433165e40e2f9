"""``etcdops --stack-name NAME``: the CLI on a deployed stack (template.yaml built in moto) with only AWS
credentials: the stack's outputs and parameters, the configuration in SSM, TLS from Secrets Manager."""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from builders import operator_config
from stack_templates import TEMPLATE

from etcdops.adapters import pki
from etcdops.adapters.etcd.client import SHA256_SIZE, EtcdClient, TlsFiles
from etcdops.adapters.state_delta import DynamoDeltaChainStore
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops_local.aws.stack import LocalAws, LocalStack, start_execution, wait_for_execution
from etcdops_local.cli import main as cli
from etcdops_local.cli.follow import EXIT_STATUS, POLL_ENV
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def deployed(shared_cluster: LocalCluster) -> Iterator[tuple[LocalAws, LocalStack]]:
    with LocalAws() as aws:
        stack = aws.build_stack(TEMPLATE, {"ClusterName": "prod"})
        # as an operator deploys it: TLS material in Secrets Manager, the configuration in SSM
        ssm, secrets = aws.client("ssm"), aws.client("secretsmanager")
        tls = shared_cluster.tls
        assert tls.ca is not None and tls.cert is not None and tls.key is not None
        parameter = stack.parameters.get("ClusterConfigParameter", "/etcdops/cluster/config")
        backup = {"destination": f"s3://{stack.bucket}/prod", "encryption_key": stack.key_arn}
        client_secrets = "etcdops/prod/client"
        operator_config(ssm, secrets, shared_cluster, "prod", parameter, secrets_at=client_secrets, backup=backup)
        yield aws, stack


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() and "--json" in argv else out), err


@pytest.fixture
def elsewhere(deployed: tuple[LocalAws, LocalStack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with no local stack, no configuration and no etcdops variables, and only the operator's
    AWS credentials in the environment; a temporary directory we can watch."""
    aws, _ = deployed
    credentials = aws.admin_credentials
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["aws_secret_access_key"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    for name in ("ETCDOPS_CONFIG", "ETCDOPS_STATE_DIR", "ETCDOPS_TABLE", "ETCDOPS_STACK", "ETCDCTL_ENDPOINTS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path


def test_status_reads_the_configuration_and_tls_secrets_of_the_stack(
    deployed: tuple[LocalAws, LocalStack], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, stack = deployed

    code, status, err = run(capsys, "--stack-name", stack.stack_name, "status", "--json")

    assert code == 0, err
    assert status["has_quorum"] and len(status["members"]) == 3
    assert list((elsewhere / "tmp").iterdir()) == []  # the fetched key is gone with the command


def test_runbooks_backups_and_approvals_come_from_the_stack_outputs(
    deployed: tuple[LocalAws, LocalStack],
    elsewhere: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aws, stack = deployed
    monkeypatch.setenv("ETCDOPS_STACK", stack.stack_name)

    assert run(capsys, "runbook", "list", "--json")[:2] == (0, [])
    code, text, _ = run(capsys, "backup", "list")
    assert code == 0 and text == f"no backups in s3://{stack.bucket}/prod\nno delta chains\n"
    code, _, err = run(capsys, "approval", "show", "replace-prod-1")
    assert code == 1 and err == "etcdops: ApprovalNotFoundError: no approval request for execution replace-prod-1\n"

    # an execution of the stack's ReplaceMember runbook (for a cluster the stack does not watch: it fails
    # at its first step) is listed and shown
    sfn = aws.client("stepfunctions")
    arn = start_execution(sfn, stack.state_machines["ReplaceMemberStateMachine"], {"cluster": "other"}, name="r-1")
    wait_for_execution(sfn, arn, timeout=600)
    code, listed, err = run(capsys, "runbook", "list", "--json")
    assert code == 0 and [(e["runbook"], e["name"], e["status"]) for e in listed] == [("replace", "r-1", "FAILED")]
    code, shown, err = run(capsys, "runbook", "show", "r-1", "--json")
    assert code == 0 and shown["arn"] == arn and shown["steps"], err

    # UpgradeCluster is started on the stack's state machine and followed to its end (--wait: JSON lines,
    # the exit status by how it ended), then listed and shown the same way
    monkeypatch.setenv(POLL_ENV, "0.2")
    waited = cli.main(["runbook", "start", "upgrade", "--version", "3.6.0", "--json", "--wait"])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    started, ended = lines[0], lines[-1]
    assert started["event"] == "started" and started["input"]["version"] == "3.6.0", err
    assert started["input"]["cluster"] == "prod"
    machine = stack.state_machines["UpgradeClusterStateMachine"]
    assert started["arn"].startswith(machine.replace(":stateMachine:", ":execution:"))
    status = sfn.describe_execution(executionArn=started["arn"])["status"]
    assert ended["event"] == "ended" and ended["status"] == status != "RUNNING", lines
    assert waited == ended["exit_status"] == EXIT_STATUS[status], err
    entered = [e["step"] for e in lines if e["event"] == "entered"]
    assert entered[0] == "Apply defaults"
    code, listed, err = run(capsys, "runbook", "list", "--json")
    assert code == 0 and (listed[0]["runbook"], listed[0]["name"]) == ("upgrade", started["execution"]), err
    code, shown, err = run(capsys, "runbook", "show", started["execution"], "--json")
    assert code == 0 and shown["input"]["version"] == "3.6.0" and shown["steps"][0]["name"] == "Apply defaults", err
    assert [s["name"] for s in shown["steps"]] == entered  # every step it went through was told, once
    # followed again once it ended (runbook show --follow): the same story, the same exit status
    assert cli.main(["runbook", "show", started["execution"], "--follow", "--json"]) == waited
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == lines[1:]


def test_pki_issues_client_certificates_into_the_stacks_secrets_that_the_cluster_accepts(
    deployed: tuple[LocalAws, LocalStack],
    elsewhere: Path,
    shared_cluster: LocalCluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aws, stack = deployed
    secrets = aws.client("secretsmanager")
    # the cluster's CA where a deployed stack keeps it (README: Deploying to AWS)
    ca = pki.load_pem(shared_cluster.pki_dir / "ca.crt", shared_cluster.pki_dir / "ca.key")
    secrets.create_secret(
        Name="etcdops/prod/ca",
        SecretString=json.dumps({"certificate": ca.cert_pem.decode(), "private_key": ca.key_pem.decode()}),
    )
    where = ("--stack-name", stack.stack_name)

    code, issued, err = run(capsys, *where, "pki", "issue-client", "kube-apiserver", "--days", "7", "--json")

    assert code == 0 and issued["location"] == "etcdops/prod/clients/kube-apiserver", err
    tags = {t["Key"]: t["Value"] for t in secrets.describe_secret(SecretId=issued["location"])["Tags"]}
    assert tags["etcdops:fleet"] == stack.stack_name  # the stack's grants on its fleet's issued clients need it
    stored = json.loads(secrets.get_secret_value(SecretId=issued["location"])["SecretString"])
    (elsewhere / "api.crt").write_text(stored["certificate"])
    (elsewhere / "api.key").write_text(stored["private_key"])
    (elsewhere / "ca.crt").write_text(stored["ca"])
    tls = TlsFiles(ca=elsewhere / "ca.crt", cert=elsewhere / "api.crt", key=elsewhere / "api.key")
    with EtcdClient(shared_cluster.config().endpoints, tls=tls) as client:  # client-cert-auth is on
        client.put("/pki/from-the-stack", "yes")
        assert client.get("/pki/from-the-stack") == b"yes"
    code, listed, err = run(capsys, *where, "pki", "list", "--json")
    assert code == 0 and [(c["role"], c["name"]) for c in listed] == [("ca", "ca"), ("client", "kube-apiserver")], err
    assert listed[1]["serial"] == issued["serial"]
    # the same name again without --force: one line, the secret unchanged
    versions = secrets.describe_secret(SecretId=issued["location"])["VersionIdsToStages"]
    code, _, err = run(capsys, *where, "pki", "issue-client", "kube-apiserver")
    assert code == 2 and "already has a certificate" in err and len(err.splitlines()) == 1
    assert secrets.describe_secret(SecretId=issued["location"])["VersionIdsToStages"] == versions


def test_a_stack_that_does_not_exist_is_one_line(
    deployed: tuple[LocalAws, LocalStack], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--stack-name", "nope", "runbook", "list")

    assert code == 1 and err == "etcdops: NotFoundError: --stack-name: no stack nope in us-east-1\n"


def test_cluster_add_refuses_a_tls_secret_the_functions_could_not_read_and_takes_it_once_tagged(
    deployed: tuple[LocalAws, LocalStack], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the operator registers with their own credentials; the tag decides what the functions' roles may read
    aws, stack = deployed
    secrets, ssm = aws.client("secretsmanager"), aws.client("ssm")
    arn = secrets.create_secret(Name="etcdops/c2/client/ca", SecretString="pem")["ARN"]
    (elsewhere / "c2.yaml").write_text(f"name: c2\nendpoints: [https://127.0.0.1:2379]\ntls: {{ca: '{arn}'}}\n")
    registry = stack.parameters.get("ClusterRegistryPath") or "/etcdops/clusters"
    health_check = aws.function_session(stack, "HealthCheckFunction").client("secretsmanager")
    aws.authorizer.expect_denied("HealthCheckFunction", "secretsmanager:GetSecretValue")
    with pytest.raises(ClientError, match="AccessDenied"):
        health_check.get_secret_value(SecretId=arn)  # what every round of c2 would meet

    code, out, err = run(capsys, "--stack-name", stack.stack_name, "cluster", "add", "c2.yaml")
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert err.startswith("etcdops: ConfigError: nothing registered: cluster c2: ") and err.endswith(
        f"tag them with: aws secretsmanager tag-resource --region {aws.region} --secret-id etcdops/c2/client/ca "
        f"--tags Key=etcdops:fleet,Value={stack.stack_name}\n"
    ), err
    assert ssm.get_parameters_by_path(Path=registry)["Parameters"] == []
    alarms = aws.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{stack.stack_name}-etcd-c2-")
    assert alarms["MetricAlarms"] == []

    secrets.tag_resource(SecretId=arn, Tags=[{"Key": "etcdops:fleet", "Value": stack.stack_name}])
    try:
        code, out, err = run(capsys, "--stack-name", stack.stack_name, "cluster", "add", "c2.yaml")
        assert code == 0 and out.startswith("cluster c2 added"), err
        assert health_check.get_secret_value(SecretId=arn)["SecretString"] == "pem"
    finally:
        run(capsys, "--stack-name", stack.stack_name, "cluster", "remove", "c2")
        secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def database_sha256(path: Path) -> str:
    """The sha256 of a snapshot file's database, checked against the trailer etcd appends to it."""
    data = path.read_bytes()
    digest = hashlib.sha256(data[:-SHA256_SIZE]).hexdigest()
    assert data[-SHA256_SIZE:].hex() == digest, f"{path}: the sha256 trailer does not match the database"
    return digest


def test_backups_and_snapshots_use_the_stack_bucket_key_and_tls_secrets(
    deployed: tuple[LocalAws, LocalStack],
    elsewhere: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, stack = deployed
    monkeypatch.setenv("ETCDOPS_STACK", stack.stack_name)

    code, made, err = run(capsys, "backup", "run", "--json")
    assert code == 0, err
    assert made["uri"].startswith(f"s3://{stack.bucket}/prod/") and made["key_id"] == stack.key_arn, made
    code, listed, err = run(capsys, "backup", "list", "--json")
    assert code == 0, err
    assert [(b["id"], b["incarnation"]) for b in listed["backups"]] == [(made["id"], "live")]

    code, verified, err = run(capsys, "backup", "verify", made["id"], "--json")
    assert code == 0 and verified["ok"] and verified["sha256"] == made["sha256"], err
    code, fetched, err = run(capsys, "backup", "fetch", made["id"], "fetched.db", "--json")
    assert code == 0 and fetched["sha256"] == made["sha256"], err
    assert database_sha256(elsewhere / "fetched.db") == made["sha256"]

    code, saved, err = run(capsys, "snapshot", "save", "saved.db", "--json")
    assert code == 0, err
    assert database_sha256(elsewhere / "saved.db") == saved["sha256"]
    code, inspected, err = run(capsys, "snapshot", "inspect", "saved.db", "--json")
    assert code == 0 and inspected["sha256_trailer"] and inspected["total_keys"] > 0, err
    code, inspected, err = run(capsys, "snapshot", "inspect", "fetched.db", "--json")
    assert code == 0 and inspected["sha256_trailer"], err
    assert [inspected[k] for k in ("hash", "revision", "total_keys")] == [
        verified[k] for k in ("hash", "revision", "total_keys")
    ]
    assert list((elsewhere / "tmp").iterdir()) == []  # the fetched TLS key is gone with each command

    # a snapshot file taken outside etcdops is imported into the stack's bucket under its key
    code, imported, err = run(capsys, "backup", "import", "saved.db", "--json")
    assert code == 0, err
    assert imported["uri"].startswith(f"s3://{stack.bucket}/prod/") and imported["key_id"] == stack.key_arn
    assert imported["imported"]["file"] == "saved.db" and imported["sha256"] == saved["sha256"]
    code, verified, err = run(capsys, "backup", "verify", imported["id"], "--json")
    assert code == 0 and verified["total_keys"] == inspected["total_keys"], err
    code, listed, err = run(capsys, "backup", "list", "--json")
    assert [(b["id"], b["incarnation"]) for b in listed["backups"]] == [(imported["id"], "other"), (made["id"], "live")]
    (elsewhere / "cut.db").write_bytes((elsewhere / "saved.db").read_bytes()[:-1])
    code, _, err = run(capsys, "backup", "import", "cut.db")
    assert code == 1 and "leaves no sha256 trailer" in err and err.count("\n") == 1, err


def test_a_delta_backup_by_hand_continues_the_stack_chain_and_verify_reads_it_back(
    deployed: tuple[LocalAws, LocalStack],
    elsewhere: Path,
    shared_cluster: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aws, stack = deployed
    monkeypatch.setenv("ETCDOPS_STACK", stack.stack_name)
    code, first, err = run(capsys, "backup", "run", "--kind", "delta", "--json")
    assert code == 0 and first["action"] == "new-chain" and first["backup_id"], err
    with shared_cluster.client() as client:
        client.put("/delta-by-hand", "1")
    code, second, err = run(capsys, "backup", "run", "--kind", "delta", "--json")
    assert code == 0 and second["action"] == "delta" and second["events"] >= 1, err
    code, text, err = run(capsys, "backup", "run", "--kind", "delta")
    assert code == 0 and text.startswith("nothing to store: no write since revision"), err
    head = DynamoDeltaChainStore(DynamoStateStore(stack.table or "", aws.client("dynamodb"))).load_chain_head("prod")
    assert head is not None and (head.last_delta, head.chain_id) == (second["delta_id"], first["backup_id"])

    code, verified, err = run(capsys, "backup", "verify", first["backup_id"], "--json")
    (chain,) = [c for c in verified["delta_chains"] if c["chain"] == first["backup_id"]]
    assert code == 0 and (chain["broken"], chain["deltas"], chain["to_revision"]) == (False, 1, second["last_revision"])


def test_status_shows_the_last_decision_of_the_stack_health_check(
    deployed: tuple[LocalAws, LocalStack],
    elsewhere: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aws, stack = deployed
    monkeypatch.setenv("ETCDOPS_STACK", stack.stack_name)
    code, text, err = run(capsys, "status")
    assert code == 0 and text.endswith("last round (-): skipped: no health round yet\n"), err

    # the stack's HealthCheck runs once (as its schedule fires it) and writes its decision to the state table
    schedule = json.loads((Path(__file__).parents[2] / "events" / "health_schedule.json").read_text())
    response = aws.client("lambda").invoke(
        FunctionName=stack.functions["HealthCheckFunction"], Payload=json.dumps(schedule)
    )
    assert "FunctionError" not in response, response["Payload"].read()
    capsys.readouterr()  # the function's own log lines
    written = DynamoStateStore(stack.table or "", aws.client("dynamodb")).load_last_decision("prod")
    assert written is not None

    code, text, err = run(capsys, "status")
    assert code == 0, err
    shown = f"stack {stack.stack_name} HealthCheck): {written.decision.action}\n  reason: {written.decision.reason}\n"
    assert f"last decision ({written.decided_at.isoformat(timespec='seconds')}, {shown}" in text, text

    main_thread = threading.main_thread()
    sleep = time.sleep

    def ctrl_c_in_the_watch(seconds: float) -> None:  # the watch's pause between refreshes: Ctrl-C
        if threading.current_thread() is main_thread:
            raise KeyboardInterrupt
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", ctrl_c_in_the_watch)
    code, watched, err = run(capsys, "status", "--watch", "--json")
    assert code == 0, err
    assert watched["status"]["has_quorum"] and watched["last_round"]["decision"] == written.decision.to_dict()
