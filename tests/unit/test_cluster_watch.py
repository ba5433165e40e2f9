"""A registered cluster's alarms and dashboard (etcdops_local.watch): `etcdops cluster add` makes the default
cluster's set for it from the deployed stack's own template, `cluster remove` deletes them (emulated
CloudFormation and CloudWatch); the set equals the template's, alarm by alarm."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from etcdops.domain.errors import ConfigError
from etcdops_local.aws.build import api_types
from etcdops_local.aws.templates import effective_parameters, read_template
from etcdops_local.cli import main as cli
from etcdops_local.watch import StackView, cluster_watch, resolve, stack_view

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = read_template(ROOT / "template.yaml")
KINDS = ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard")


def watched_template() -> dict[str, Any]:
    """template.yaml's parameters, topic, alarms and dashboard (what moto's CloudFormation can hold)."""
    resources = {lid: r for lid, r in TEMPLATE["Resources"].items() if r["Type"] in KINDS}
    resources["NotificationTopic"] = {"Type": "AWS::SNS::Topic"}
    for resource in resources.values():  # the stack-wide alarm's metric math names the function
        for metric in resource.get("Properties", {}).get("Metrics", []):
            metric.get("MetricStat", {}).get("Metric", {})["Dimensions"] = [{"Name": "FunctionName", "Value": "hc"}]
    return {"Parameters": TEMPLATE["Parameters"], "Resources": resources}


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        boto3.client("cloudformation").create_stack(
            StackName="fleet",
            TemplateBody=json.dumps(watched_template()),
            Parameters=[
                {"ParameterKey": "ClusterName", "ParameterValue": "prod"},
                {"ParameterKey": "WalFsyncP99ThresholdSeconds", "ParameterValue": "0.25"},
            ],
        )
        yield boto3.client("cloudwatch")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = cli.main(["--stack-name", "fleet", "--json", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return code, json.loads(out)


def add(capsys: pytest.CaptureFixture[str], name: str) -> Any:
    Path(f"{name}.yaml").write_text(f"name: {name}\nendpoints: [http://10.0.0.2:2379]\nplaintext: true\n")
    return run(capsys, "cluster", "add", f"{name}.yaml")[1]


def alarms(cloudwatch: Any) -> dict[str, Any]:
    pages = cloudwatch.get_paginator("describe_alarms").paginate()
    return {a["AlarmName"]: a for page in pages for a in page["MetricAlarms"]}


def b_alarm(name: str) -> bool:
    """An alarm of cluster c2-b (not c2's backend-commit-slow or backup-too-old)."""
    return name.startswith("fleet-etcd-c2-b-")


def dashboards(cloudwatch: Any) -> set[str]:
    return {d["DashboardName"] for d in cloudwatch.list_dashboards()["DashboardEntries"]}


def default_alarms() -> dict[str, dict[str, Any]]:
    """The template's per-cluster alarms resolved as CloudFormation would for the default cluster."""
    view = StackView("fleet", "aws", "eu-west-1", "123456789012",
                     {**effective_parameters(TEMPLATE, {"ClusterName": "prod"}), "WalFsyncP99ThresholdSeconds": "0.25"},
                     {"NotificationTopic": "arn:topic"}, TEMPLATE)  # fmt: skip
    out = {}
    for resource in TEMPLATE["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::CloudWatch::Alarm" and props.get("Dimensions"):
            alarm = api_types(resolve(props, view.names("prod")))
            out[alarm["AlarmName"].removeprefix("fleet-etcd-")] = alarm
    return out


def test_add_makes_the_default_clusters_alarms_and_dashboard_and_remove_deletes_them(
    deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    before = dashboards(deployed)
    added = add(capsys, "c2")
    add(capsys, "c2-b")  # a name that begins with another's: removing c2 must not take its alarms

    made = {n: a for n, a in alarms(deployed).items() if n.startswith("fleet-etcd-c2-") and not b_alarm(n)}
    expected = default_alarms()
    assert sorted(made) == sorted(added["alarms"]) == sorted(f"fleet-etcd-c2-{s}" for s in expected)
    assert len(expected) >= 18 and "fleet-health-check-failing" not in made  # the stack-wide one stays one
    compared = ("MetricName", "Namespace", "Statistic", "Period", "EvaluationPeriods", "ComparisonOperator",
                "Threshold", "TreatMissingData")  # fmt: skip
    topic = boto3.client("sns").list_topics()["Topics"][0]["TopicArn"]
    for suffix, default in expected.items():
        alarm = made[f"fleet-etcd-c2-{suffix}"]
        assert {k: alarm.get(k) for k in compared} == {k: default.get(k) for k in compared}, suffix
        assert alarm["Dimensions"] == [{"Name": "cluster", "Value": "c2"}]
        assert alarm["AlarmActions"] == [topic]
        assert alarm["OKActions"] == ([topic] if default.get("OKActions") else []), suffix  # as the template says
    # the delta chain's breaks are events: the registered cluster's alarm says each one, and no OK after it
    assert made["fleet-etcd-c2-delta-chain-broken"]["MetricName"] == "DeltaChainBroken"
    assert made["fleet-etcd-c2-delta-chain-broken"]["OKActions"] == [] and made["fleet-etcd-c2-no-leader"]["OKActions"]
    assert made["fleet-etcd-c2-wal-fsync-slow"]["Threshold"] == 0.25  # the stack's parameter value, not the default

    assert added["dashboards"] == ["fleet-etcd-c2"]
    assert dashboards(deployed) == before | {"fleet-etcd-c2", "fleet-etcd-c2-b"}
    body = json.loads(deployed.get_dashboard(DashboardName="fleet-etcd-c2")["DashboardBody"])
    text = json.dumps(body)
    assert '"cluster", "c2"' in text and "prod" not in text
    listed = next(w for w in body["widgets"] if w["type"] == "alarm")["properties"]["alarms"]
    assert "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:fleet-etcd-c2-no-leader" in listed
    assert "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:fleet-health-check-failing" in listed

    deployed.delete_alarms(AlarmNames=["fleet-etcd-c2-no-leader"])  # lost, or older than the stack's template
    assert sorted(run(capsys, "cluster", "watch", "c2")[1]["alarms"]) == sorted(made)
    assert "fleet-etcd-c2-no-leader" in alarms(deployed)

    removed = run(capsys, "cluster", "remove", "c2")[1]
    assert sorted(removed["alarms_deleted"]) == sorted(made)
    left = alarms(deployed)
    assert not [n for n in left if n.startswith("fleet-etcd-c2-") and not b_alarm(n)]
    assert len([n for n in left if b_alarm(n)]) == len(expected)
    assert dashboards(deployed) == before | {"fleet-etcd-c2-b"}


def test_a_refused_registration_makes_no_alarm(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    add(capsys, "c2")
    count = len(alarms(deployed))
    Path("again.yaml").write_text("name: c2\nendpoints: [http://10.0.0.3:2379]\nplaintext: true\n")
    Path("default.yaml").write_text("name: prod\nendpoints: [http://10.0.0.3:2379]\nplaintext: true\n")
    for document in ("again.yaml", "default.yaml"):
        assert cli.main(["--stack-name", "fleet", "cluster", "add", document]) != 0
        err = capsys.readouterr().err  # (moto's CloudFormation logs the alarms it does not create itself)
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("etcdops: cluster")
    for action in ("remove", "watch"):
        assert cli.main(["--stack-name", "fleet", "cluster", action, "c9"]) != 0
    assert len(alarms(deployed)) == count


def test_no_registered_clusters_alarm_name_is_another_clusters() -> None:
    """``<stack>-etcd-<cluster>-<suffix>`` could equal the default's ``<stack>-etcd-<suffix>`` only if one
    suffix ended in ``-`` and another suffix."""
    suffixes = list(default_alarms())
    assert not [(a, b) for a in suffixes for b in suffixes if a.endswith(f"-{b}")]


def test_an_intrinsic_the_resolver_does_not_know_is_refused() -> None:
    with pytest.raises(ConfigError, match="Fn::GetAtt"):
        resolve({"Threshold": {"Fn::GetAtt": ["X", "Y"]}}, {})
    with pytest.raises(ConfigError, match="Missing"):
        resolve({"Fn::Sub": "${Missing}-x"}, {})


def test_the_stack_view_reads_the_deployed_template(deployed: Any) -> None:
    view = stack_view(boto3.session.Session(), "fleet")
    assert (view.region, view.account, view.parameters["ClusterName"]) == ("eu-west-1", "123456789012", "prod")
    assert len(cluster_watch(view, "c5").alarms) == len(default_alarms())
