"""What a request asks of IAM, part two: SNS, DynamoDB, Step Functions, Lambda, CloudWatch, EC2 and ELBv2,
and :func:`request_calls`, which turns any request into the authorizations AWS makes for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from etcdops_local.aws.iam_requests import (
    Asked,
    Request,
    _backend,
    _instance_tags,
    _key_arn,
    _kms,
    _request_tags_context,
    _s3,
    _secretsmanager,
    _ssm,
    _tags_context,
)
from etcdops_local.aws.iampolicy import (
    Call,
)

log = logging.getLogger("etcdops_local.aws.iam_services")

# sns ---------------------------------------------------------------------------------------------------


def _sns(request: Request) -> Asked:
    op, params = request.operation, request.params
    action = f"sns:{op}"
    topic_arn = params.get("TopicArn") or params.get("TargetArn")
    if not topic_arn:
        return Asked((Call.of(action, "*"),), modelled=op in ("ListTopics",))
    calls = [Call.of(action, topic_arn)]
    if op == "Publish":
        backend = _backend("sns", request.account, request.region)
        try:
            key = backend.get_topic(topic_arn).kms_master_key_id
        except Exception:
            key = None
        arn = _key_arn(request, key)
        if arn:
            because = f"{action} to a topic encrypted with a customer key"
            calls += [
                Call.of("kms:GenerateDataKey", arn, because=because),
                Call.of("kms:Decrypt", arn, because=because),
            ]
    return Asked(tuple(calls))


# dynamodb ----------------------------------------------------------------------------------------------

_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


def _dynamodb(request: Request) -> Asked:
    op, params = request.operation, request.params

    def table(name: str, index: str | None = None) -> str:
        return request.arn("dynamodb", f"table/{name}" + (f"/index/{index}" if index else ""))

    if op in ("TransactWriteItems", "TransactGetItems"):
        calls = []
        for item in params.get("TransactItems") or []:
            for kind, body in item.items():
                calls.append(Call.of(f"dynamodb:{_TRANSACT_ACTIONS[kind]}", table(body["TableName"])))
        return Asked(tuple(calls))
    if op in ("BatchWriteItem", "BatchGetItem"):
        return Asked(tuple(Call.of(f"dynamodb:{op}", table(name)) for name in params.get("RequestItems") or {}))
    if "TableName" in params:
        return Asked((Call.of(f"dynamodb:{op}", table(params["TableName"], params.get("IndexName"))),))
    return Asked((Call.of(f"dynamodb:{op}", "*"),), modelled=op in ("ListTables",))


# states, lambda, sts, cloudwatch ------------------------------------------------------------------------


def _states(request: Request) -> Asked:
    op, params = request.operation, request.params
    action = f"states:{op}"
    for name in ("stateMachineArn", "executionArn"):
        if params.get(name):
            return Asked((Call.of(action, params[name]),))
    modelled = op in ("SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat", "ListStateMachines")
    return Asked((Call.of(action, "*"),), modelled=modelled)


def _lambda(request: Request) -> Asked:
    op, params = request.operation, request.params
    iam_action = {"Invoke": "InvokeFunction", "InvokeAsync": "InvokeFunction"}.get(op, op)
    name = params.get("FunctionName")
    if not name:
        return Asked((Call.of(f"lambda:{iam_action}", "*"),), modelled=op in ("ListFunctions",))
    arn = name if name.startswith("arn:") else request.arn("lambda", f"function:{name}")
    if params.get("Qualifier"):
        arn += f":{params['Qualifier']}"
    return Asked((Call.of(f"lambda:{iam_action}", arn),))


def _cloudwatch(request: Request) -> Asked:
    """Alarms are resources (``alarm:<name>``); metric reads and writes have no resource types."""
    op, params = request.operation, request.params
    action = f"cloudwatch:{op}"
    if op == "PutMetricAlarm" and params.get("AlarmName"):
        return Asked((Call.of(action, request.arn("cloudwatch", f"alarm:{params['AlarmName']}")),))
    if op == "DeleteAlarms":
        names = params.get("AlarmNames") or []
        return Asked(tuple(Call.of(action, request.arn("cloudwatch", f"alarm:{name}")) for name in names))
    modelled = op in ("PutMetricData", "GetMetricData", "GetMetricStatistics", "DescribeAlarms", "ListMetrics")
    return Asked((Call.of(action, "*"),), modelled=modelled)


# ec2, elasticloadbalancing -------------------------------------------------------------------------------


def _ec2(request: Request) -> Asked:
    op, params = request.operation, request.params
    action = f"ec2:{op}"
    ec2 = _backend("ec2", request.account, request.region)
    if op.startswith("Describe"):
        return Asked((Call.of(action, "*"),))
    if op in ("TerminateInstances", "StopInstances", "StartInstances", "RebootInstances"):
        return Asked(tuple(
            Call.of(action, request.arn("ec2", f"instance/{i}"), _tags_context("ec2", _instance_tags(ec2, i)))
            for i in params.get("InstanceIds") or []
        ))  # fmt: skip
    if op == "CreateTags":
        tags = _request_tags_context(params.get("Tags") or [])
        calls = []
        for resource_id in params.get("Resources") or []:
            kind = {"i": "instance", "vol": "volume", "eni": "network-interface"}.get(resource_id.split("-")[0])
            if kind is None:
                return Asked((Call.of(action, "*", tags),), modelled=False)
            existing = _instance_tags(ec2, resource_id) if kind == "instance" else {}
            calls.append(Call.of(action, request.arn("ec2", f"{kind}/{resource_id}"),
                                 {**_tags_context("ec2", existing), **tags}))  # fmt: skip
        return Asked(tuple(calls))
    if op == "RunInstances":
        return Asked(tuple(_run_instances(request, ec2)))
    if op in _EBS:
        return Asked(tuple(_EBS[op](request, ec2)))
    return Asked((Call.of(action, "*"),), modelled=False)


def _resource_tags(ec2: Any, resource_id: str) -> dict[str, str]:
    try:
        return {t["key"]: t["value"] for t in ec2.describe_tags(filters={"resource-id": [resource_id]})}
    except Exception:  # an unknown resource: EC2 refuses the request itself
        return {}


def _snapshot_arn(request: Request, snapshot: str) -> str:
    return request.arn("ec2", f"snapshot/{snapshot}", account=False)  # snapshot ARNs carry no account


def _spec_tags(params: Mapping[str, Any], kind: str) -> list[Mapping[str, str]]:
    specs = params.get("TagSpecifications") or []
    return [t for s in specs if s.get("ResourceType") == kind for t in s.get("Tags") or []]


def _on_create(request: Request, kind: str, operation: str) -> list[Call]:
    """Tags a create request puts on what it makes: ``ec2:CreateTags`` with ``ec2:CreateAction``."""
    tags = _spec_tags(request.params, kind)
    if not tags:
        return []
    context = {"ec2:CreateAction": [operation], **_request_tags_context(tags)}
    resource = _snapshot_arn(request, "*") if kind == "snapshot" else request.arn("ec2", f"{kind}/*")
    return [Call.of("ec2:CreateTags", resource, context, because=f"ec2:{operation} with tags")]


def _create_snapshots(request: Request, ec2: Any) -> list[Call]:
    """The instance, each volume it snapshots (its tags) and the new snapshots (the request's tags)."""
    action, spec = "ec2:CreateSnapshots", request.params.get("InstanceSpecification") or {}
    instance_id = spec.get("InstanceId", "")
    calls = [Call.of(action, request.arn("ec2", f"instance/{instance_id}"),
                     _tags_context("ec2", _resource_tags(ec2, instance_id)))]  # fmt: skip
    try:
        instance = ec2.get_instance(instance_id)
        boot = str(spec.get("ExcludeBootVolume", False)).lower() == "true"
        volumes = [
            m.volume_id for d, m in instance.get_block_device_mapping if not (boot and d == instance.root_device_name)
        ]
    except Exception:  # an unknown instance: EC2 refuses the request itself
        volumes = []
    for volume in volumes:
        calls.append(
            Call.of(action, request.arn("ec2", f"volume/{volume}"), _tags_context("ec2", _resource_tags(ec2, volume)))
        )
    tags = _request_tags_context(_spec_tags(request.params, "snapshot"))
    calls.append(Call.of(action, _snapshot_arn(request, "*"), tags))
    return calls + _on_create(request, "snapshot", "CreateSnapshots")


def _delete_snapshot(request: Request, ec2: Any) -> list[Call]:
    snapshot = request.params.get("SnapshotId", "")
    return [
        Call.of(
            "ec2:DeleteSnapshot", _snapshot_arn(request, snapshot), _tags_context("ec2", _resource_tags(ec2, snapshot))
        )
    ]


def _create_volume(request: Request, ec2: Any) -> list[Call]:
    """The new volume (the request's tags) and the snapshot it is made from (its tags)."""
    calls = [Call.of("ec2:CreateVolume", request.arn("ec2", "volume/*"),
                     _request_tags_context(_spec_tags(request.params, "volume")))]  # fmt: skip
    snapshot = request.params.get("SnapshotId")
    if snapshot:
        calls.append(Call.of("ec2:CreateVolume", _snapshot_arn(request, snapshot),
                             _tags_context("ec2", _resource_tags(ec2, snapshot))))  # fmt: skip
    return calls + _on_create(request, "volume", "CreateVolume")


def _volume_and_instance(request: Request, ec2: Any) -> list[Call]:
    """AttachVolume, DetachVolume: the volume and the instance, each with its tags."""
    action, params = f"ec2:{request.operation}", request.params
    calls = []
    volume = params.get("VolumeId", "")
    calls.append(
        Call.of(action, request.arn("ec2", f"volume/{volume}"), _tags_context("ec2", _resource_tags(ec2, volume)))
    )
    instance = params.get("InstanceId")
    if instance:
        calls.append(Call.of(action, request.arn("ec2", f"instance/{instance}"),
                             _tags_context("ec2", _resource_tags(ec2, instance))))  # fmt: skip
    return calls


def _delete_volume(request: Request, ec2: Any) -> list[Call]:
    volume = request.params.get("VolumeId", "")
    return [
        Call.of(
            "ec2:DeleteVolume",
            request.arn("ec2", f"volume/{volume}"),
            _tags_context("ec2", _resource_tags(ec2, volume)),
        )
    ]


_EBS: dict[str, Any] = {
    "CreateSnapshots": _create_snapshots,
    "DeleteSnapshot": _delete_snapshot,
    "CreateVolume": _create_volume,
    "AttachVolume": _volume_and_instance,
    "DetachVolume": _volume_and_instance,
    "DeleteVolume": _delete_volume,
}


def _run_instances(request: Request, ec2: Any) -> list[Call]:
    params = dict(request.params)
    template = params.get("LaunchTemplate") or {}
    data = _launch_template_data(ec2, template)
    merged = {**data, **{k: v for k, v in params.items() if v not in (None, [], {})}}
    specs = list(data.get("TagSpecifications") or []) + list(params.get("TagSpecifications") or [])

    def tags_for(kind: str) -> dict[str, list[str]]:
        return _request_tags_context([t for s in specs if s.get("ResourceType") == kind for t in s.get("Tags") or []])

    action = "ec2:RunInstances"
    calls = [
        Call.of(action, request.arn("ec2", "instance/*"), tags_for("instance")),
        Call.of(action, request.arn("ec2", "volume/*"), tags_for("volume")),
        Call.of(action, request.arn("ec2", "network-interface/*")),
    ]
    if merged.get("ImageId"):
        calls.append(Call.of(action, request.arn("ec2", f"image/{merged['ImageId']}", account=False)))
    if merged.get("SubnetId"):
        calls.append(Call.of(action, request.arn("ec2", f"subnet/{merged['SubnetId']}")))
    for group in merged.get("SecurityGroupIds") or []:
        calls.append(Call.of(action, request.arn("ec2", f"security-group/{group}")))
    if template.get("LaunchTemplateId") or data.get("_id"):
        calls.append(
            Call.of(action, request.arn("ec2", f"launch-template/{template.get('LaunchTemplateId') or data['_id']}"))
        )
    for spec in specs:
        if spec.get("Tags"):
            calls.append(Call.of("ec2:CreateTags", request.arn("ec2", f"{spec.get('ResourceType', 'instance')}/*"),
                                 {"ec2:CreateAction": ["RunInstances"], **tags_for(spec.get("ResourceType", ""))},
                                 because="ec2:RunInstances with tags on launch"))  # fmt: skip
    profile = merged.get("IamInstanceProfile") or {}
    for role_arn in _profile_roles(request, profile):
        calls.append(Call.of("iam:PassRole", role_arn, {"iam:PassedToService": ["ec2.amazonaws.com"]},
                             because="ec2:RunInstances with an instance profile"))  # fmt: skip
    return calls


def _launch_template_data(ec2: Any, spec: Mapping[str, Any]) -> dict[str, Any]:
    if not spec:
        return {}
    try:
        template_id = spec.get("LaunchTemplateId") or ec2.launch_template_name_to_ids[spec["LaunchTemplateName"]]
        template = ec2.launch_templates[template_id]
        chosen = template.get_version(spec.get("Version") or template.default_version_number)
        return {**dict(chosen.data), "_id": template.id}
    except Exception:  # an unknown template: EC2 refuses the launch itself
        return {}


def _profile_roles(request: Request, profile: Mapping[str, Any]) -> list[str]:
    name = profile.get("Name") or (profile.get("Arn") or "").rsplit("/", 1)[-1]
    if not name:
        return []
    iam = _backend("iam", request.account, "aws")
    try:
        return [role.arn for role in iam.get_instance_profile(name).roles]
    except Exception:
        return []


def _elbv2(request: Request) -> Asked:
    op, params = request.operation, request.params
    action = f"elasticloadbalancing:{op}"
    if op.startswith("Describe"):
        return Asked((Call.of(action, "*"),))
    arn = params.get("TargetGroupArn") or params.get("LoadBalancerArn")
    if arn:
        try:
            tags = _backend("elbv2", request.account, request.region).tagging_service.get_tag_dict_for_resource(arn)
        except Exception:  # an unknown resource: the service refuses the request itself
            tags = {}
        return Asked((Call.of(action, arn, _tags_context("elasticloadbalancing", tags)),))
    return Asked((Call.of(action, "*"),), modelled=False)


# sts ---------------------------------------------------------------------------------------------------


def _sts(request: Request) -> Asked:
    """AssumeRole is authorized on the role it names (the caller's side; the role's side, its trust
    policy, is decided after it: :func:`etcdops_local.aws.iam._check_trust`)."""
    if request.operation == "AssumeRole":
        return Asked((Call.of("sts:AssumeRole", str(request.params.get("RoleArn", ""))),))
    return Asked((Call.of(f"sts:{request.operation}", "*"),), modelled=False)


_RESOLVERS: dict[str, Any] = {
    "s3": _s3,
    "kms": _kms,
    "ssm": _ssm,
    "secretsmanager": _secretsmanager,
    "sns": _sns,
    "dynamodb": _dynamodb,
    "states": _states,
    "lambda": _lambda,
    "ec2": _ec2,
    "elasticloadbalancing": _elbv2,
    "cloudwatch": _cloudwatch,
    "sts": _sts,
}


def request_calls(request: Request) -> Asked:
    """The authorizations AWS makes for ``request`` (its own action plus the implicit ones)."""
    if (request.prefix, request.operation) == ("sts", "GetCallerIdentity"):
        return Asked(())  # needs no permission; an explicit deny cannot stop it either
    resolver = _RESOLVERS.get(request.prefix)
    if resolver is not None:
        asked: Asked = resolver(request)
        return asked
    return Asked((Call.of(f"{request.prefix}:{request.operation}", "*"),), modelled=False)
