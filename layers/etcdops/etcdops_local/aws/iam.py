"""IAM in the local stack: every function acts with its own role, and AWS's answer is enforced.

moto authenticates a request (a known access key, a valid signature) but its authorization checks the
action against ``*`` for most services, knows few condition keys and none of AWS's implicit checks.
While a :class:`LocalAws` runs, this module takes over the authorization step of every request:

* **Who.** The harness acts as an administrator (an IAM user made for it). A function invocation acts
  with credentials of its own role, the role CloudFormation created from the transformed template
  (:mod:`etcdops_local.aws.sandbox` binds them to the invocation), and a state machine's own calls (its
  ``lambda:invoke`` tasks) act with the state machine's role. Requests with any other key fail as in
  AWS (``InvalidClientTokenId``).
* **What.** :func:`request_calls` turns a request into the authorizations AWS makes for it: the
  action on the resource ARN it names, with the condition keys AWS would supply (resource tags,
  request tags, ``iam:PassedToService``), plus the implicit ones: an SSE-KMS object read needs
  ``kms:Decrypt`` on its key, a write ``kms:GenerateDataKey``; a SecureString parameter or a secret
  under a customer key needs ``kms:Decrypt``; publishing to an encrypted topic needs
  ``kms:GenerateDataKey`` and ``kms:Decrypt``; a launch with an instance profile needs
  ``iam:PassRole`` on its role, and tags on launch ``ec2:CreateTags``. A request this module cannot
  model is authorized against ``*`` and recorded as unmodelled, which the coverage check reports.
* **The answer.** Each authorization is decided by :func:`etcdops_local.aws.iampolicy.evaluate` under the
  role's policies as installed from the transformed template; any denial fails the request with
  AWS's error, so a missing permission fails the test exactly as it would fail in AWS.
* **The record.** Every decision of a stack principal is recorded (principal, action, resource,
  why, allowed, the statements that allowed it, a fingerprint of the policies it was decided under,
  and whether the test provoked the denial on purpose: :meth:`Authorizer.expect_denied`).
  :func:`check` compares the records of the e2e runs with the template in both directions: nothing
  denied, and every granted action used by some test or listed with a reason (``python -m
  etcdops_local.aws.iam check``; bin/test runs it through tools/iam_coverage.py). Records decided under
  other policies (a test's copy of the template with a statement taken away) are set aside.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdops.domain.errors import ConfigError, EtcdopsError
from etcdops_local.aws.iampolicy import (
    Call,
    Decision,
    Grant,
    Policy,
    evaluate,
    fingerprint,
    granted_actions,
    read_policy,
)
from etcdops_local.aws.sandbox import Credentials

log = logging.getLogger("etcdops_local.aws.iam")

ADMIN_USER = "etcdops-local-admin"
RECORDS_ENV = "ETCDOPS_IAM_RECORDS"  # a directory: each local AWS writes its records there when it stops
_AWS_MANAGED_KEY_ALIASES = {"alias/aws/s3", "alias/aws/ssm", "alias/aws/sns", "alias/aws/secretsmanager"}
_SIGNING_NAME_TO_PREFIX = {"monitoring": "cloudwatch", "elasticloadbalancingv2": "elasticloadbalancing"}


# ---- principals -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """A stack's function or state machine, by the role it acts with."""

    stack: str
    logical_id: str
    role_arn: str
    names: tuple[tuple[str, str], ...] = ()  # (physical value, placeholder) to write records stack-independently

    @property
    def role_name(self) -> str:
        return self.role_arn.rsplit("/", 1)[-1]

    def generalize(self, value: str) -> str:
        for physical, placeholder in self.names:
            value = value.replace(physical, placeholder)
        return value


def principal_for(stack: Any, logical_id: str, role_arn: str) -> Principal:
    """``stack`` is a :class:`etcdops_local.aws.stack.LocalStack`; its physical names become ``${LogicalId}``."""
    pairs = [(physical, f"${{{lid}}}") for lid, physical in stack.resources.items() if len(physical) >= 6]
    pairs.sort(key=lambda pair: -len(pair[0]))  # whole ARNs before the names inside them
    return Principal(stack.stack_name, logical_id, role_arn, tuple(pairs))


# ---- what a request asks of IAM --------------------------------------------------------------------


@dataclass
class Request:
    """A request as the authorization step sees it."""

    prefix: str  # the IAM service prefix (s3, kms, states, elasticloadbalancing...)
    operation: str  # the API operation (GetObject, Invoke, RunInstances...)
    params: dict[str, Any]
    account: str
    region: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, Any] = field(default_factory=dict)
    bucket: str | None = None
    key: str | None = None

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account if account else ''}:{resource}"


@dataclass(frozen=True)
class Asked:
    """The authorizations a request needs; ``modelled`` is False when this module did not know the request."""

    calls: tuple[Call, ...]
    modelled: bool = True


def _backend(name: str, account: str, region: str) -> Any:
    import importlib

    module = importlib.import_module(f"moto.{name}.models")
    backends = getattr(module, f"{name}_backends")
    return backends[account][region]


def _key_arn(request: Request, key_id: str | None) -> str | None:
    """The ARN of a customer managed key named any way (id, ARN, alias); None for AWS managed or unknown keys."""
    if not key_id:
        return None
    if key_id in _AWS_MANAGED_KEY_ALIASES or key_id.endswith(tuple(":" + a for a in _AWS_MANAGED_KEY_ALIASES)):
        return None
    region = key_id.split(":")[3] if key_id.startswith("arn:") else request.region
    kms = _backend("kms", request.account, region)
    try:
        raw = kms.any_id_to_key_id(key_id)
        key = kms.keys[raw]
    except Exception:  # an unknown key: the service call itself will fail, with its own error
        return None
    if getattr(key, "key_manager", "CUSTOMER") != "CUSTOMER":
        return None
    return f"arn:aws:kms:{region}:{request.account}:key/{raw}"


def _tags_context(prefix: str, tags: Mapping[str, str]) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {}
    for k, v in tags.items():
        context[f"aws:ResourceTag/{k}"] = [v]
        context[f"{prefix}:ResourceTag/{k}"] = [v]
    return context


def _request_tags_context(tags: Iterable[Mapping[str, str]]) -> dict[str, list[str]]:
    pairs = [(t["Key"], t.get("Value", "")) for t in tags]
    context: dict[str, list[str]] = {f"aws:RequestTag/{k}": [v] for k, v in pairs}
    if pairs:
        context["aws:TagKeys"] = [k for k, _ in pairs]
    return context


# s3 ----------------------------------------------------------------------------------------------------


def _s3(request: Request) -> Asked:
    action = f"s3:{request.operation}"
    bucket, key = request.bucket, request.key
    if bucket is None:
        return Asked((Call.of(action, "*"),))
    resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")
    calls = [Call.of(action, resource)]
    s3 = _backend("s3", request.account, "global")
    because = f"{action} of an SSE-KMS object"
    if key is not None and request.method == "GET" and "uploadId" not in request.query:
        stored = _s3_object(s3, bucket, key, request.query.get("versionId"))
        if stored is not None and getattr(stored, "encryption", None) == "aws:kms":
            kms_key = _key_arn(request, getattr(stored, "kms_key_id", None) or _bucket_kms_key(s3, bucket))
            if kms_key:
                calls.append(Call.of("kms:Decrypt", kms_key, because=because))
    elif key is not None and request.method in ("PUT", "POST") and request.operation == "PutObject":
        part = "uploadId" in request.query and "partNumber" in request.query
        completing = "uploadId" in request.query and not part
        if not completing:
            headers = {k.lower(): v for k, v in request.headers.items()}
            sse = headers.get("x-amz-server-side-encryption")
            kms_key = headers.get("x-amz-server-side-encryption-aws-kms-key-id")
            if sse is None and not part:
                sse, kms_key = _bucket_default_sse(s3, bucket)
            if part:  # an upload part is encrypted under the upload's data key: kms:Decrypt (S3 docs)
                upload = _s3_upload(s3, bucket, request.query.get("uploadId"))
                sse = getattr(upload, "sse_encryption", None) or _bucket_default_sse(s3, bucket)[0]
                kms_key = getattr(upload, "kms_key_id", None) or _bucket_default_sse(s3, bucket)[1]
            if sse == "aws:kms":
                arn = _key_arn(request, kms_key or "alias/aws/s3")
                if arn:
                    kms_action = "kms:Decrypt" if part else "kms:GenerateDataKey"
                    calls.append(Call.of(kms_action, arn, because=f"{action} with SSE-KMS"))
    return Asked(tuple(calls))


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _s3_object(s3: Any, bucket: str, key: str, version: Any) -> Any:
    try:
        return s3.get_object(bucket, key, version_id=_first(version))
    except Exception:  # missing object or bucket: S3 answers that itself
        return None


def _s3_upload(s3: Any, bucket: str, upload_id: Any) -> Any:
    try:
        return s3.get_bucket(bucket).multiparts.get(_first(upload_id))
    except Exception:
        return None


def _bucket_default_sse(s3: Any, bucket: str) -> tuple[str | None, str | None]:
    try:
        encryption = s3.get_bucket(bucket).encryption
    except Exception:
        return None, None
    rules = (encryption or {}).get("Rule") or []
    rule = rules[0] if isinstance(rules, list) and rules else rules
    default = (rule or {}).get("ApplyServerSideEncryptionByDefault") or {}
    return default.get("SSEAlgorithm"), default.get("KMSMasterKeyID")


def _bucket_kms_key(s3: Any, bucket: str) -> str | None:
    return _bucket_default_sse(s3, bucket)[1] or "alias/aws/s3"


# kms ---------------------------------------------------------------------------------------------------


def _kms(request: Request) -> Asked:
    action = f"kms:{request.operation}"
    key_id = request.params.get("KeyId")
    if key_id is None and request.operation == "Decrypt":
        key_id = _ciphertext_key(request.params.get("CiphertextBlob"))
    if key_id is None:
        return Asked((Call.of(action, "*"),))
    arn = _key_arn(request, key_id)
    if arn is None:  # an AWS managed or unknown key: authorize on what was named
        arn = key_id if key_id.startswith("arn:") else request.arn("kms", f"key/{key_id}")
    return Asked((Call.of(action, arn),))


def _ciphertext_key(blob: Any) -> str | None:
    import base64

    from moto.kms.utils import _deserialize_ciphertext_blob

    try:
        raw = base64.b64decode(blob) if isinstance(blob, str) else bytes(blob)
        return str(_deserialize_ciphertext_blob(raw).key_id)
    except Exception:  # not a moto ciphertext: KMS refuses it itself
        return None


# ssm ---------------------------------------------------------------------------------------------------


def _parameter_arn(request: Request, name: str) -> str:
    return name if name.startswith("arn:") else request.arn("ssm", f"parameter/{name.lstrip('/')}")


def _ssm(request: Request) -> Asked:
    op, params = request.operation, request.params
    action = f"ssm:{op}"
    if op in ("GetParameter", "PutParameter", "DeleteParameter", "GetParameterHistory"):
        name = params.get("Name", "")
        calls = [Call.of(action, _parameter_arn(request, name))]
        if op == "GetParameter" and params.get("WithDecryption"):
            calls += _secure_string_key(request, name, action)
        if op == "PutParameter" and params.get("Type") == "SecureString":
            arn = _key_arn(request, params.get("KeyId") or "alias/aws/ssm")
            if arn:
                calls.append(Call.of("kms:Encrypt", arn, because=f"{action} of a SecureString under a customer key"))
        return Asked(tuple(calls))
    if op == "GetParameters":
        calls = []
        for name in params.get("Names") or []:
            calls.append(Call.of(action, _parameter_arn(request, name)))
            if params.get("WithDecryption"):
                calls += _secure_string_key(request, name, action)
        return Asked(tuple(calls))
    if op in ("DescribeDocument", "GetDocument"):
        return Asked((Call.of(action, _document_arn(request, params.get("Name", ""))),))
    if op == "SendCommand":
        calls = [Call.of(action, _document_arn(request, params.get("DocumentName", "")))]
        ec2 = _backend("ec2", request.account, request.region)
        for instance_id in params.get("InstanceIds") or []:
            tags = _instance_tags(ec2, instance_id)
            calls.append(Call.of(action, request.arn("ec2", f"instance/{instance_id}"), _tags_context("ssm", tags)))
        return Asked(tuple(calls))
    if op in ("ListCommands", "ListCommandInvocations", "GetCommandInvocation", "DescribeInstanceInformation",
              "DescribeParameters"):  # fmt: skip
        return Asked((Call.of(action, "*"),))
    return Asked((Call.of(action, "*"),), modelled=False)


def _document_arn(request: Request, name: str) -> str:
    return request.arn("ssm", f"document/{name}", account=not name.startswith("AWS-"))  # AWS's own: no account


def _secure_string_key(request: Request, name: str, action: str) -> list[Call]:
    ssm = _backend("ssm", request.account, request.region)
    try:
        parameter = ssm.get_parameter(name)
    except Exception:
        return []
    if parameter is None or getattr(parameter, "type", None) != "SecureString":
        return []
    arn = _key_arn(request, getattr(parameter, "keyid", None) or "alias/aws/ssm")
    return [Call.of("kms:Decrypt", arn, because=f"{action} of a SecureString under a customer key")] if arn else []


# secretsmanager -----------------------------------------------------------------------------------------


def _secretsmanager(request: Request) -> Asked:
    op, params = request.operation, request.params
    action = f"secretsmanager:{op}"
    backend = _backend("secretsmanager", request.account, request.region)
    if op == "CreateSecret":
        name = params.get("Name", "")
        calls = [Call.of(action, request.arn("secretsmanager", f"secret:{name}-??????"),
                         _request_tags_context(params.get("Tags") or []))]  # fmt: skip
        arn = _key_arn(request, params.get("KmsKeyId"))
        if arn and ("SecretString" in params or "SecretBinary" in params):
            calls.append(Call.of("kms:GenerateDataKey", arn, because=f"{action} under a customer key"))
        return Asked(tuple(calls))
    secret_id = params.get("SecretId")
    if secret_id is None:
        return Asked((Call.of(action, "*"),), modelled=op in ("ListSecrets", "GetRandomPassword"))
    secret = _secret(backend, secret_id)
    arn = secret.arn if secret is not None else (
        secret_id if secret_id.startswith("arn:") else request.arn("secretsmanager", f"secret:{secret_id}")
    )  # fmt: skip
    tags = {t["Key"]: t["Value"] for t in (getattr(secret, "tags", None) or [])} if secret is not None else {}
    context = _tags_context("secretsmanager", tags)
    if op == "TagResource":
        context.update(_request_tags_context(params.get("Tags") or []))
    calls = [Call.of(action, arn, context)]
    kms_arn = _key_arn(request, getattr(secret, "kms_key_id", None)) if secret is not None else None
    if kms_arn and op == "GetSecretValue":
        calls.append(Call.of("kms:Decrypt", kms_arn, because=f"{action} of a secret under a customer key"))
    if kms_arn and op == "PutSecretValue":
        calls.append(Call.of("kms:GenerateDataKey", kms_arn, because=f"{action} of a secret under a customer key"))
    return Asked(tuple(calls))


def _secret(backend: Any, secret_id: str) -> Any:
    try:
        return backend.secrets[secret_id]
    except Exception:
        return None


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


def _instance_tags(ec2: Any, instance_id: str) -> dict[str, str]:
    try:
        instance = ec2.get_instance(instance_id)
    except Exception:
        return {}
    return {t["key"]: t["value"] for t in ec2.describe_tags(filters={"resource-id": [instance.id]})}


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
    return Asked((Call.of(action, "*"),), modelled=False)


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


# ---- records -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One authorization a stack principal needed in a run, and AWS's answer."""

    principal: str  # logical id of the function or state machine
    action: str
    resource: str  # generalized: ${LogicalId} for the stack's physical names
    because: str | None
    allowed: bool
    granted_by: tuple[tuple[str, int, str], ...]  # (policy, statement, action pattern)
    modelled: bool = True
    policies: str = ""  # the principal's policies when it was decided (iampolicy.fingerprint)
    expected: bool = False  # a denial the test provoked on purpose (Authorizer.expect_denied)

    def to_json(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "because": self.because,
            "allowed": self.allowed,
            "granted_by": [list(g) for g in self.granted_by],
            "modelled": self.modelled,
            "policies": self.policies,
            "expected": self.expected,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(
            principal=data["principal"],
            action=data["action"],
            resource=data["resource"],
            because=data.get("because"),
            allowed=bool(data["allowed"]),
            granted_by=tuple((g[0], int(g[1]), g[2]) for g in data.get("granted_by") or []),
            modelled=bool(data.get("modelled", True)),
            policies=str(data.get("policies", "")),
            expected=bool(data.get("expected", False)),
        )

    def describe(self) -> str:
        why = f" (needed by {self.because})" if self.because else ""
        return f"{self.principal}: {self.action} on {self.resource}{why}"


class Recorder:
    """The distinct records of one local AWS (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: set[Record] = set()

    def add(
        self,
        principal: Principal,
        call: Call,
        decision: Decision,
        modelled: bool,
        policies: str = "",
        expected: bool = False,
    ) -> Record:
        record = Record(
            principal=principal.logical_id,
            action=call.action,
            resource=principal.generalize(call.resource),
            because=call.because,
            allowed=decision.allowed,
            granted_by=tuple((g.policy, g.statement, g.action) for g in decision.allowed_by),
            modelled=modelled,
            policies=policies,
            expected=expected and not decision.allowed,
        )
        with self._lock:
            self._records.add(record)
        return record

    @property
    def records(self) -> list[Record]:
        with self._lock:
            return sorted(self._records, key=lambda r: (r.principal, r.action, r.resource))

    def write(self, directory: Path) -> Path | None:
        records = self.records
        if not records:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"iam-{os.getpid()}-{id(self):x}.jsonl"
        with path.open("a") as out:
            for record in records:
                out.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
        return path


def read_records(directory: Path) -> list[Record]:
    records: set[Record] = set()
    for path in sorted(directory.glob("iam-*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.add(Record.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise ConfigError(f"{path}:{number}: not an IAM record: {exc}") from None
    return sorted(records, key=lambda r: (r.principal, r.action, r.resource))


# ---- the authorizer installed into moto ------------------------------------------------------------------


class Authorizer:
    """Identities (the admin, role sessions), the principals of built stacks, and the decision for each request."""

    def __init__(self, account_id: str, region: str) -> None:
        self.account_id = account_id
        self.region = region
        self.recorder = Recorder()
        self._principals: dict[str, Principal] = {}  # role name -> principal
        self._role_credentials: dict[str, Credentials] = {}
        self._lock = threading.Lock()
        self.admin: Credentials | None = None
        self.denials: list[tuple[str, Call, str]] = []  # (principal or role, call, reason), newest last
        self._expected: set[tuple[str, str]] = set()  # (logical id, action) a test denies on purpose

    # identities

    def create_admin(self) -> Credentials:
        """The harness's identity: an IAM user allowed everything (made while authorization is still off)."""
        iam = _backend("iam", self.account_id, "aws")
        iam.create_user(region_name=self.region, user_name=ADMIN_USER)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(ADMIN_USER, "everything", json.dumps(policy))
        key = iam.create_access_key(ADMIN_USER)
        self.admin = Credentials(key.access_key_id, key.secret_access_key)
        return self.admin

    def role_credentials(self, role_arn: str, session_name: str) -> Credentials:
        """Credentials of a session of ``role_arn`` (one per role, kept for the local AWS's life, as a
        warm Lambda sandbox keeps its own)."""
        with self._lock:
            cached = self._role_credentials.get(role_arn)
            if cached is not None:
                return cached
            sts = _backend("sts", self.account_id, "aws")
            assumed = sts.assume_role(
                region_name=self.region,
                role_session_name=session_name[:64],
                role_arn=role_arn,
                policy=None,
                duration=43200,
                external_id=None,
            )
            credentials = Credentials(assumed.access_key_id, assumed.secret_access_key, assumed.session_token)
            self._role_credentials[role_arn] = credentials
            return credentials

    def register(self, principal: Principal) -> None:
        with self._lock:
            self._principals[principal.role_name] = principal

    def principal(self, role_name: str) -> Principal | None:
        with self._lock:
            return self._principals.get(role_name)

    def expect_denied(self, logical_id: str, action: str) -> None:
        """A test provokes this denial on purpose (a host role outside the PassRole scope): its records
        say so, and the coverage check does not count them as permissions the template misses."""
        with self._lock:
            self._expected.add((logical_id, action.lower()))

    def _is_expected(self, principal: Principal, call: Call) -> bool:
        with self._lock:
            return (principal.logical_id, call.action.lower()) in self._expected

    def role_policies(self, role_name: str) -> list[Policy]:
        """The role's inline and attached policies as stored in the emulated IAM."""
        iam = _backend("iam", self.account_id, "aws")
        role = iam.get_role(role_name)
        policies = [_policy(f"{name}", document) for name, document in role.policies.items()]
        for attached in role.managed_policies.values():
            version = next(v for v in attached.versions if v.is_default)
            policies.append(_policy(attached.name, version.document))
        return policies

    # the decision

    def decide(self, role_name: str, request: Request) -> tuple[Call, Decision] | None:
        """Decide every authorization ``request`` needs as ``role_name``; the first denied one, else None."""
        asked = request_calls(request)
        policies = self.role_policies(role_name)
        principal = self.principal(role_name)
        digest = fingerprint(policies) if principal is not None else ""
        denied: tuple[Call, Decision] | None = None
        for call in asked.calls:
            decision = evaluate(policies, call)
            if principal is not None:
                expected = not decision.allowed and self._is_expected(principal, call)
                self.recorder.add(principal, call, decision, asked.modelled, digest, expected)
            if not decision.allowed and denied is None:
                denied = (call, decision)
                who = principal.logical_id if principal else role_name
                with self._lock:
                    self.denials.append((who, call, decision.reason))
                log.info("denied: %s: %s on %s: %s", who, call.action, call.resource, decision.reason)
        return denied


def _policy(name: str, document: Any) -> Policy:
    if isinstance(document, str):
        document = json.loads(document)
    return read_policy(name, document)


_ACTIVE: Authorizer | None = None


def active() -> bool:
    """True while a local AWS authorizes every request here (moto's own access control is then not used)."""
    return _ACTIVE is not None


def install(authorizer: Authorizer) -> Any:
    """Make ``authorizer`` decide every request moto serves (in-process and server); returns the undo."""
    global _ACTIVE
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action
    saved_count = settings.INITIAL_NO_AUTH_ACTION_COUNT
    _ACTIVE = authorizer

    def authenticate_and_authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        active = _ACTIVE
        if active is None:
            original(self, iam_request_cls, resource)
            return
        _authorize(active, self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate_and_authorize  # type: ignore[method-assign]
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # moto's own switch: every request is authenticated

    def undo() -> None:
        global _ACTIVE
        _ACTIVE = None
        ActionAuthenticatorMixin._authenticate_and_authorize_action = original  # type: ignore[method-assign]
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved_count

    return undo


def _authorize(authorizer: Authorizer, response: Any, iam_request_cls: type, resource: str) -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import AccessDeniedError
    from moto.iam.access_control import AssumedRoleAccessKey, S3IAMRequest

    headers = response.headers
    if headers.get("X-Amz-Target") in ActionAuthenticatorMixin.PUBLIC_OPERATIONS:
        return
    is_s3 = iam_request_cls is S3IAMRequest
    operation = response.data.get("Action") if is_s3 else response._get_action()
    if "Authorization" not in headers:  # unsigned or presigned: no local code of ours does either
        raise AccessDeniedError(user_arn="anonymous", action=f"{'s3' if is_s3 else '?'}:{operation}")
    path = response.raw_path
    query = response.uri.partition("?")[2]
    iam_request = iam_request_cls(
        account_id=response.current_account,
        method=response.method,
        path=path + ("?" + query if query else ""),
        data=response.data,
        body=response.raw_body,
        headers=headers,
        action=operation,
    )
    _check_signature(iam_request, response.raw_body)
    access_key = iam_request._access_key
    if not isinstance(access_key, AssumedRoleAccessKey):
        if getattr(access_key, "_owner_user_name", None) == ADMIN_USER:
            return
        iam_request.check_action_permitted(resource)  # another IAM user: moto's own check
        return
    signing_name = iam_request._service
    request = Request(
        prefix=_SIGNING_NAME_TO_PREFIX.get(signing_name, signing_name),
        operation=str(operation),
        params={} if is_s3 else _params(response, str(operation)),
        account=response.current_account,
        region=iam_request._region,
        method=response.method,
        headers=dict(headers),
        query=_query(response),
    )
    if is_s3:
        bucket_and_key = resource.split(":::", 1)[-1] if resource != "*" else None
        if bucket_and_key:
            bucket, _, key = bucket_and_key.partition("/")
            request.bucket, request.key = bucket, (key if "/" in bucket_and_key else None)
    denied = authorizer.decide(access_key._owner_role_name, request)
    if denied is None:
        return
    call = denied[0]
    if is_s3:
        iam_request._raise_access_denied()
    if request.prefix == "ec2":  # EC2 says it its own way
        raise _ec2_refusal(
            f"You are not authorized to perform this operation. User: {access_key.arn} is not authorized to "
            f"perform: {call.action} on resource: {call.resource} because no identity-based policy allows the "
            f"{call.action} action",
        )
    raise AccessDeniedError(user_arn=access_key.arn, action=f"{call.action} on resource: {call.resource}")


def _ec2_refusal(message: str) -> Exception:
    """EC2's ``UnauthorizedOperation`` as an HTTP error, which moto's request handling answers as EC2 does (a
    ServiceException raised while authorizing would reach the caller as a Python exception, not a ClientError)."""
    from moto.core.exceptions import _RESTError

    error = _RESTError("UnauthorizedOperation", message)
    error.code = 403
    return error


def _check_signature(iam_request: Any, body: bytes | None) -> None:
    """SigV4 over what was sent: the body, or for a form POST (whose body the server consumed into its
    form) the form re-encoded, as moto does; moto's own check also signs parsed data for a request with
    an empty body, so every GET of a REST service would fail it."""
    credentials = iam_request._access_key.create_credentials()
    auth = iam_request._create_auth(credentials)
    request = iam_request._create_aws_request()
    content_type = str(iam_request._headers.get("Content-Type", ""))
    if body or not content_type.startswith("application/x-www-form-urlencoded"):
        request.data = body or b""
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    sent = iam_request._get_string_between("Signature=", ",", iam_request._headers["Authorization"])
    if sent != expected:
        iam_request._raise_signature_does_not_match()


def _query(response: Any) -> dict[str, Any]:
    from urllib.parse import parse_qs

    return {k: v for k, v in parse_qs(response.uri.partition("?")[2], keep_blank_values=True).items()}


def _params(response: Any, operation: str) -> dict[str, Any]:
    """The request's parameters by the service's model (JSON bodies directly)."""
    if isinstance(response.body, dict):  # DynamoDB's responses parse the body before authorizing
        return dict(response.body)
    if response.headers.get("X-Amz-Target"):
        try:
            parsed = json.loads(response.body or "{}")
            return parsed if isinstance(parsed, dict) else {}
        except ValueError:
            return {}
    try:
        from moto.core.parse import PROTOCOL_PARSERS
        from moto.core.request import determine_request_protocol
        from moto.core.utils import get_service_model

        request = response.normalized_request
        model = get_service_model(response.boto3_service_name)
        protocol = determine_request_protocol(model, request.content_type)
        parser = PROTOCOL_PARSERS[protocol](model.operation_model(operation), map_type=dict)
        parsed = parser.parse(
            {
                "method": request.method,
                "values": request.values,
                "headers": request.headers,
                "body": request.data,
                "url_path": request.path,
                "url_params": getattr(response, "uri_match", None) or {},
            }
        )
        return dict(parsed)
    except Exception as exc:  # a request the model cannot parse is authorized on what we know
        log.debug("cannot parse %s parameters: %s", operation, exc)
        return {}


# ---- the coverage check --------------------------------------------------------------------------------


@dataclass
class Coverage:
    """Both directions of the IAM-coverage check, with what each finding is."""

    denied: list[Record]  # needed by a run and not granted (the template misses a permission)
    unmodelled: list[Record]  # requests this module does not model: their resources were not checked
    unused: list[tuple[str, Grant]]  # granted and exercised by no test, and not listed with a reason
    stale_reasons: list[str]  # listed as unused with a reason, but no longer granted or now used
    used: int = 0
    granted: int = 0
    set_aside: int = 0  # records decided under other policies (a changed copy of the template)

    @property
    def ok(self) -> bool:
        return not (self.denied or self.unmodelled or self.unused or self.stale_reasons)

    def report(self) -> str:
        lines = [f"IAM coverage: {self.used} of {self.granted} granted actions used by the tests"]
        if self.set_aside:
            lines.append(f"  ({self.set_aside} records of changed copies of the template set aside)")
        for record in self.denied:
            lines.append(f"  MISSING  {record.describe()}")
        for record in self.unmodelled:
            lines.append(
                f"  UNMODELLED  {record.principal}: {record.action} (teach etcdops_local.aws.iam its resource)"
            )
        for principal, grant in self.unused:
            lines.append(
                f"  UNUSED  {principal}: {grant} (used by no test; use it in one, remove it, or list a reason)"
            )
        for reason in self.stale_reasons:
            lines.append(f"  STALE REASON  {reason}")
        if self.ok:
            lines.append("  ok: nothing missing, nothing unused without a reason")
        return "\n".join(lines)


def load_reasons(path: Path) -> dict[str, dict[str, str]]:
    """``principal -> action pattern -> reason`` from a YAML file (granted on purpose, unused by tests).

    The key is the action as the statement writes it (every statement of the principal granting it), or
    ``Sid/action`` for one statement, when another statement's grant of the action is used."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and all(isinstance(r, str) and r.strip() for r in v.values()) for v in data.values()
    ):
        raise ConfigError(f"{path}: expected principal -> action -> reason (a non-empty sentence)")
    return {str(k): {str(a): str(r) for a, r in v.items()} for k, v in data.items()}


def coverage(
    grants: Mapping[str, Sequence[Policy]],
    records: Iterable[Record],
    reasons: Mapping[str, Mapping[str, str]] | None = None,
) -> Coverage:
    """Compare the records of the runs with the principals' policies (``grants``: logical id -> policies)."""
    records = list(records)
    reasons = reasons or {}
    used = {(r.principal, g[0], g[1], g[2]) for r in records if r.allowed for g in r.granted_by}
    used_keys: set[tuple[str, str]] = set()  # (principal, reason key) of every used grant
    granted: set[tuple[str, str]] = set()
    unused: list[tuple[str, Grant]] = []
    total = exercised = 0
    for principal, policies in sorted(grants.items()):
        listed = reasons.get(principal, {})
        for grant, _ in granted_actions(policies):
            total += 1
            keys = _reason_keys(grant)
            granted.update((principal, key) for key in keys)
            if (principal, grant.policy, grant.statement, grant.action) in used:
                exercised += 1
                used_keys.update((principal, key) for key in keys)
            elif not any(key in listed for key in keys):
                unused.append((principal, grant))
    stale = [
        f"{principal}: {key}: " + ("now used by a test" if (principal, key) in used_keys else "not granted")
        for principal, listed in sorted(reasons.items())
        for key in sorted(listed)
        if (principal, key) in used_keys or (principal, key) not in granted
    ]
    return Coverage(
        denied=[r for r in records if not r.allowed and not r.expected],
        unmodelled=sorted({r for r in records if not r.modelled}, key=lambda r: (r.principal, r.action)),
        unused=unused,
        stale_reasons=stale,
        used=exercised,
        granted=total,
    )


def _reason_keys(grant: Grant) -> tuple[str, ...]:
    """How a reason may name a grant: its action (every statement granting it) or ``Sid/action``."""
    return (grant.action, f"{grant.sid}/{grant.action}") if grant.sid else (grant.action,)


def of_these_policies(
    records: Iterable[Record], grants: Mapping[str, Sequence[Policy]]
) -> tuple[list[Record], list[Record]]:
    """The records decided under exactly ``grants``' policies, and the others: a principal the template
    does not have (a test-only function), or one whose statements a test's copy of the template changed."""
    digests = {principal: fingerprint(policies) for principal, policies in grants.items()}
    kept: list[Record] = []
    aside: list[Record] = []
    for record in records:
        (kept if digests.get(record.principal) == record.policies else aside).append(record)
    return kept, aside


def check(
    records_dir: Path, template: Path, reasons: Path | None = None, cluster_name: str = "local"
) -> Coverage | None:
    """The coverage check over the records in ``records_dir`` (None: there are none)."""
    records = read_records(records_dir)
    if not records:
        return None
    listed = load_reasons(reasons) if reasons else {}
    grants = template_grants(template, {"ClusterName": cluster_name})
    kept, aside = of_these_policies(records, grants)
    result = coverage(grants, kept, listed)
    result.set_aside = len(aside)
    return result


def template_grants(template_path: Path, parameters: Mapping[str, str] | None = None) -> dict[str, list[Policy]]:
    """Each principal's policies as the local stack installs them from the transformed template."""
    from etcdops_local.aws.stack import LocalAws

    with LocalAws(enforce_iam=False) as aws:
        stack = aws.build_stack(template_path, parameters)
        return {lid: aws.authorizer.role_policies(arn.rsplit("/", 1)[-1]) for lid, arn in stack.roles.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m etcdops_local.aws.iam check --records DIR [--template T] [--reasons F]``: the IAM-coverage check."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m etcdops_local.aws.iam", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    command = sub.add_parser("check", help="compare the recorded calls of the e2e runs with the template's policies")
    command.add_argument("--records", type=Path, required=True, help=f"the directory ${RECORDS_ENV} pointed at")
    command.add_argument("--template", type=Path, default=Path("template.yaml"))
    command.add_argument("--reasons", type=Path, help="YAML: principal -> action -> why it is granted but unused")
    command.add_argument("--cluster-name", default="local", help="the template's ClusterName (the e2e stacks' cluster)")
    args = parser.parse_args(argv)
    try:
        result = check(args.records, args.template, args.reasons, args.cluster_name)
        if result is None:
            print(f"IAM coverage: no records in {args.records} (did the e2e tests run with ${RECORDS_ENV}?)")
            return 1
    except EtcdopsError as exc:
        print(f"IAM coverage: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(main())
