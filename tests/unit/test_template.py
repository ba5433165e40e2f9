"""template.yaml read as CloudFormation deploys it (transformed, intrinsics resolved): the properties
that make it deployable and least-privileged, checked offline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from template_model import ACCOUNT, CLUSTER, REGION, STACK, TEMPLATE, Template


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


# ---- least privilege ---------------------------------------------------------------------------------------

ROLE_OF = {
    "BackupFunction": "BackupFunctionRole",
    "BackupVerifyFunction": "BackupVerifyFunctionRole",
    "DeltaBackupFunction": "DeltaBackupFunctionRole",
    "HealthCheckFunction": "HealthCheckFunctionRole",
    "RunbookStepFunction": "RunbookStepFunctionRole",
    "ApprovalFunction": "ApprovalFunctionRole",
    "RequestApprovalFunction": "RequestApprovalFunctionRole",
    "FailureNoticeFunction": "FailureNoticeFunctionRole",
}
# Actions that take no resource-level permissions in IAM: "*" is the only Resource they accept.
STAR_ONLY = {
    "ec2:DescribeInstances": "Describe* actions have no resource types",
    "ec2:DescribeLaunchTemplateVersions": "Describe* actions have no resource types",
    "ec2:DescribeSubnets": "Describe* actions have no resource types",
    "ec2:DescribeSnapshots": "Describe* actions have no resource types",
    "ec2:DescribeVolumes": "Describe* actions have no resource types",
    "elasticloadbalancing:DescribeTargetGroups": "Describe* actions have no resource types",
    "ssm:DescribeInstanceInformation": "no resource types",
    "ssm:DescribeParameters": "no resource types (it shows metadata, never values)",
    "secretsmanager:ListSecrets": "no resource types (it shows names and metadata, never values)",
    "ssm:ListCommands": "no resource types",
    "ssm:GetCommandInvocation": "no resource types",
    "states:SendTaskSuccess": "a task token, not an ARN, names the task",
    "states:SendTaskFailure": "a task token, not an ARN, names the task",
}


def secret_arn(name: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-Xy7Zq2"


def readers(
    template: Template, arn: str, tags: Mapping[str, str] | None = None, action: str = "secretsmanager:GetSecretValue"
) -> set[str]:
    """The roles that may read secret ``arn`` (or do ``action`` on it) when it carries ``tags`` (none: untagged)."""
    context = {f"aws:ResourceTag/{k}": [v] for k, v in (tags or {}).items()}
    return {role for role, policy in template.roles() if policy.allows(action, arn, context)}


@pytest.mark.parametrize("cluster", [CLUSTER, STACK], ids=["own-name", "named-like-the-stack"])
def test_each_secret_is_readable_only_by_the_functions_that_need_it(cluster: str) -> None:
    template = Template({"ClusterName": cluster})
    signing_key = template.physical_id("ApprovalSigningSecret")

    assert readers(template, signing_key) == {"ApprovalFunctionRole", "RequestApprovalFunctionRole"}
    assert readers(template, secret_arn(f"etcdops/{cluster}/ca")) == {"RunbookStepFunctionRole"}
    assert readers(template, secret_arn(f"etcdops/{cluster}/members/m4")) == {"RunbookStepFunctionRole"}
    for name in ("ca", "cert", "key"):  # the client TLS material of the functions that talk to etcd
        assert readers(template, secret_arn(f"etcdops/{cluster}/client/{name}")) == {
            "BackupFunctionRole", "DeltaBackupFunctionRole", "HealthCheckFunctionRole", "RunbookStepFunctionRole",
        }  # fmt: skip
    # nothing of another cluster, and nothing that merely starts like the CA's name
    assert readers(template, secret_arn("etcdops/other/client/key")) == set()
    assert readers(template, secret_arn(f"etcdops/{cluster}/ca-backup")) == set()
    # a cluster registered with this stack: its secrets tagged etcdops:fleet=<stack> (README: IAM for a fleet)
    fleet = {"etcdops:fleet": STACK}
    assert readers(template, secret_arn("etcdops/c2/client/key"), fleet) == {
        "BackupFunctionRole", "DeltaBackupFunctionRole", "HealthCheckFunctionRole", "RunbookStepFunctionRole",
    }  # fmt: skip
    assert readers(template, secret_arn("etcdops/c2/ca"), fleet) == {"RunbookStepFunctionRole"}
    assert readers(template, secret_arn("etcdops/c2/members/m4"), fleet) == {"RunbookStepFunctionRole"}
    for tags in ({"etcdops:fleet": "other-stack"}, {"etcdops:cluster": "c2"}):  # another deployment's, or none
        for name in ("client/key", "ca", "members/m4", "ca-next"):
            assert readers(template, secret_arn(f"etcdops/c2/{name}"), tags) == set(), (tags, name)
    assert readers(template, secret_arn("etcdops/c2/ca-backup"), fleet) == set()
    assert readers(template, secret_arn("other/c2/client/key"), fleet) == set()


def test_cluster_add_asks_the_fleet_tag_of_exactly_the_secrets_a_fleet_grant_reaches(template: Template) -> None:
    # etcdops.domain.fleet_tags mirrors the Fleet* statements: what it asks to be tagged, a role reads once tagged
    from etcdops.domain.fleet_tags import StackScope, fleet_secret, tls_secret_problem

    fleet, scope = {"etcdops:fleet": STACK}, StackScope(STACK, REGION, ACCOUNT)
    names = ("client/ca", "client/key", "ca", "ca-next", "ca-old", "members/m4", "clients/api", "ca-backup", "notes/x")
    for name in names:
        arn = secret_arn(f"etcdops/c2/{name}")
        assert fleet_secret(arn) == bool(readers(template, arn, fleet)), name
        # a tls entry: every function that talks to etcd must read it (HealthCheck among them)
        readable = "HealthCheckFunctionRole" in readers(template, arn, fleet)
        assert (tls_secret_problem("tls.ca", arn, scope) is None) == readable, name
    elsewhere = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:etcdops/c2/client/ca-Xy7Zq2"
    assert not readers(template, elsewhere, fleet) and tls_secret_problem("tls.ca", elsewhere, scope)


def test_issued_clients_are_renewed_only_by_runbook_step_of_this_cluster_or_this_fleet() -> None:
    # the clients `pki issue-client` made (etcdops/<cluster>/clients/<name>), which a CA rotation renews
    template = Template({"ClusterName": CLUSTER})

    def may(action: str, name: str, tags: Mapping[str, str] | None = None) -> set[str]:
        return readers(template, secret_arn(name), tags, action)

    fleet = {"etcdops:fleet": STACK, "etcdops:cluster": "c2", "etcdops:client": "api"}  # pki issue-client --stack-name
    for action in ("secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"):
        assert may(action, f"etcdops/{CLUSTER}/clients/api") == {"RunbookStepFunctionRole"}, action
        assert may(action, "etcdops/c2/clients/api", fleet) == {"RunbookStepFunctionRole"}, action
        for tags in ({**fleet, "etcdops:fleet": "other-stack"}, {"etcdops:cluster": "c2"}, None):
            assert may(action, "etcdops/c2/clients/api", tags) == set(), (action, tags)
    # a rotation renews what exists: it neither creates, retags nor deletes an issued client
    for action in ("CreateSecret", "TagResource", "DeleteSecret"):
        assert may(f"secretsmanager:{action}", "etcdops/c2/clients/api", fleet) == set(), action


def test_no_star_resource_where_iam_could_scope_it(template: Template) -> None:
    for role, policy in template.roles():
        for statement in policy.statements:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if statement["Effect"] == "Allow" and "*" in resources:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert set(actions) <= set(STAR_ONLY), f"{role} {statement.get('Sid')}: {actions} on '*'"


def test_the_state_table_is_read_and_written_item_by_item_only(template: Template) -> None:
    # what etcdops.adapters.state calls; SAM's DynamoDBCrudPolicy also granted scans, batches and table reads
    table = template.attribute("StateTable", "Arn")
    roles = template.roles()
    users = {role: policy for role, policy in roles if any(a.startswith("dynamodb:") for a in policy.actions())}
    delta = users.pop("DeltaBackupFunctionRole")  # the delta chain's head: one item, read and conditionally put
    assert {a for a in delta.actions() if a.startswith("dynamodb:")} == {"dynamodb:GetItem", "dynamodb:PutItem"}
    assert delta.allows("dynamodb:PutItem", table) and not delta.allows("dynamodb:PutItem", f"{table}/index/x")
    assert set(users) == {f"{f}FunctionRole" for f in ("HealthCheck", "RunbookStep", "Approval", "RequestApproval")}
    for role, policy in users.items():
        assert {a for a in policy.actions() if a.startswith("dynamodb:")} == {
            "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query",
        }, role  # fmt: skip
        assert policy.allows("dynamodb:Query", table) and not policy.allows("dynamodb:Query", f"{table}/index/x")


def test_backups_are_written_by_backup_and_runbook_step_and_only_read_by_the_others(template: Template) -> None:
    bucket = template.attribute("BackupBucket", "Arn")
    writes = ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")  # a failed upload is aborted
    for function in ("Backup", "DeltaBackup", "RunbookStep", "BackupVerify", "HealthCheck"):
        policy = template.role_of(f"{function}Function")
        assert policy.allows("s3:GetObject", f"{bucket}/etcd/x") and policy.allows("s3:ListBucket", bucket)
        writer = function in ("Backup", "DeltaBackup", "RunbookStep")
        assert [policy.allows(a, f"{bucket}/etcd/x") for a in writes] == [writer] * 3, function
        staging = {"s3:ListBucketMultipartUploads"} if function == "RunbookStep" else set()  # restore staging only
        assert not policy.allows("s3:ListBucketMultipartUploads", bucket)
        assert {a for a in policy.actions() if a.startswith("s3:")} == {"s3:GetObject", "s3:ListBucket"} | (
            set(writes) if writer else set()
        ) | staging  # no ACLs, lifecycle rules or old versions


def conditions_of(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s.get("Condition") or {} for s in statements]


def test_hosts_are_launched_retired_and_commanded_only_with_this_clusters_tag(template: Template) -> None:
    role = template.role_of("RunbookStepFunction")
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
    ours = [CLUSTER, f"{CLUSTER}-drill"]  # the cluster's hosts and its restore drills' scratch hosts
    tag = {"StringEquals": {"aws:RequestTag/etcdops:cluster": ours}}

    # and the hosts of the clusters registered with this stack: tagged etcdops:fleet=<stack> (and a cluster)
    fleet_tag = {
        "StringEquals": {"aws:RequestTag/etcdops:fleet": STACK},
        "Null": {"aws:RequestTag/etcdops:cluster": "false"},
    }
    fleet_host = {"StringEquals": {"aws:ResourceTag/etcdops:fleet": STACK}}

    assert conditions_of(role.allowing("ec2:RunInstances", instance)) == [fleet_tag, tag]
    assert conditions_of(role.allowing("ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-1")) == [
        fleet_tag, tag,
    ]  # fmt: skip
    assert conditions_of(role.allowing("ec2:CreateTags", instance)) == [
        {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    ]
    assert conditions_of(role.allowing("ec2:TerminateInstances", instance)) == [
        fleet_host, {"StringEquals": {"aws:ResourceTag/etcdops:cluster": ours}},
    ]  # fmt: skip
    assert conditions_of(role.allowing("ssm:SendCommand", instance)) == [
        {"StringEquals": {"ssm:resourceTag/etcdops:fleet": STACK}},
        {"StringEquals": {"ssm:resourceTag/etcdops:cluster": ours}},
        {"StringEquals": {"ssm:resourceTag/etcdops:control-plane": CLUSTER}},
    ]
    target_group = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/etcd/0123456789abcdef"
    assert conditions_of(role.allowing("elasticloadbalancing:RegisterTargets", target_group)) == [
        fleet_host, {"StringEquals": {"aws:ResourceTag/etcdops:cluster": CLUSTER}},
    ]  # fmt: skip
    # a host of another deployment's cluster, or one tagged with a cluster only, is neither retired nor commanded
    for tags in ({"etcdops:cluster": "c3", "etcdops:fleet": "other-stack"}, {"etcdops:cluster": "c3"}):
        context = {f"{p}:ResourceTag/{k}": [v] for k, v in tags.items() for p in ("aws", "ssm")}
        assert not role.allows("ec2:TerminateInstances", instance, context), tags
        assert not role.allows("ssm:SendCommand", instance, context), tags
    assert conditions_of(role.allowing("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/etcdops-member")) == [
        {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    ]
    # no other function may touch hosts at all
    for function in set(ROLE_OF) - {"RunbookStepFunction"}:
        other = template.role_of(function)
        for action in ("ec2:RunInstances", "ec2:TerminateInstances", "ssm:SendCommand", "iam:PassRole"):
            assert not other.allowing(action, instance), (function, action)


def test_volume_backups_snapshot_only_this_clusters_volumes_into_its_own_snapshots(template: Template) -> None:
    role = template.role_of("BackupFunction")
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
    volume = f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-1"
    snapshot = f"arn:aws:ec2:{REGION}::snapshot/snap-1"
    ours = {"StringEquals": {"aws:ResourceTag/etcdops:cluster": CLUSTER}}
    fleet = {"StringEquals": {"aws:ResourceTag/etcdops:fleet": STACK}}  # a registered cluster's
    assert conditions_of(role.allowing("ec2:CreateSnapshots", instance)) == [ours, fleet]
    assert conditions_of(role.allowing("ec2:CreateSnapshots", volume)) == [ours, fleet]
    assert conditions_of(role.allowing("ec2:CreateSnapshots", snapshot)) == [
        {"StringEquals": {"aws:RequestTag/etcdops:cluster": CLUSTER, "aws:RequestTag/etcdops:kind": "volume"}},
        {"StringEquals": {"aws:RequestTag/etcdops:fleet": STACK, "aws:RequestTag/etcdops:kind": "volume"}},
    ]
    assert conditions_of(role.allowing("ec2:CreateTags", snapshot)) == [
        {"StringEquals": {"ec2:CreateAction": "CreateSnapshots"}}
    ]
    assert conditions_of(role.allowing("ec2:DeleteSnapshot", snapshot)) == [
        {"StringEquals": {"aws:ResourceTag/etcdops:cluster": CLUSTER, "aws:ResourceTag/etcdops:kind": "volume"}},
        {"StringEquals": {"aws:ResourceTag/etcdops:fleet": STACK, "aws:ResourceTag/etcdops:kind": "volume"}},
    ]
    assert not role.allowing("ec2:CreateTags", instance) and not role.allowing("ec2:DeleteVolume", volume)
    # no other function takes snapshots
    for function in set(ROLE_OF) - {"BackupFunction"}:
        assert not template.role_of(function).allowing("ec2:CreateSnapshots", instance), function


def test_volume_backups_run_daily_through_the_backup_functions_fan_out(template: Template) -> None:
    import json

    from etcdops.domain.errors import InvalidEventError
    from etcdops.entrypoints.events import backup_detail
    from etcdops.entrypoints.fanout import self_invoker

    rules = [
        props for resource in template.of_type("AWS::Events::Rule").values()
        if (props := resource["Properties"]).get("ScheduleExpression") == "cron(45 3 * * ? *)"
    ]  # fmt: skip
    [rule] = rules  # VolumeBackupSchedule's default: once a day
    [target] = rule["Targets"]
    assert target["Arn"] == template.attribute("BackupFunction", "Arn")
    event = json.loads(target["Input"])
    assert backup_detail(event).kind == "volume"
    # the fan-out hands each registered cluster the same kind of backup
    sent: list[dict[str, object]] = []

    class Lambda:
        def invoke(self, **request: object) -> None:
            sent.append(json.loads(request["Payload"]))  # type: ignore[arg-type]

    self_invoker(Lambda(), "arn:backup", event, "backup")("staging")
    assert backup_detail(sent[0]).model_dump() == {"cluster": "staging", "kind": "volume"}
    # a constant input of another shape or kind is refused in one line
    for bad in ({"detail": {"kind": "disk"}}, {"detail": {}, "kind": "volume"}, {"detail": {"cluster": "Bad_Name"}}):
        with pytest.raises(InvalidEventError, match=r"^BackupInput: "):
            backup_detail(bad)


def test_a_restore_makes_volumes_only_of_this_clusters_volume_backups_and_deletes_only_those(
    template: Template,
) -> None:
    role = template.role_of("RunbookStepFunction")
    snapshot = f"arn:aws:ec2:{REGION}::snapshot/snap-1"
    volume = f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-1"
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
    ours = {"aws:ResourceTag/etcdops:cluster": CLUSTER}
    assert conditions_of(role.allowing("ec2:CreateVolume", snapshot)) == [
        {"StringEquals": {**ours, "aws:ResourceTag/etcdops:kind": "volume"}}
    ]
    assert conditions_of(role.allowing("ec2:CreateVolume", volume)) == [
        {"StringEquals": {"aws:RequestTag/etcdops:cluster": CLUSTER}}
    ]
    tagging = conditions_of(role.allowing("ec2:CreateTags", volume))  # only while creating (or launching)
    assert {"StringEquals": {"ec2:CreateAction": "CreateVolume"}} in tagging
    assert all(set(c["StringEquals"]) == {"ec2:CreateAction"} for c in tagging)
    for action in ("ec2:AttachVolume", "ec2:DetachVolume"):
        for resource in (volume, instance):
            assert conditions_of(role.allowing(action, resource)) == [{"StringEquals": ours}]
    assert conditions_of(role.allowing("ec2:DeleteVolume", volume)) == [
        {"StringEquals": ours, "Null": {"aws:ResourceTag/etcdops:restore": "false"}}
    ]
    for function in set(ROLE_OF) - {"RunbookStepFunction"}:  # no other function makes or deletes volumes
        policy = template.role_of(function)
        assert not policy.allowing("ec2:CreateVolume", volume) and not policy.allowing("ec2:DeleteVolume", volume)


def document_arn(name: str) -> str:
    return f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/{name}"


def test_only_this_stacks_host_documents_may_be_sent() -> None:
    plain = Template()
    role = plain.role_of("RunbookStepFunction")
    keys = ("StartEtcd", "StopEtcd", "RestoreDataDir", "SwapEtcdBinary", "StopApiServer", "StartApiServer")
    for key in (*keys, "RestartControlPlane"):
        assert role.allows("ssm:SendCommand", document_arn(f"{STACK}-{key}")), key
        assert not role.allows("ssm:SendCommand", document_arn(f"other-stack-{key}")), key
    assert not role.allows("ssm:SendCommand", document_arn("AWS-RunShellScript"))

    arns = f"{document_arn('systemd-StopApiServer')},{document_arn('systemd-StartApiServer')}"
    mine = Template({"AdditionalHostDocumentArns": arns}).role_of("RunbookStepFunction")
    assert mine.allows("ssm:SendCommand", document_arn("systemd-StopApiServer"))
    assert mine.allows("ssm:SendCommand", document_arn("systemd-StartApiServer"))
    assert not mine.allows("ssm:SendCommand", document_arn("AWS-RunShellScript"))


def test_status_check_alarms_only_of_this_stack(template: Template) -> None:
    role = template.role_of("RunbookStepFunction")
    alarm = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{STACK}-status-check-i-0123456789abcdef0"
    assert role.allows("cloudwatch:PutMetricAlarm", alarm) and role.allows("cloudwatch:DeleteAlarms", alarm)
    assert not role.allows("cloudwatch:DeleteAlarms", f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{STACK}-etcd-x")


# ---- notifications -----------------------------------------------------------------------------------------


def test_the_topic_is_encrypted_with_a_key_alarms_and_publishers_may_use(template: Template) -> None:
    topic = template.properties("NotificationTopic")
    assert topic["KmsMasterKeyId"] == template.physical_id("NotificationKey")
    statements = template.properties("NotificationKey")["KeyPolicy"]["Statement"]
    (alarms_may,) = [s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(alarms_may["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}

    key = template.attribute("NotificationKey", "Arn")
    topic_arn = template.physical_id("NotificationTopic")
    publishers = {role for role, policy in template.roles() if policy.allows("sns:Publish", topic_arn)}
    assert publishers == {
        "FailureNoticeFunctionRole", "HealthCheckFunctionRole", "RequestApprovalFunctionRole",
        "RunbookStepFunctionRole",
    }  # fmt: skip
    for role in publishers:
        policy = template.policy(role)
        assert policy.allows("kms:GenerateDataKey", key) and policy.allows("kms:Decrypt", key), role


def test_a_scheduled_job_that_fails_for_good_is_said_once_by_its_on_failure_destination(template: Template) -> None:
    configs = {
        r["Properties"]["FunctionName"]: r["Properties"]
        for r in template.of_type("AWS::Lambda::EventInvokeConfig").values()
    }
    notice = template.attribute("FailureNoticeFunction", "Arn")
    for function in ("BackupFunction", "BackupVerifyFunction"):
        config = configs[template.physical_id(function)]
        # one more try (a leader change passes), then one message, from FailureNotice: never one per attempt
        assert config["MaximumRetryAttempts"] == 1, function
        assert config["DestinationConfig"] == {"OnFailure": {"Destination": notice}}, function
        role = template.role_of(function)
        assert role.allows("lambda:InvokeFunction", notice), function  # Lambda sends it with the function's role
        assert not role.allows("sns:Publish", template.physical_id("NotificationTopic")), function
    health = configs[template.physical_id("HealthCheckFunction")]  # mails nobody; one retry keeps an EC2 event
    assert health["MaximumRetryAttempts"] == 1 and health["MaximumEventAgeInSeconds"] <= 300
    assert not health.get("DestinationConfig")  # its failures raise the health-check-failing alarm instead
    assert template.physical_id("FailureNoticeFunction") not in configs  # no destination of its own to loop to
    delta = configs[template.physical_id("DeltaBackupFunction")]  # no retry: the next minute's run continues,
    assert delta["MaximumRetryAttempts"] == 0 and not delta.get("DestinationConfig")  # its alarm says it once
    invokers = {role for role, policy in template.roles() if policy.allows("lambda:InvokeFunction", notice)}
    assert invokers == {"BackupFunctionRole", "BackupVerifyFunctionRole"}


# ---- logs ------------------------------------------------------------------------------------------------


def test_every_function_logs_to_a_group_with_the_retention_parameter() -> None:
    template = Template({"LogRetentionDays": "90"})
    groups = {template.physical_id(lid): r["Properties"] for lid, r in template.of_type("AWS::Logs::LogGroup").items()}
    for lid, function in template.functions.items():
        group = function["LoggingConfig"]["LogGroup"]
        assert groups[group]["RetentionInDays"] == "90", lid
        assert STACK in group, lid


def test_the_approval_api_keeps_an_access_log_without_the_signed_query(template: Template) -> None:
    (stage,) = template.of_type("AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]["AccessLogSettings"]
    group = template.physical_id("ApprovalApiAccessLogGroup")
    assert settings["DestinationArn"] == template.attribute("ApprovalApiAccessLogGroup", "Arn") and group
    assert "$context.routeKey" in settings["Format"] and "$context.status" in settings["Format"]
    for leaky in ("querystring", "$context.path", "$request"):  # a link's query is a signed capability
        assert leaky not in settings["Format"].lower()
    assert template.properties("ApprovalApiAccessLogGroup")["RetentionInDays"] == "30"


# ---- VPC -------------------------------------------------------------------------------------------------

IN_VPC = {"BackupFunction", "DeltaBackupFunction", "HealthCheckFunction", "RunbookStepFunction"}  # they talk to etcd
VPC = {"SubnetIds": "subnet-1,subnet-2", "SecurityGroupIds": "sg-1", "VpcId": "vpc-1"}
INTERFACE_ENDPOINTS = {"ssm", "secretsmanager", "kms", "sns", "ec2", "elasticloadbalancing", "states", "monitoring"}


def endpoints(template: Template) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["ServiceName"].rsplit(".", 1)[-1]: r["Properties"]
        for r in template.of_type("AWS::EC2::VPCEndpoint").values()
    }


def test_only_the_functions_that_talk_to_etcd_run_in_the_vpc() -> None:
    template = Template(VPC)
    in_vpc = {lid for lid, props in template.functions.items() if "VpcConfig" in props}
    assert in_vpc == IN_VPC
    for lid in IN_VPC:
        vpc_config = template.functions[lid]["VpcConfig"]
        assert vpc_config == {"SubnetIds": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert endpoints(template) == {}  # off by default: a NAT route, or endpoints of your own
    assert not any("VpcConfig" in props for props in Template().functions.values())  # no subnets, no VPC


def test_the_vpc_endpoints_come_on_request() -> None:
    interface_only = endpoints(Template({**VPC, "CreateVpcEndpoints": "true"}))
    assert set(interface_only) == INTERFACE_ENDPOINTS
    for service, props in interface_only.items():
        assert props["VpcEndpointType"] == "Interface" and props["PrivateDnsEnabled"] is True, service
        assert props["SubnetIds"] == ["subnet-1", "subnet-2"]

    both = endpoints(Template({**VPC, "CreateVpcEndpoints": "true", "RouteTableIds": "rtb-1"}))
    assert set(both) == INTERFACE_ENDPOINTS | {"s3", "dynamodb"}
    assert both["s3"]["VpcEndpointType"] == "Gateway" and both["s3"]["RouteTableIds"] == ["rtb-1"]


# ---- first deploy ------------------------------------------------------------------------------------------


def test_the_cluster_name_must_be_given() -> None:
    # a default (it was "local") deployed alarms, dashboards and IAM scopes for a cluster nobody has
    from etcdops.domain.errors import ConfigError
    from etcdops_local.aws.stack import effective_parameters, read_template

    sam = read_template(TEMPLATE)
    assert "Default" not in sam["Parameters"]["ClusterName"]
    with pytest.raises(ConfigError, match=r"^parameters: ClusterName: the template has no default"):
        effective_parameters(sam, {})


def test_one_runtime_everywhere_the_deploy_path_names_it() -> None:
    # sam build needs the template's runtime on PATH: bin/setup links it, the layer's Makefile builds
    # for it, the layer declares it, the README tells it (it once said 3.11+ while the template said 3.12)
    import re

    from etcdops_local.aws.stack import read_template

    root = TEMPLATE.parent
    sam = read_template(TEMPLATE)
    runtime = sam["Globals"]["Function"]["Runtime"]
    version = runtime.removeprefix("python")
    major, minor = version.split(".")
    assert re.fullmatch(r"python3\.\d+", runtime)
    assert not [lid for lid, r in sam["Resources"].items() if "Runtime" in (r.get("Properties") or {})]
    assert sam["Resources"]["EtcdopsLayer"]["Properties"]["CompatibleRuntimes"] == [runtime]
    makefile = (root / "layers" / "etcdops" / "Makefile").read_text()
    assert f"PYTHON ?= {runtime}\n" in makefile and f"PYTHON_VERSION ?= {version}\n" in makefile
    setup = (root / "bin" / "setup").read_text()
    assert f"sys.version_info[:2] != ({major}, {minor})" in setup and f".tools/bin/{runtime}" in setup
    readme = (root / "README.md").read_text()
    deploying = readme[readme.index("## Deploying to AWS") :]
    assert f"Python {version}" in deploying and f"`.tools/bin/{runtime}`" in deploying
    assert f"for {runtime} on arm64" in deploying and sam["Globals"]["Function"]["Architectures"] == ["arm64"]


def test_samconfig_deploys_without_prompts_that_abort_on_their_default(template: Template) -> None:
    import tomllib

    config = tomllib.loads((TEMPLATE.parent / "samconfig.toml").read_text())["default"]
    deploy = config["deploy"]["parameters"]
    # CAPABILITY_IAM: the functions' roles have no names; the managed bucket for the artifacts; a
    # change set to confirm; no ClusterName here (each deploy names its cluster, the template has no default)
    assert deploy["capabilities"] == "CAPABILITY_IAM" and deploy["resolve_s3"] is True
    assert deploy["confirm_changeset"] is True and "parameter_overrides" not in deploy
    assert config["global"]["parameters"]["stack_name"]
    assert config["build"]["parameters"] == {"cached": True, "parallel": True}  # no container
    assert config["validate"]["parameters"] == {"lint": True}
    roles = template.of_type("AWS::IAM::Role").values()
    assert roles and not [r for r in roles if "RoleName" in r["Properties"]]  # else CAPABILITY_NAMED_IAM


def test_the_approval_routes_are_public_on_purpose_and_the_api_closed_by_default() -> None:
    from etcdops_local.aws.stack import read_template

    sam = read_template(TEMPLATE)
    api = sam["Resources"]["ApprovalApi"]["Properties"]["Auth"]
    assert api == {"EnableIamAuthorizer": True, "DefaultAuthorizer": "AWS_IAM"}
    routes = [
        event["Properties"]
        for resource in sam["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
        for event in (resource["Properties"].get("Events") or {}).values()
        if event["Type"] == "HttpApi"
    ]
    # each route says it is public (the signed link is the credential): `sam deploy --guided` then
    # does not ask "has no authentication. Is this okay?", whose default answer aborts the deploy
    assert len(routes) == 4 and all(route["Auth"] == {"Authorizer": "NONE"} for route in routes)


def test_the_ec2_rule_takes_only_failure_states(template: Template) -> None:
    # EC2 state-change events carry no tags: the states are all a pattern can narrow
    patterns = [
        r["Properties"]["EventPattern"]
        for r in template.of_type("AWS::Events::Rule").values()
        if r["Properties"].get("EventPattern", {}).get("source") == ["aws.ec2"]
    ]
    assert patterns == [
        {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 Instance State-change Notification"],
            "detail": {"state": ["stopping", "stopped", "shutting-down", "terminated"]},
        }
    ]


# ---- restore staging ----------------------------------------------------------------------------------------


def test_restore_stages_plaintext_in_an_unversioned_expiring_kms_bucket_only_runbook_step_uses(
    template: Template,
) -> None:
    staging = template.properties("RestoreStagingBucket")
    assert "VersioningConfiguration" not in staging  # a deleted staged snapshot leaves no noncurrent version
    rules = {rule["Id"]: rule for rule in staging["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-staged-snapshots"]["ExpirationInDays"] == 1
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    (encryption,) = staging["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": template.attribute("BackupKey", "Arn"),
    }
    assert all(staging["PublicAccessBlockConfiguration"].values())

    bucket = template.physical_id("RestoreStagingBucket")
    step = template.functions["RunbookStepFunction"]
    assert step["Environment"]["Variables"]["RESTORE_STAGING_BUCKET"] == bucket
    staged = f"arn:aws:s3:::{bucket}/{CLUSTER}/restore/20261207-abc.snapshot"
    writers = {role for role, policy in template.roles() if policy.allows("s3:PutObject", staged)}
    readers_ = {role for role, policy in template.roles() if policy.allows("s3:GetObject", staged)}
    assert writers == readers_ == {"RunbookStepFunctionRole"}
    role = template.role_of("RunbookStepFunction")
    for action in ("s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert role.allows(action, staged)
    assert role.allows("s3:ListBucket", f"arn:aws:s3:::{bucket}")
    assert role.allows("s3:ListBucketMultipartUploads", f"arn:aws:s3:::{bucket}")  # a crashed upload's parts
    # any cluster of the fleet stages under its own prefix of this stack's bucket; nothing outside those prefixes
    assert role.allows("s3:PutObject", f"arn:aws:s3:::{bucket}/c2/restore/x.snapshot")
    assert not role.allows("s3:PutObject", f"arn:aws:s3:::{bucket}/c2/elsewhere/x.snapshot")
    assert not role.allows("s3:PutObject", f"arn:aws:s3:::{bucket}/x.snapshot")


def test_the_starvation_alarms_default_to_the_etcd_mixins_levels_over_10_minutes(template: Template) -> None:
    # issue 15: WAL fsync p99 > 0.5 s warning / 1 s critical, backend commit p99 > 0.25 s, peer round trip
    # p99 > 0.15 s, each over 10 minutes; HealthCheck's own notice defaults to the same warning levels
    from etcdops.domain.member_metrics import StarvationThresholds

    found = alarms(template)
    expected = {
        "WalFsyncSlowAlarm": ("MaxWalFsyncP99", 0.5),
        "WalFsyncCriticalAlarm": ("MaxWalFsyncP99", 1.0),
        "BackendCommitSlowAlarm": ("MaxBackendCommitP99", 0.25),
        "PeerRttSlowAlarm": ("MaxPeerRttP99", 0.15),
    }
    for lid, (metric, threshold) in expected.items():
        alarm = found[lid]
        assert (alarm["MetricName"], float(alarm["Threshold"])) == (metric, threshold), lid
        assert (
            alarm["Period"] * alarm["EvaluationPeriods"] == 600
            and alarm["ComparisonOperator"] == "GreaterThanThreshold"
        )
    defaults = StarvationThresholds()
    assert (defaults.wal_fsync_p99, defaults.backend_commit_p99, defaults.peer_rtt_p99) == (0.5, 0.25, 0.15)
    environment = template.functions["HealthCheckFunction"]["Environment"]["Variables"]
    assert float(environment["WAL_FSYNC_P99_SECONDS"]) == 0.5 and float(environment["PEER_RTT_P99_SECONDS"]) == 0.15


def test_leader_changes_quota_and_fragmentation_alarm_at_the_etcd_mixins_levels(template: Template) -> None:
    # issue 15: >= 4 leader changes in 15 min, database > 95 % of quota, predicted to reach it within 4 h,
    # fragmented (less than half in use with > 100 MiB in use); metric names as HealthCheck publishes them
    found = alarms(template)
    expected = {
        "LeaderChangesAlarm": ("MaxLeaderChanges15m", "GreaterThanOrEqualToThreshold", 4.0),
        "DbQuotaHighAlarm": ("MaxDbQuotaUsedPercent", "GreaterThanThreshold", 95.0),
        "DbQuotaSoonAlarm": ("MinHoursToQuota", "LessThanThreshold", 4.0),
        "DbFragmentedAlarm": ("FragmentedMembers", "GreaterThanOrEqualToThreshold", 1.0),
    }
    for lid, (metric, operator, threshold) in expected.items():
        alarm = found[lid]
        assert (alarm["MetricName"], alarm["ComparisonOperator"], float(alarm["Threshold"])) == (
            metric, operator, threshold,
        ), lid  # fmt: skip
        assert alarm["TreatMissingData"] == "notBreaching", lid


def test_cluster_roles_are_assumed_only_as_the_parameter_names_them() -> None:
    """A cluster's aws.role_arn: the four functions that reach a cluster may assume exactly the roles
    ClusterRoleArns names (wildcards as written); without the parameter nobody may assume anything."""
    functions = {"BackupFunction", "DeltaBackupFunction", "HealthCheckFunction", "RunbookStepFunction"}
    for role_lid, policy in Template().roles():
        assert not policy.allows("sts:AssumeRole", "arn:aws:iam::222233334444:role/etcdops-cluster-c2"), role_lid
    pattern = "arn:aws:iam::222233334444:role/etcdops-cluster-*"
    template = Template({"ClusterRoleArns": pattern})
    for lid in ROLE_OF:
        role = template.role_of(lid)
        assert role.allows("sts:AssumeRole", "arn:aws:iam::222233334444:role/etcdops-cluster-c2") == (
            lid in functions
        ), lid
        assert not role.allows("sts:AssumeRole", "arn:aws:iam::222233334444:role/admin"), lid
        assert not role.allows("sts:AssumeRole", "arn:aws:iam::999999999999:role/etcdops-cluster-c2"), lid
