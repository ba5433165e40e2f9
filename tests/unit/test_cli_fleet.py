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

STACK = json.dumps(
    {
        "Parameters": {"ClusterName": {"Type": "String"}, "ClusterRegistryPath": {"Type": "String"}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    }
)


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        boto3.client("cloudformation").create_stack(
            StackName="fleet",
            TemplateBody=STACK,
            Parameters=[
                {"ParameterKey": "ClusterName", "ParameterValue": "prod"},
                {"ParameterKey": "ClusterRegistryPath", "ParameterValue": "/fleet/clusters"},
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
