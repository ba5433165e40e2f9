"""template.yaml read as CloudFormation deploys it (transformed, intrinsics resolved): the properties
that make it deployable and least-privileged, checked offline."""

from __future__ import annotations

from typing import Any

import pytest
from template_model import ACCOUNT, CLUSTER, REGION, STACK, Template


@pytest.fixture(scope="module")
def template() -> Template:
    return Template()


# ---- names -------------------------------------------------------------------------------------------------


NAME_PROPERTIES = ("Name", "AliasName", "AlarmName", "DashboardName", "LogGroupName", "FunctionName", "TableName",
                   "TopicName", "BucketName", "RoleName", "StateMachineName", "QueueName", "RuleName")  # fmt: skip


def test_every_named_resource_derives_its_name_from_the_stack(template: Template) -> None:
    # a second stack in the same account and region must not collide with the first
    named = {
        (lid, prop): value
        for lid, resource in template.resources.items()
        for prop, value in (resource.get("Properties") or {}).items()
        if prop in NAME_PROPERTIES and isinstance(value, str)
    }
    assert named, "the template names nothing?"
    for (lid, prop), value in named.items():
        assert STACK in value, f"{lid}.{prop} = {value!r} does not contain the stack name"


# ---- alarms and metrics ------------------------------------------------------------------------------------


def alarms(template: Template) -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"] for lid, r in template.of_type("AWS::CloudWatch::Alarm").items()}


def test_etcd_alarms_match_the_one_dimension_set_every_function_publishes(template: Template) -> None:
    etcd = {lid: a for lid, a in alarms(template).items() if a.get("Namespace") == "etcdops"}
    assert len(etcd) >= 6
    for lid, alarm in etcd.items():
        assert alarm["Dimensions"] == [{"Name": "cluster", "Value": CLUSTER}], lid


def test_every_alarm_decides_what_missing_data_means(template: Template) -> None:
    for lid, alarm in alarms(template).items():
        assert alarm.get("TreatMissingData") in ("breaching", "notBreaching", "ignore", "missing"), lid


def test_no_data_never_pages(template: Template) -> None:
    # before the cluster configuration exists nothing is published: no alarm may fire on that alone
    for lid, alarm in alarms(template).items():
        assert alarm["TreatMissingData"] != "breaching", lid


def test_a_failing_health_check_has_its_own_alarm_outside_the_health_round_trigger(template: Template) -> None:
    alarm = alarms(template)["HealthCheckFailingAlarm"]
    assert alarm["AlarmName"] == f"{STACK}-health-check-failing"
    rule_prefixes = [
        p["prefix"]
        for r in template.of_type("AWS::Events::Rule").values()
        for p in (r["Properties"].get("EventPattern", {}).get("detail", {}).get("alarmName") or [])
    ]
    assert rule_prefixes and not any(alarm["AlarmName"].startswith(p) for p in rule_prefixes)
    dimensions = [m["MetricStat"]["Metric"]["Dimensions"] for m in alarm["Metrics"] if "MetricStat" in m]
    function = [{"Name": "FunctionName", "Value": template.physical_id("HealthCheckFunction")}]
    assert dimensions == [function, function]


# ---- permissions -------------------------------------------------------------------------------------------


def test_health_check_may_decrypt_the_sse_kms_manifests(template: Template) -> None:
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{template.physical_id('BackupKey')}"
    bucket = template.physical_id("BackupBucket")
    role = template.role_of("HealthCheckFunction")
    assert role.allows("s3:GetObject", f"arn:aws:s3:::{bucket}/etcd/{CLUSTER}/x.manifest.json")
    assert role.allows("kms:Decrypt", key)
