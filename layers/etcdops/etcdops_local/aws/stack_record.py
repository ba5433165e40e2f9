"""What a built local stack records (``<state_dir>/aws.json``) and how another process reaches it.

:class:`LocalStack` holds the logical id -> physical id of everything :func:`etcdops_local.aws.build.build_stack`
created; the serving process writes it, and :func:`local_boto3_session` / :func:`client` give other
processes a session on its moto server, as the harness's administrator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3

from etcdops.domain.errors import NotFoundError
from etcdops_local.aws.errors import LocalAwsError
from etcdops_local.aws.templates import DUMMY_CREDENTIALS

DEFAULT_REGION = "us-east-1"
DEFAULT_STACK_NAME = "etcdops"
ACCOUNT_ID = "123456789012"  # moto's default account
STATE_FILE = "aws.json"


@dataclass
class LocalStack:
    """A created stack: logical id -> physical id of everything in it, and where to reach it."""

    stack_name: str
    region: str
    account_id: str
    template_path: str
    parameters: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id (function name, state machine ARN, ...)
    types: dict[str, str]  # logical id -> CloudFormation type
    outputs: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)  # logical id -> function name
    function_arns: dict[str, str] = field(default_factory=dict)
    state_machines: dict[str, str] = field(default_factory=dict)  # logical id -> ARN
    alarms: dict[str, str] = field(default_factory=dict)  # logical id -> alarm name
    unhandled: list[str] = field(default_factory=list)  # "LogicalId (Type)" neither moto nor we create
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> why it is left out locally
    endpoint: str | None = None  # the moto server's URL in server mode
    roles: dict[str, str] = field(default_factory=dict)  # function or state machine logical id -> its role ARN
    # function logical id -> its asynchronous invocation settings (AWS::Lambda::EventInvokeConfig):
    # {"MaximumRetryAttempts": n, "OnFailure": the destination function's logical id}
    invoke_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)  # the harness's (administrator's) keys
    notification_queue: str | None = None  # an SQS queue subscribed to the topic (`etcdops notifications`)

    def physical(self, logical_id: str) -> str:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise NotFoundError(f"stack {self.stack_name} has no resource {logical_id}") from None

    def of_type(self, cfn_type: str) -> dict[str, str]:
        return {lid: self.resources[lid] for lid, t in self.types.items() if t == cfn_type and lid in self.resources}

    def _only(self, cfn_type: str) -> str | None:
        found = list(self.of_type(cfn_type).values())
        return found[0] if len(found) == 1 else None

    @property
    def bucket(self) -> str | None:
        """The backup bucket (the template has another one, where restores stage snapshots)."""
        return self.resources.get("BackupBucket") or self._only("AWS::S3::Bucket")

    @property
    def topic_arn(self) -> str | None:
        return self._only("AWS::SNS::Topic")

    @property
    def table(self) -> str | None:
        return self._only("AWS::DynamoDB::Table")

    @property
    def key_id(self) -> str | None:
        """The backup key (the template has another one, for the notification topic)."""
        return self.resources.get("BackupKey") or self._only("AWS::KMS::Key")

    @property
    def key_arn(self) -> str | None:
        key = self.key_id
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{key}" if key else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalStack:
        return cls(**dict(data))

    def save(self, state_dir: Path) -> Path:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.to_json(), "pid": os.getpid()}, indent=2) + "\n")
        tmp.replace(path)
        return path


def load_local_stack(state_dir: Path) -> LocalStack:
    """The stack recorded by the process that runs the local AWS side (``<state_dir>/aws.json``)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        raise NotFoundError(f"no local AWS stack in {state_dir} (run: etcdops local up)")
    data = json.loads(path.read_text())
    data.pop("pid", None)
    return LocalStack.from_json(data)


class LocalSession(boto3.session.Session):
    """A boto3 session whose clients and resources go to the local moto server by default, acting as
    the harness's administrator (the keys the serving process recorded)."""

    def __init__(self, endpoint: str, region: str, credentials: Mapping[str, str] | None = None) -> None:
        super().__init__(region_name=region, **(credentials or DUMMY_CREDENTIALS))
        self.endpoint = endpoint

    def client(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", self.endpoint)
        return super().client(*args, **kwargs)

    def resource(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", self.endpoint)
        return super().resource(*args, **kwargs)


def local_boto3_session(state_dir: Path) -> LocalSession:
    """A session on the local stack's moto server, for a process other than the one running it."""
    stack = load_local_stack(state_dir)
    if not stack.endpoint:
        raise LocalAwsError(f"the local AWS stack in {state_dir} runs in-process only (no server endpoint)")
    return LocalSession(stack.endpoint, stack.region, stack.credentials)


def client(service: str, state_dir: Path) -> Any:
    return local_boto3_session(state_dir).client(service)
