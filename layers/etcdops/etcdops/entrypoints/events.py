"""Parsing Lambda events into typed models, with one named error for anything malformed."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from etcdops.domain.config import describe_validation_error
from etcdops.domain.errors import InvalidEventError

M = TypeVar("M", bound=BaseModel)


def parse_event(event: Any, model: type[M]) -> M:
    if not isinstance(event, dict):
        raise InvalidEventError(f"{model.__name__}: expected a JSON object, got {type(event).__name__}")
    try:
        return parse(event=event, model=model)
    except ValidationError as exc:
        raise InvalidEventError(f"{model.__name__}: {describe_validation_error(exc)}") from None


class ClusterDetail(BaseModel):
    """A scheduled event's ``detail``: the cluster it is for (none: the stack's default cluster,
    ClusterConfigParameter), as a schedule's input or the fan-out (entrypoints.health_check) sets it."""

    model_config = ConfigDict(extra="allow")

    cluster: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")] | None = None


class BackupDetail(ClusterDetail):
    """Backup's optional input besides the cluster: the kind of backup (default: full)."""

    kind: Literal["full", "volume"] = "full"


class BackupEvent(EventBridgeModel):
    detail: BackupDetail


class BackupInput(BaseModel):
    """A schedule's constant input instead of the scheduled event (EventBridge sends ``Input`` as it is):
    the volume-backup schedule's ``{"detail": {"kind": "volume"}}``, and what the fan-out makes of it."""

    model_config = ConfigDict(extra="forbid")

    detail: BackupDetail


def backup_detail(event: Any) -> BackupDetail:
    """Backup's event: an EventBridge event (a schedule's, a rule's) or a schedule's constant input."""
    if isinstance(event, dict) and "source" not in event and "detail" in event:
        return parse_event(event, BackupInput).detail
    return parse_event(event, BackupEvent).detail


class VerifyDetail(ClusterDetail):
    """BackupVerify's optional input: a backup id (default: the newest backup)."""

    backup_id: str | None = None


class VerifyEvent(EventBridgeModel):
    detail: VerifyDetail


# ---- HealthCheck's triggers ---------------------------------------------------------------------------
#
# HealthCheck accepts three kinds of EventBridge event, told apart by ``source``:
#   * the schedule (``aws.events`` / ``aws.scheduler``, detail-type "Scheduled Event");
#   * a CloudWatch alarm state change (``aws.cloudwatch``): one of our alarms (a metric with a
#     ``cluster`` dimension) or an EC2 status-check alarm (``AWS/EC2`` ``StatusCheckFailed*`` with an
#     ``InstanceId`` dimension), which is how an impaired member instance reaches us;
#   * an EC2 instance state change (``aws.ec2``).


class ScheduledEvent(EventBridgeModel):
    source: Literal["aws.events", "aws.scheduler"]
    detail_type: Literal["Scheduled Event"] = Field(alias="detail-type")
    detail: ClusterDetail = ClusterDetail()


class AlarmMetric(BaseModel):
    namespace: str
    name: str
    dimensions: dict[str, str] = {}


class AlarmMetricStat(BaseModel):
    metric: AlarmMetric


class AlarmMetricData(BaseModel):
    """One entry of ``configuration.metrics``: a metric (``metricStat``) or a math ``expression``."""

    id: str
    metricStat: AlarmMetricStat | None = None
    expression: str | None = None


class AlarmConfiguration(BaseModel):
    description: str | None = None
    metrics: list[AlarmMetricData] = []


class AlarmState(BaseModel):
    value: Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
    reason: str = ""
    timestamp: str | None = None


class AlarmDetail(BaseModel):
    alarmName: str = Field(min_length=1)
    state: AlarmState
    previousState: AlarmState | None = None
    configuration: AlarmConfiguration = AlarmConfiguration()

    @property
    def metrics(self) -> list[AlarmMetric]:
        return [m.metricStat.metric for m in self.configuration.metrics if m.metricStat is not None]


class AlarmStateChangeEvent(EventBridgeModel):
    source: Literal["aws.cloudwatch"]
    detail_type: Literal["CloudWatch Alarm State Change"] = Field(alias="detail-type")
    detail: AlarmDetail


Ec2InstanceState = Literal["pending", "running", "stopping", "stopped", "shutting-down", "terminated"]


class Ec2StateChangeDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    instance_id: str = Field(alias="instance-id", pattern=r"^i-[0-9a-f]{8,17}$")
    state: Ec2InstanceState


class Ec2StateChangeEvent(EventBridgeModel):
    source: Literal["aws.ec2"]
    detail_type: Literal["EC2 Instance State-change Notification"] = Field(alias="detail-type")
    detail: Ec2StateChangeDetail


HealthCheckEventKind = Annotated[
    ScheduledEvent | AlarmStateChangeEvent | Ec2StateChangeEvent, Field(discriminator="source")
]


class HealthCheckEvent(RootModel[HealthCheckEventKind]):
    """Any event HealthCheck accepts; ``.root`` is the parsed event of its kind."""


# ---- FailureNotice's input: Lambda's record of an asynchronous invocation that failed for good --------
#
# Lambda sends it to the OnFailure destination of Backup and BackupVerify (version "1.0"): which
# function, why it gave up (``condition``: RetriesExhausted, EventAgeExceeded), how often it ran, the
# event, and the function's error document (``errorMessage``, ``errorType``, ``stackTrace``; only a
# message for a timeout; nothing when the function never ran).


class InvocationRequestContext(BaseModel):
    requestId: str
    functionArn: str = Field(pattern=r"^arn:[^:]+:lambda:[^:]*:[^:]*:function:[^:]+(:[^:]+)?$")
    condition: str = Field(min_length=1)
    approximateInvokeCount: int = Field(ge=0)


class FunctionError(BaseModel):
    errorType: str | None = None
    errorMessage: str | None = None


class FailedInvocationRecord(BaseModel):
    version: str
    timestamp: datetime
    requestContext: InvocationRequestContext
    requestPayload: Any = None
    responseContext: dict[str, Any] | None = None
    responsePayload: FunctionError | str | None = None

    @property
    def error(self) -> FunctionError:
        payload = self.responsePayload
        return FunctionError(errorMessage=payload) if isinstance(payload, str) else payload or FunctionError()
