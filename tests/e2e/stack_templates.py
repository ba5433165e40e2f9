"""Templates for the local stack's tests: template.yaml, and copies of it with test-only resources or
with a permission taken away (to prove the emulated AWS refuses what AWS would refuse)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from etcdops_local.aws.stack import read_template

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data" / "localaws"
TEMPLATE = ROOT / "template.yaml"


def absolute_paths(template: dict[str, Any]) -> dict[str, Any]:
    """Local code and definition paths made absolute, so the copy can live anywhere."""
    for resource in [*template["Resources"].values(), {"Properties": template.get("Globals", {}).get("Function", {})}]:
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = str((ROOT / props[key]).resolve())
    return template


def write_template(tmp_path: Path, change: Callable[[dict[str, Any]], None], name: str = "template.yaml") -> Path:
    """template.yaml copied to ``tmp_path`` with ``change`` applied to its dict.

    The copies watch the local stack's cluster "local" unless told otherwise: template.yaml's
    ClusterName has no default (a deploy must name its cluster), these test stacks all do the same."""
    template = absolute_paths(read_template(TEMPLATE))
    template["Parameters"]["ClusterName"]["Default"] = "local"
    change(template)
    path = tmp_path / name
    path.write_text(json.dumps(template, indent=1))  # JSON is YAML
    return path


def without_policy(
    template: dict[str, Any], function: str, *, sid: str | None = None, template_name: str | None = None
) -> None:
    """Take a permission away from ``function``: the statement ``sid``, or the SAM policy template named."""
    policies = template["Resources"][function]["Properties"]["Policies"]
    kept: list[Any] = []
    removed = 0
    for policy in policies:
        if template_name is not None and isinstance(policy, dict) and template_name in policy:
            removed += 1
            continue
        if sid is not None and isinstance(policy, dict) and "Statement" in policy:
            statements = [s for s in policy["Statement"] if s.get("Sid") != sid]
            removed += len(policy["Statement"]) - len(statements)
            if not statements:
                continue
            policy = {**policy, "Statement": statements}
        kept.append(policy)
    assert removed, f"{function} has no policy {sid or template_name} to take away"
    template["Resources"][function]["Properties"]["Policies"] = kept


def template_with_extras(tmp_path: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """template.yaml copied to ``tmp_path`` (local paths made absolute), plus a test-only function with a
    schedule and a test-only state machine that invokes it (DefinitionUri + DefinitionSubstitutions)."""
    attempts = tmp_path / "attempts"
    attempts.mkdir(exist_ok=True)

    def add(template: dict[str, Any]) -> None:
        template["Parameters"]["TestSchedule"] = {"Type": "String", "Default": "rate(1 hour)"}
        template["Resources"]["TestFunction"] = {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "CodeUri": str(DATA / "test_function"),
                "Handler": "app.handler",
                "Timeout": 30,
                "Environment": {"Variables": {"ATTEMPTS_DIR": str(attempts)}},
                "Events": {"Tick": {"Type": "Schedule", "Properties": {"Schedule": {"Ref": "TestSchedule"}}}},
            },
        }
        template["Resources"]["TestMachine"] = {
            "Type": "AWS::Serverless::StateMachine",
            "Properties": {
                "DefinitionUri": str(DATA / "test_machine.asl.json"),
                "DefinitionSubstitutions": {
                    "FunctionArn": {"Fn::GetAtt": ["TestFunction", "Arn"]},
                    "Greeting": "hello",
                },
                "Policies": [{"LambdaInvokePolicy": {"FunctionName": {"Ref": "TestFunction"}}}],
            },
        }
        template["Resources"]["TestInbox"] = {"Type": "AWS::SQS::Queue"}
        template["Resources"]["TestInboxSubscription"] = {
            "Type": "AWS::SNS::Subscription",
            "Properties": {
                "TopicArn": {"Ref": "NotificationTopic"},
                "Protocol": "sqs",
                "Endpoint": {"Fn::GetAtt": ["TestInbox", "Arn"]},
                "RawMessageDelivery": True,
            },
        }
        template["Resources"]["TestFunctionErrorsAlarm"] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": {"Fn::Sub": "errors of ${TestFunction}"},
                "Namespace": "AWS/Lambda",
                "MetricName": "Errors",
                "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": "TestFunction"}}],
                "Statistic": "Sum",
                "Period": 60,
                "EvaluationPeriods": "1",
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [{"Ref": "NotificationTopic"}],
            },
        }
        template["Resources"]["TestUnusedAlarm"] = {  # a false Condition: not created, as in CloudFormation
            "Type": "AWS::CloudWatch::Alarm",
            "Condition": "UseVpc",
            "Properties": {
                "AlarmName": "never",
                "Namespace": "etcdops",
                "MetricName": "Nothing",
                "Statistic": "Sum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 1,
                "ComparisonOperator": "GreaterThanThreshold",
            },
        }
        if change is not None:
            change(template)

    return write_template(tmp_path, add)
