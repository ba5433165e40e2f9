"""Building a stack in the running emulated AWS: template.yaml translated offline, created with moto's
CloudFormation, then what moto skips created here and what it gets wrong mended (see
:mod:`etcdops_local.aws.stack`)."""

from __future__ import annotations

import io
import json
import logging
import secrets
import warnings
import zipfile
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from etcdops_local.aws import iam_records
from etcdops_local.aws.emulator import require_running
from etcdops_local.aws.errors import LocalAwsError
from etcdops_local.aws.functions import register_functions
from etcdops_local.aws.iamtrust import Assumer, refusal, role_service
from etcdops_local.aws.stack_record import ACCOUNT_ID, DEFAULT_REGION, DEFAULT_STACK_NAME, LocalStack
from etcdops_local.aws.templates import (
    CODE_BUCKET,
    effective_parameters,
    prepare_for_translation,
    read_template,
    substitute_definitions,
    translate,
)

log = logging.getLogger("etcdops_local.aws.stack")


def build_stack(
    template_path: Path,
    parameters: Mapping[str, str] | None = None,
    *,
    region: str = DEFAULT_REGION,
    stack_name: str = DEFAULT_STACK_NAME,
) -> LocalStack:
    """Translate ``template_path`` offline and create it in the running moto, with the local fixes."""
    running = require_running()
    if running.region != region:
        raise LocalAwsError(f"region: the running local AWS is in {running.region}, not {region}")
    template_path = template_path.resolve()
    sam = read_template(template_path)
    values = effective_parameters(sam, parameters)
    cfn = translate(prepare_for_translation(sam, template_path.parent), values, region)
    substitute_definitions(cfn)

    with warnings.catch_warnings():
        # moto warns about each type it cannot create; _apply_skipped creates or lists them instead
        warnings.filterwarnings("ignore", message=r"Tried to parse .* but it's not supported")
        stack = _create(running.session(), cfn, template_path, values, parameters, region, stack_name)
    _check_service_trust(running.authorizer, stack)
    register_functions(stack, sam, template_path.parent, cfn, running.sandbox_root)
    stack.credentials = running.admin_credentials
    for lid, role in stack.roles.items():
        running.authorizer.register(iam_records.principal_for(stack, lid, role))
    return stack


def _check_service_trust(authorizer: Any, stack: LocalStack) -> None:
    """Each function's role must let Lambda assume it, each state machine's Step Functions: else the
    service refuses CreateFunction or CreateStateMachine and CloudFormation fails the stack, in its words."""
    for lid, role in stack.roles.items():
        service = role_service(stack.state_machines, lid)
        decision = authorizer.trust(role, Assumer.of_service(service))
        if not decision.allowed:
            raise LocalAwsError(f"stack {stack.stack_name}: {lid}: {refusal(service)} ({role}: {decision.reason})")


def _create(
    session: boto3.session.Session,
    cfn: dict[str, Any],
    template_path: Path,
    values: dict[str, str],
    parameters: Mapping[str, str] | None,
    region: str,
    stack_name: str,
) -> LocalStack:
    _put_dummy_code(session.client("s3"), cfn, region)
    in_use = _names_in_use(session)
    cloudformation = session.client("cloudformation")
    try:
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(cfn),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
    except Exception as exc:  # moto's errors are of many kinds; say which stack and why, once
        raise LocalAwsError(f"creating stack {stack_name} in moto: {type(exc).__name__}: {exc}") from exc
    description = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    if description["StackStatus"] != "CREATE_COMPLETE":
        raise LocalAwsError(f"stack {stack_name}: {description['StackStatus']}: {description.get('StackStatusReason')}")

    stack = LocalStack(
        stack_name=stack_name,
        region=region,
        account_id=ACCOUNT_ID,
        template_path=str(template_path),
        parameters=values,
        resources={},
        types={lid: r["Type"] for lid, r in cfn["Resources"].items()},
        outputs={o["OutputKey"]: o.get("OutputValue", "") for o in description.get("Outputs", [])},
    )
    paginator = cloudformation.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack_name):
        for summary in page["StackResourceSummaries"]:
            if summary.get("PhysicalResourceId"):
                stack.resources[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
    taken = [f"{stack.types[lid]} {name}" for lid, name in stack.resources.items()
             if name in in_use.get(stack.types.get(lid, ""), set())]  # fmt: skip
    if taken:
        raise LocalAwsError(
            f"stack {stack_name}: {', '.join(sorted(taken))} already exist(s) in this account and region "
            "(names are unique per account and region: CloudFormation fails the stack; derive the name from the stack)"
        )

    _apply_skipped(stack, cfn, session)
    lambda_client, sfn = session.client("lambda"), session.client("stepfunctions")
    for lid, name in stack.of_type("AWS::Lambda::Function").items():
        stack.functions[lid] = name
        stack.function_arns[lid] = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"
        stack.roles[lid] = lambda_client.get_function_configuration(FunctionName=name)["Role"]
    stack.state_machines = stack.of_type("AWS::StepFunctions::StateMachine")
    for lid, arn in stack.state_machines.items():
        stack.roles[lid] = sfn.describe_state_machine(stateMachineArn=arn)["roleArn"]
    return stack


def _names_in_use(session: boto3.session.Session) -> dict[str, set[str]]:
    """Physical names that the emulated services would silently reuse (their create calls overwrite or
    return the existing resource) where CloudFormation fails a stack instead. The services that refuse
    a duplicate themselves (SSM documents, secrets, buckets, tables, roles, log groups) need no list."""

    def names(service: str, operation: str, key: str, field: str) -> set[str]:
        pages = session.client(service).get_paginator(operation).paginate()
        return {item[field] for page in pages for item in page[key]}

    return {
        "AWS::CloudWatch::Dashboard": names("cloudwatch", "list_dashboards", "DashboardEntries", "DashboardName"),
        "AWS::SNS::Topic": names("sns", "list_topics", "Topics", "TopicArn"),
        "AWS::StepFunctions::StateMachine": names(
            "stepfunctions", "list_state_machines", "stateMachines", "stateMachineArn"
        ),
        "AWS::Events::Rule": names("events", "list_rules", "Rules", "Name"),
        "AWS::Lambda::Function": names("lambda", "list_functions", "Functions", "FunctionName"),
    }


def _put_dummy_code(s3: Any, cfn: Mapping[str, Any], region: str) -> None:
    """CloudFormation's Lambda wants its code objects to exist; ours run from the working tree."""
    kwargs: dict[str, Any] = {}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=CODE_BUCKET, **kwargs)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README", "etcdops local stack: the code runs from the working tree\n")
    for resource in cfn["Resources"].values():
        props = resource.get("Properties") or {}
        location = props.get("Code") or props.get("Content") or {}
        if isinstance(location, dict) and location.get("S3Bucket") == CODE_BUCKET:
            s3.put_object(Bucket=CODE_BUCKET, Key=location["S3Key"], Body=buffer.getvalue())


_NOT_EMULATED = {
    # moto evaluates bucket policies, but takes any Condition it cannot check (aws:SecureTransport) as
    # a Deny: the template's deny-non-TLS policy would refuse every request. Locally there is no TLS
    # to enforce, so the policy is left out.
    "AWS::S3::BucketPolicy": "not applied: moto would deny every request on its aws:SecureTransport condition",
    "AWS::ApiGatewayV2::Api": "no API Gateway locally: approve with `etcdops approve EXECUTION`",
    "AWS::ApiGatewayV2::Stage": "no API Gateway locally: approve with `etcdops approve EXECUTION`",
}
_INTS = {"Period", "EvaluationPeriods", "DatapointsToAlarm"}
_FLOATS = {"Threshold"}
_BOOLS = {"ActionsEnabled", "ReturnData"}


def api_types(value: Any) -> Any:
    if isinstance(value, list):
        return [api_types(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in _INTS:
            out[key] = int(item)
        elif key in _FLOATS:
            out[key] = float(item)
        elif key in _BOOLS:
            out[key] = item if isinstance(item, bool) else str(item).lower() == "true"
        else:
            out[key] = api_types(item)
    return out


def _apply_skipped(stack: LocalStack, cfn: Mapping[str, Any], session: boto3.session.Session) -> None:
    """Create what moto's CloudFormation skips (alarms, SNS subscriptions), mend what it gets wrong (KMS key policies,
    layer ids), and list what is left out on purpose (``skipped``) or that nobody creates (``unhandled``)."""
    from moto.cloudformation.models import cloudformation_backends
    from moto.cloudformation.parsing import clean_json, get_model_map

    backend = cloudformation_backends[stack.account_id][stack.region]
    fake = next(s for s in backend.stacks.values() if s.name == stack.stack_name and s.status == "CREATE_COMPLETE")
    resource_map = fake.resource_map
    supported = get_model_map()
    for lid, resource in cfn["Resources"].items():
        kind = resource["Type"]
        made: Any = resource_map.get(lid)
        if lid not in stack.resources and isinstance(getattr(made, "arn", None), str):
            stack.resources[lid] = made.arn  # e.g. a LayerVersion: moto lists no physical id for it
        if kind in supported:
            continue
        condition = resource.get("Condition")
        if condition and not resource_map.lazy_condition_map[condition]:
            continue
        props = api_types(clean_json(resource.get("Properties") or {}, resource_map))
        _create_skipped(stack, session, resource_map, lid, kind, props)
    _mend_documents(stack)
    for key, output in (cfn.get("Outputs") or {}).items():
        if key in stack.outputs and stack.outputs[key].startswith("<moto."):  # a Ref moto did not turn into an id
            value = clean_json(output.get("Value"), resource_map)
            stack.outputs[key] = str(getattr(value, "arn", value))
    _install_role_policies(stack, cfn, resource_map)


def _create_skipped(
    stack: LocalStack, session: boto3.session.Session, resource_map: Any, lid: str, kind: str, props: dict[str, Any]
) -> None:
    """One resource moto's CloudFormation skipped: created here, listed as left out, or listed as unhandled."""
    if kind == "AWS::CloudWatch::Alarm":
        cloudwatch = session.client("cloudwatch")
        props.setdefault("AlarmName", f"{stack.stack_name}-{lid}")
        if cloudwatch.describe_alarms(AlarmNames=[props["AlarmName"]])["MetricAlarms"]:
            raise LocalAwsError(
                f"stack {stack.stack_name}: AWS::CloudWatch::Alarm {props['AlarmName']} already exists in this "
                "account and region (CloudFormation fails the stack; derive the name from the stack)"
            )
        cloudwatch.put_metric_alarm(**props)
        stack.alarms[lid] = stack.resources[lid] = props["AlarmName"]
    elif kind == "AWS::SNS::Subscription":
        attributes = {
            k: props[k] if isinstance(props[k], str) else json.dumps(props[k])
            for k in ("FilterPolicy", "RawMessageDelivery", "RedrivePolicy")
            if k in props
        }
        subscribed = session.client("sns").subscribe(
            TopicArn=props["TopicArn"],
            Protocol=props["Protocol"],
            Endpoint=props["Endpoint"],
            Attributes=attributes,
        )
        stack.resources[lid] = subscribed["SubscriptionArn"]
    elif kind == "AWS::SecretsManager::Secret":
        # moto's CloudFormation skips secrets; GenerateSecretString becomes a random value here
        created = session.client("secretsmanager").create_secret(
            Name=props.get("Name") or f"{stack.stack_name}-{lid}",
            Description=props.get("Description", ""),
            SecretString=props.get("SecretString") or secrets.token_urlsafe(48),
        )
        stack.resources[lid] = created["ARN"]
        resource_map._parsed_resources[lid] = _Made(created["ARN"])  # so that Ref resolves in policies
    elif kind == "AWS::Lambda::EventInvokeConfig":  # moto has no model: invoke_async reads it
        function, settings = _invoke_config(stack, lid, props)
        stack.invoke_configs[function] = settings
        stack.resources[lid] = f"{props['FunctionName']}:{props.get('Qualifier', '$LATEST')}"
    elif kind in _NOT_EMULATED:
        stack.skipped[lid] = f"{kind}: {_NOT_EMULATED[kind]}"
    elif lid not in stack.resources:
        stack.unhandled.append(f"{lid} ({kind})")


def _mend_documents(stack: LocalStack) -> None:
    """KMS key policies and SSM document contents from CloudFormation stored as JSON text, as AWS keeps them."""
    from moto.kms.models import kms_backends
    from moto.ssm.models import ssm_backends

    for key_id in stack.of_type("AWS::KMS::Key").values():  # moto keeps a CloudFormation KeyPolicy as a dict,
        key = kms_backends[stack.account_id][stack.region].keys.get(key_id)  # then every KMS call fails on it
        if key is not None and isinstance(key.policy, dict):
            key.policy = json.dumps(key.policy)
    documents = ssm_backends[stack.account_id][stack.region]._documents
    for name in stack.of_type("AWS::SSM::Document").values():  # the same for an SSM document's Content:
        for version in getattr(documents.get(name), "versions", {}).values():  # DescribeDocument fails on it
            if isinstance(version.content, dict):
                version.content = json.dumps(version.content)


@dataclass(frozen=True)
class _Made:
    """A resource created here (not by moto's CloudFormation), as ``Ref`` resolves it."""

    physical_resource_id: str

    def get_cfn_attribute(self, name: str) -> Any:
        if name == "Arn" and self.physical_resource_id.startswith("arn:"):
            return self.physical_resource_id
        raise NotImplementedError(name)


def _install_role_policies(stack: LocalStack, cfn: Mapping[str, Any], resource_map: Any) -> None:
    """Each role's inline policies exactly as the transformed template says, as JSON documents.

    moto's CloudFormation stores them as Python reprs and resolves a Ref to a resource it skipped to
    None; the role policies are what the local IAM enforces, so they are written again here, resolved
    against every resource of the stack (a reference that still resolves to nothing is an error).
    """
    from moto.cloudformation.parsing import clean_json
    from moto.iam.models import iam_backends

    from etcdops_local.aws.iampolicy import read_policy

    iam = iam_backends[stack.account_id]["aws"]
    for lid, resource in cfn["Resources"].items():
        if resource.get("Type") != "AWS::IAM::Role" or lid not in stack.resources:
            continue
        role_name = stack.resources[lid]
        for policy in (resource.get("Properties") or {}).get("Policies") or []:
            name = str(clean_json(policy["PolicyName"], resource_map))
            document = clean_json(_drop_no_value(policy["PolicyDocument"], resource_map), resource_map)
            text = json.dumps(document)
            if _strings_in(document) or "<moto." in text:
                raise LocalAwsError(f"{lid}: policy {name} refers to something the local stack did not create: {text}")
            read_policy(f"{lid}.{name}", document)  # a policy the local evaluator cannot read fails the build
            iam.get_role(role_name).put_policy(name, text)  # as CloudFormation puts it (no Version required)


def _invoke_config(stack: LocalStack, lid: str, props: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(function logical id, its settings) of an EventInvokeConfig whose names moto has resolved."""
    by_name = {name: function for function, name in stack.of_type("AWS::Lambda::Function").items()}
    by_arn = {f"arn:aws:lambda:{stack.region}:{stack.account_id}:function:{n}": f for n, f in by_name.items()}
    function = by_name.get(str(props.get("FunctionName")))
    if function is None:
        raise LocalAwsError(f"{lid}: FunctionName {props.get('FunctionName')!r} is not a function of this stack")
    settings: dict[str, Any] = {"MaximumRetryAttempts": int(props.get("MaximumRetryAttempts", 2))}
    destinations = props.get("DestinationConfig") or {}
    if (destinations.get("OnSuccess") or {}).get("Destination") is not None:
        raise LocalAwsError(f"{lid}: OnSuccess destinations are not emulated locally")
    destination = (destinations.get("OnFailure") or {}).get("Destination")
    if destination is not None:
        target = by_arn.get(str(destination))
        if target is None:
            raise LocalAwsError(f"{lid}: OnFailure destination {destination}: only this stack's functions are emulated")
        settings["OnFailure"] = target
    return function, settings


def _drop_no_value(node: Any, resource_map: Any) -> Any:
    """List items that are ``Fn::If`` choosing ``AWS::NoValue`` left out, as CloudFormation leaves them out
    (moto would keep them as None, which reads like a reference to a resource nobody made)."""
    if isinstance(node, dict):
        return {k: _drop_no_value(v, resource_map) for k, v in node.items()}
    if not isinstance(node, list):
        return node
    kept = []
    for item in node:
        if isinstance(item, dict) and set(item) == {"Fn::If"}:
            condition, then, otherwise = item["Fn::If"]
            chosen = then if resource_map.lazy_condition_map[condition] else otherwise
            if chosen == {"Ref": "AWS::NoValue"}:
                continue
        kept.append(_drop_no_value(item, resource_map))
    return kept


def _strings_in(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings_in(v)]
    return [value] if value is None or value == "None" else []
