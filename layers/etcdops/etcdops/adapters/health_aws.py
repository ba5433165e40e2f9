"""The AWS side of a health round: which member an EC2 instance is (its tags), and the ReplaceMember
executions in Step Functions, started by name and read back, with a recording double that behaves the
same for the local health loop and the tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error, aws_error_code
from etcdops.domain.config import ClusterConfig
from etcdops.domain.repair import AttemptStatus

__all__ = [
    "CLUSTER_TAG",
    "MEMBER_TAG",
    "ExecutionState",
    "InstanceDirectory",
    "RecordingReplaceStarter",
    "ReplaceStarter",
    "StartOutcome",
    "StepFunctionsReplaceStarter",
    "instance_tags",
]

CLUSTER_TAG = "etcdops:cluster"
MEMBER_TAG = "etcdops:member"


# ---- EC2 instances of members -------------------------------------------------------------------------


class InstanceDirectory:
    """Which member an EC2 instance is: ``health.member_instances`` first, then the instance's
    tags (``etcdops:cluster`` = the cluster's name, or the discovery tag; ``etcdops:member`` = the
    member's name) read with ``ec2.describe_instances`` when an EC2 client is given."""

    def __init__(self, config: ClusterConfig, ec2: Any = None) -> None:
        self.config = config
        self.ec2 = ec2
        self._static = {instance: name for name, instance in config.health.member_instances.items()}

    def member_of(self, instance_id: str) -> str | None:
        if instance_id in self._static:
            return self._static[instance_id]
        if self.ec2 is None:
            return None
        tags = instance_tags(self.ec2, instance_id)
        if tags is None:
            return None
        return (tags.get(MEMBER_TAG) or None) if self.tags_are_ours(tags) else None

    def tags_are_ours(self, tags: Mapping[str, str]) -> bool:
        """Whether an instance with ``tags`` belongs to this cluster (its name tag, or the discovery tag)."""
        discovery = self.config.discovery
        if discovery is not None and tags.get(discovery.tag_key) == discovery.tag_value:
            return True
        return tags.get(CLUSTER_TAG) == self.config.name


def instance_tags(ec2: Any, instance_id: str) -> dict[str, str] | None:
    """The tags of EC2 instance ``instance_id`` (one DescribeInstances); None when EC2 knows no such instance."""
    try:
        response = ec2.describe_instances(InstanceIds=[instance_id])
    except ClientError as exc:
        if aws_error_code(exc).startswith("InvalidInstanceID"):
            return None
        raise aws_error(f"describing instance {instance_id}", exc) from exc
    except BotoCoreError as exc:
        raise aws_error(f"describing instance {instance_id}", exc) from exc
    instances = [i for reservation in response.get("Reservations", []) for i in reservation.get("Instances", [])]
    if not instances:
        return None
    return {tag["Key"]: tag["Value"] for instance in instances for tag in instance.get("Tags", [])}


# ---- starting ReplaceMember ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StartOutcome:
    name: str
    started: bool  # False: an execution of this name exists already
    execution_arn: str | None = None


@dataclass(frozen=True)
class ExecutionState:
    """A ReplaceMember execution as Step Functions reports it."""

    status: AttemptStatus
    ended_at: datetime | None = None
    error: str | None = None
    cause: str | None = None


class ReplaceStarter(Protocol):
    def start(self, name: str, document: Mapping[str, Any]) -> StartOutcome: ...

    def describe(self, name: str) -> ExecutionState | None:
        """The execution named ``name`` (None: there is none)."""
        ...


_SFN_STATUS = {
    "RUNNING": AttemptStatus.RUNNING,
    "PENDING_REDRIVE": AttemptStatus.RUNNING,
    "SUCCEEDED": AttemptStatus.SUCCEEDED,
    "FAILED": AttemptStatus.FAILED,
    "TIMED_OUT": AttemptStatus.TIMED_OUT,
    "ABORTED": AttemptStatus.ABORTED,
}


class StepFunctionsReplaceStarter:
    """Starts the ReplaceMember state machine; the execution name makes duplicates harmless."""

    def __init__(self, stepfunctions: Any, state_machine_arn: str) -> None:
        self.sfn = stepfunctions
        self.state_machine_arn = state_machine_arn

    def _execution_arn(self, name: str) -> str:
        return f"{self.state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"

    def describe(self, name: str) -> ExecutionState | None:
        """DescribeExecution: the real status of an attempt (one that crashed never ran its failure step)."""
        try:
            found = self.sfn.describe_execution(executionArn=self._execution_arn(name))
        except ClientError as exc:
            if aws_error_code(exc) == "ExecutionDoesNotExist":
                return None
            raise aws_error(f"describing execution {name}", exc) from exc
        except BotoCoreError as exc:
            raise aws_error(f"describing execution {name}", exc) from exc
        status = _SFN_STATUS.get(str(found.get("status")), AttemptStatus.FAILED)
        stopped = found.get("stopDate")
        ended = stopped if isinstance(stopped, datetime) else None
        return ExecutionState(status, ended, found.get("error"), found.get("cause"))

    def start(self, name: str, document: Mapping[str, Any]) -> StartOutcome:
        try:
            response = self.sfn.start_execution(
                stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(dict(document), sort_keys=True)
            )
        except ClientError as exc:
            if aws_error_code(exc) == "ExecutionAlreadyExists":
                return StartOutcome(name, False, self._execution_arn(name))
            raise aws_error(f"starting {name} of {self.state_machine_arn}", exc) from exc
        except BotoCoreError as exc:
            raise aws_error(f"starting {name} of {self.state_machine_arn}", exc) from exc
        return StartOutcome(name, True, response["executionArn"])


class RecordingReplaceStarter:
    """Remembers what it was asked to start, once per name (the local health loop, tests); what
    happened to an execution is what ``outcomes`` says (RUNNING once started, by default)."""

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, ExecutionState] = {}
        self._lock = threading.Lock()

    def start(self, name: str, document: Mapping[str, Any]) -> StartOutcome:
        with self._lock:
            if name in self.started:
                # as Step Functions: the same input while it runs is answered as its own start was
                state = self.outcomes.get(name, ExecutionState(AttemptStatus.RUNNING))
                same = self.started[name] == dict(document)
                return StartOutcome(name, same and state.status is AttemptStatus.RUNNING)
            self.started[name] = dict(document)
            return StartOutcome(name, True)

    def describe(self, name: str) -> ExecutionState | None:
        if name not in self.started:
            return None
        return self.outcomes.get(name, ExecutionState(AttemptStatus.RUNNING))
