"""`etcdops cluster add|list|show|remove` on a deployed stack (emulated SSM and CloudFormation), and
`--cluster NAME` choosing one local fleet cluster's state directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from etcdops.domain.errors import ConfigError
from etcdops_local.cli import main as cli
from etcdops_local.cli.options import state_dir

PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


def stack_template(maintain_arn: str) -> str:
    """An etcdops-like stack: its default cluster prod, a registry path, and MaintainCluster among its outputs."""
    text = {"Type": "String"}
    return json.dumps(
        {
            "Parameters": {"ClusterName": text, "ClusterRegistryPath": text, "ClusterConfigParameter": text},
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {"MaintainClusterStateMachineArn": {"Value": maintain_arn}},
        }
    )


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        role = "arn:aws:iam::123456789012:role/runbooks"
        maintain = boto3.client("stepfunctions").create_state_machine(name="maintain", definition=PASS, roleArn=role)
        boto3.client("ssm").put_parameter(
            Name="/fleet/prod",
            Type="SecureString",
            Value="name: prod\nendpoints: [http://10.0.0.1:2379]\nplaintext: true\n",
        )
        boto3.client("cloudformation").create_stack(
            StackName="fleet",
            TemplateBody=stack_template(maintain["stateMachineArn"]),
            Parameters=[
                {"ParameterKey": "ClusterName", "ParameterValue": "prod"},
                {"ParameterKey": "ClusterRegistryPath", "ParameterValue": "/fleet/clusters"},
                {"ParameterKey": "ClusterConfigParameter", "ParameterValue": "/fleet/prod"},
            ],
        )
        yield boto3.client("ssm")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--stack-name", "fleet", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(name: str, text: str) -> str:
    Path(name).write_text(text)
    return name


def test_clusters_are_added_listed_shown_and_removed_under_the_stacks_registry_path(
    deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    c2 = write("c2.yaml", "name: c2\nendpoints: [http://10.0.0.2:2379]\nplaintext: true\n")
    code, out, err = run(capsys, "cluster", "add", c2)
    assert code == 0, err
    added = "cluster c2 added (/fleet/clusters/c2) with 0 alarms and no dashboard: the next health round watches it"
    assert out.strip() == added  # (this stack has no alarms: tests/unit/test_cluster_watch.py has the template's)
    assert deployed.get_parameter(Name="/fleet/clusters/c2", WithDecryption=True)["Parameter"]["Type"] == "SecureString"

    code, out, _ = run(capsys, "cluster", "list", "--json")
    assert json.loads(out) == [{"cluster": "prod", "default": True}, {"cluster": "c2", "default": False}]
    code, out, _ = run(capsys, "cluster", "show", "c2", "--json")
    assert json.loads(out)["endpoints"] == ["http://10.0.0.2:2379"]

    code, out, _ = run(capsys, "cluster", "remove", "c2")
    assert code == 0 and "its backups and state are kept" in out
    assert json.loads(run(capsys, "cluster", "list", "--json")[1]) == [{"cluster": "prod", "default": True}]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("name: c2\nendpoints: [nope]\n", "etcdops: ConfigError: bad.yaml: endpoints: [0] 'nope' is not an http"),
        (
            "name: prod\nendpoints: [http://10.0.0.1:2379]\nplaintext: true\n",
            "etcdops: cluster prod is the stack's default cluster",
        ),
    ],
)
def test_bad_input_is_one_line_and_registers_nothing(
    deployed: Any, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    code, out, err = run(capsys, "cluster", "add", write("bad.yaml", text))
    assert code != 0 and out == "" and err.startswith(error) and err.count("\n") == 1
    assert deployed.get_parameters_by_path(Path="/fleet/clusters")["Parameters"] == []
    code, _, err = run(capsys, "cluster", "remove", "c9")
    assert code == 1 and err == "etcdops: NotFoundError: cluster c9 is not registered\n"


def test_cluster_names_a_fleet_clusters_own_state_directory(tmp_path: Path) -> None:
    (tmp_path / "clusters" / "c2").mkdir(parents=True)
    (tmp_path / "cluster.yaml").write_text("name: local\nendpoints: [http://127.0.0.1:2379]\nplaintext: true\n")

    def resolved(name: str | None) -> Path:
        chosen = ["--cluster", name] if name else []
        return state_dir(cli.build_parser().parse_args(["--state-dir", str(tmp_path), *chosen, "local", "ps"]))

    assert resolved("c2") == tmp_path / "clusters" / "c2"
    assert resolved("local") == tmp_path and resolved(None) == tmp_path
    with pytest.raises(ConfigError, match=r"^--cluster c9: the local stack in .* has no such cluster"):
        resolved("c9")
    with pytest.raises(ConfigError, match=r"^cluster name 'A/B': must be"):
        resolved("A/B")


def test_cluster_chooses_whose_runbook_starts_and_which_executions_are_listed_shown_and_approved(
    deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "cluster", "add", write("c2.yaml", "name: c2\nendpoints: [http://10.0.0.2:2379]\nplaintext: true\n"))

    def started(*chosen: str) -> dict[str, Any]:
        code, out, err = run(capsys, *chosen, "runbook", "start", "maintain", "--json")
        assert code == 0, err
        return dict(json.loads(out))

    c2, prod, default = started("--cluster", "c2"), started("--cluster", "prod"), started()
    assert (c2["input"]["cluster"], prod["input"]["cluster"], default["input"]["cluster"]) == ("c2", "prod", "prod")
    assert c2["name"].startswith("maintain-c2-") and prod["name"].startswith("maintain-prod-")

    def listed(*chosen: str) -> set[str]:
        code, out, err = run(capsys, "runbook", "list", "--json", *chosen)
        assert code == 0, err
        return {e["name"] for e in json.loads(out)}

    assert listed("--cluster", "c2") == {c2["name"]}
    assert listed("--cluster", "prod") == {prod["name"], default["name"]}
    assert listed() == {c2["name"], prod["name"], default["name"]}
    code, out, err = run(capsys, "runbook", "show", c2["name"], "--cluster", "c2", "--json")
    assert code == 0 and json.loads(out)["name"] == c2["name"], err

    # another cluster's execution, or a cluster the stack does not watch: one line, nothing started
    code, out, err = run(capsys, "runbook", "show", prod["name"], "--cluster", "c2")
    assert (code, out) == (
        1,
        "",
    ) and err == f"etcdops: NotFoundError: execution {prod['name']} runs on cluster prod, not c2\n"
    code, out, err = run(capsys, "--cluster", "c9", "runbook", "start", "maintain")
    assert (code, out) == (1, "") and err.startswith("etcdops: NotFoundError: cluster c9 is not registered")
    assert listed() == {c2["name"], prod["name"], default["name"]}


def test_a_cluster_whose_tls_secret_lacks_the_fleet_tag_is_refused_until_tagged_and_checked_again_later(
    deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name="etcdops/c2/client/ca", SecretString="pem")["ARN"]
    c2 = write("c2.yaml", f"name: c2\nendpoints: [https://10.0.0.2:2379]\ntls: {{ca: '{arn}'}}\n")

    code, out, err = run(capsys, "cluster", "add", c2)
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert err.startswith(
        "etcdops: ConfigError: nothing registered: cluster c2: the stack fleet reaches a registered cluster's "
        "resources only through the tag etcdops:fleet=fleet (README: IAM for a fleet), which 1 lack: secret "
        "etcdops/c2/client/ca (tls.ca); tag them with: aws secretsmanager tag-resource --region us-east-1 "
        "--secret-id etcdops/c2/client/ca --tags Key=etcdops:fleet,Value=fleet\n"
    ), err
    assert deployed.get_parameters_by_path(Path="/fleet/clusters")["Parameters"] == []

    secrets.tag_resource(SecretId=arn, Tags=[{"Key": "etcdops:fleet", "Value": "fleet"}])
    assert run(capsys, "cluster", "add", c2)[0] == 0
    code, out, err = run(capsys, "cluster", "check", "c2")
    assert (code, out) == (
        0,
        "cluster c2: every AWS resource the stack acts on carries etcdops:fleet=fleet (1): secret "
        "etcdops/c2/client/ca (tls.ca)\n",
    ), err
    # the tag taken away after registration: `cluster check` says so (the registration stays)
    secrets.untag_resource(SecretId=arn, TagKeys=["etcdops:fleet"])
    code, out, err = run(capsys, "cluster", "check", "c2")
    assert code == 1 and out == "" and "which 1 lack: secret etcdops/c2/client/ca (tls.ca)" in err
    code, out, err = run(capsys, "cluster", "check", "prod", "--json")
    assert code == 0 and json.loads(out)["default"] is True, err
