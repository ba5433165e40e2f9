"""template.yaml as CloudFormation would deploy it, for tests that read its properties offline.

The SAM template is transformed with aws-sam-translator (as ``etcdops_local.aws.stack`` does), then every
intrinsic function is resolved with sample values: the parameters, the pseudo parameters of a sample
stack, and physical ids shaped like AWS's (a secret's ARN ends in ``-`` and six characters, a function
name starts with the stack's). Resources whose Condition is false are left out, as CloudFormation does.

``Policy`` answers "may this role do action A on resource R" the way IAM matches Allow statements
(``*`` and ``?`` wildcards, case-insensitive actions); Conditions are kept for the tests to read.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from etcdops_local.aws.stack import effective_parameters, prepare_for_translation, read_template, translate

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
STACK, REGION, ACCOUNT = "prod-eu", "eu-west-1", "111122223333"
CLUSTER = "kube-eu1"  # not the stack name: a test can tell which one a name derives from
SAMPLE_PARAMETERS = {"ClusterName": CLUSTER}
_PSEUDO = {
    "AWS::StackName": STACK,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/00000000-0000-0000-0000-000000000000",
}
NO_VALUE = object()
_SUB = re.compile(r"\$\{([^}!][^}]*)\}")


class Template:
    """The transformed template with every intrinsic resolved (``resources``), for one set of parameters."""

    def __init__(self, parameters: Mapping[str, str] | None = None, path: Path = TEMPLATE) -> None:
        sam = read_template(path)
        self.parameters = effective_parameters(sam, {**SAMPLE_PARAMETERS, **(parameters or {})})
        missing = sorted(set(sam.get("Parameters") or {}) - set(self.parameters))
        assert not missing, f"parameters without a value: {missing}"
        self.cfn = translate(prepare_for_translation(sam, path.parent), self.parameters, REGION)
        self._conditions: dict[str, bool] = {}
        raw = {lid: r for lid, r in self.cfn["Resources"].items() if self.condition(r.get("Condition"))}
        self._raw = raw
        self.resources: dict[str, dict[str, Any]] = {lid: self.resolve(copy.deepcopy(r)) for lid, r in raw.items()}

    # ---- intrinsics ----------------------------------------------------------------------------

    def condition(self, name: str | None) -> bool:
        if name is None:
            return True
        if name not in self._conditions:
            self._conditions[name] = bool(self._evaluate(self.cfn["Conditions"][name]))
        return self._conditions[name]

    def _evaluate(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            (fn, args), = node.items()
            if fn == "Fn::Equals":
                return self.resolve(args[0]) == self.resolve(args[1])
            if fn == "Fn::Not":
                return not self._evaluate(args[0])
            if fn == "Fn::And":
                return all(self._evaluate(a) for a in args)
            if fn == "Fn::Or":
                return any(self._evaluate(a) for a in args)
            if fn == "Condition":
                return self.condition(args)
        return self.resolve(node)

    def physical_id(self, logical_id: str) -> str:
        """What ``Ref`` returns for a resource, shaped as AWS shapes it."""
        resource = self.cfn["Resources"][logical_id]
        kind, props = resource["Type"], resource.get("Properties") or {}
        name = props.get("Name")
        if kind == "AWS::SecretsManager::Secret":
            return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{self.resolve(name) or logical_id}-AbC123"
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{STACK}-{logical_id}-X1"
        if kind == "AWS::StepFunctions::StateMachine":
            return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{logical_id}-X1"
        if kind == "AWS::KMS::Key":
            return f"key-{logical_id.lower()}"
        if kind == "AWS::S3::Bucket":
            return f"{STACK}-{logical_id.lower()}-x1"
        if kind == "AWS::Lambda::LayerVersion":
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{logical_id}:1"
        if kind == "AWS::Logs::LogGroup" and "LogGroupName" in props:
            return str(self.resolve(props["LogGroupName"]))
        if name is not None and kind == "AWS::SSM::Document":
            return str(self.resolve(name))
        return f"{STACK}-{logical_id}-X1"

    def attribute(self, logical_id: str, attribute: str) -> str:
        kind = self.cfn["Resources"][logical_id]["Type"]
        ref = self.physical_id(logical_id)
        arns = {
            "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{ref}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{ref}",
            "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{ref}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{ref}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{ref}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{ref}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{ref}:*",
            "AWS::CloudWatch::Alarm": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{ref}",
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if attribute == "Arn":
            return ref
        if kind == "AWS::SNS::Topic" and attribute == "TopicName":
            return ref.rsplit(":", 1)[-1]
        if kind == "AWS::S3::Bucket" and attribute == "DomainName":
            return f"{ref}.s3.amazonaws.com"
        return f"{ref}.{attribute}"

    def ref(self, name: str) -> Any:
        if name in _PSEUDO:
            return _PSEUDO[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            declared = self.cfn["Parameters"][name]
            value = self.parameters[name]
            if declared.get("Type") == "CommaDelimitedList":
                return [] if value == "" else value.split(",")
            return value
        return self.physical_id(name)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(v) for v in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, args), = node.items()
            if fn == "Ref":
                return self.ref(args)
            if fn == "Fn::GetAtt":
                logical_id, attribute = args if isinstance(args, list) else args.split(".", 1)
                return self.attribute(logical_id, attribute)
            if fn == "Fn::Sub":
                text, variables = (args, {}) if isinstance(args, str) else (args[0], self.resolve(args[1]))
                return _SUB.sub(lambda m: self._sub_value(m.group(1), variables), text).replace("${!", "${")
            if fn == "Fn::Join":
                assert isinstance(args[0], str), "CloudFormation takes only a literal Fn::Join delimiter"
                return args[0].join(str(v) for v in self.resolve(args[1]))
            if fn == "Fn::If":
                name, then, otherwise = args
                return self.resolve(then if self.condition(name) else otherwise)
            if fn == "Fn::Split":
                return str(self.resolve(args[1])).split(args[0])
            if fn == "Fn::Select":
                return self.resolve(args[1])[int(self.resolve(args[0]))]
            if fn == "Fn::GetAZs":
                return [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NO_VALUE}

    def _sub_value(self, name: str, variables: Mapping[str, Any]) -> str:
        if name in variables:
            return str(variables[name])
        if "." in name and name.split(".", 1)[0] in self.cfn["Resources"]:
            logical_id, attribute = name.split(".", 1)
            return self.attribute(logical_id, attribute)
        value = self.ref(name)
        return ",".join(value) if isinstance(value, list) else str(value)

    # ---- reading it ----------------------------------------------------------------------------

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == kind}

    def properties(self, logical_id: str) -> dict[str, Any]:
        return dict(self.resources[logical_id].get("Properties") or {})

    @cached_property
    def functions(self) -> dict[str, dict[str, Any]]:
        """Logical id -> properties of each Lambda function (SAM's functions, transformed)."""
        return {lid: r["Properties"] for lid, r in self.of_type("AWS::Lambda::Function").items()}

    def role_of(self, function: str) -> Policy:
        role_arn = self.functions[function]["Role"]
        (role_id,) = [lid for lid in self.of_type("AWS::IAM::Role") if self.attribute(lid, "Arn") == role_arn]
        return self.policy(role_id)

    def policy(self, role_id: str) -> Policy:
        props = self.properties(role_id)
        statements = [
            statement
            for policy in props.get("Policies", [])
            for statement in _as_list(policy["PolicyDocument"]["Statement"])
        ]
        return Policy(role_id, statements, tuple(props.get("ManagedPolicyArns", [])))

    def roles(self) -> Iterator[tuple[str, Policy]]:
        for role_id in self.of_type("AWS::IAM::Role"):
            yield role_id, self.policy(role_id)


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, list[str]]) -> bool:
    from etcdops_local.aws.iampolicy import condition_holds

    return all(
        condition_holds(operator, key, [str(v) for v in _as_list(wanted)], context)
        for operator, keys in conditions.items()
        for key, wanted in keys.items()
    )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(pattern: str, value: str, *, case: bool) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)  # '*' any run, '?' one character, as IAM


@dataclass(frozen=True)
class Policy:
    """The inline statements of one role (the AWS-managed policies are listed, not expanded)."""

    role: str
    statements: list[dict[str, Any]]
    managed: tuple[str, ...]

    def allowing(
        self, action: str, resource: str, context: Mapping[str, list[str]] | None = None
    ) -> list[dict[str, Any]]:
        """The Allow statements whose Action and Resource match; with a request ``context`` (condition key
        -> values, e.g. the resource's tags) only those whose Conditions hold in it, else Conditions are not
        evaluated."""
        return [
            s
            for s in self.statements
            if s.get("Effect") == "Allow"
            and any(_matches(a, action, case=False) for a in _as_list(s.get("Action", [])))
            and any(_matches(r, resource, case=True) for r in _as_list(s.get("Resource", [])))
            and (context is None or _conditions_hold(s.get("Condition") or {}, context))
        ]

    def allows(self, action: str, resource: str, context: Mapping[str, list[str]] | None = None) -> bool:
        return bool(self.allowing(action, resource, context))

    def actions(self) -> set[str]:
        return {a for s in self.statements if s.get("Effect") == "Allow" for a in _as_list(s.get("Action", []))}
