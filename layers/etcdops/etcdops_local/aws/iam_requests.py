"""What a request asks of IAM, part one: the request, its answer, shared helpers, and S3, KMS, SSM and Secrets Manager.

:func:`etcdops_local.aws.iam_services.request_calls` is the entry point (see :mod:`etcdops_local.aws.iam`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from etcdops_local.aws.iampolicy import (
    Call,
)

log = logging.getLogger("etcdops_local.aws.iam_requests")

_AWS_MANAGED_KEY_ALIASES = {"alias/aws/s3", "alias/aws/ssm", "alias/aws/sns", "alias/aws/secretsmanager"}


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
    if op == "GetParametersByPath":  # the path itself is the resource (a parameter hierarchy)
        return Asked((Call.of(action, _parameter_arn(request, params.get("Path", "").rstrip("/"))),))
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

def _instance_tags(ec2: Any, instance_id: str) -> dict[str, str]:
    try:
        instance = ec2.get_instance(instance_id)
    except Exception:
        return {}
    return {t["key"]: t["value"] for t in ec2.describe_tags(filters={"resource-id": [instance.id]})}
