"""ScheduledRunbooks: MaintenanceSchedule and RestoreDrillSchedule start their runbook (MaintainCluster,
RestoreDrill) once per cluster of the deployment: the default cluster and every registered one.

Each schedule is an EventBridge rule with a name of the stack's (``<stack>-maintenance``,
``<stack>-restore-drill``) that invokes this function with the plain scheduled event; the rule's name
says which runbook, the event's ``time`` (the firing's, the same on every retry) which interval. Each
cluster's execution is named ``<runbook>-<time>-<cluster>``: a retried invocation starts nothing twice
(Step Functions refuses a second execution of one name, which counts as started), and a cluster removed
from the registry is not listed, so it gets none. The executions start 16 at a time (as the other
fan-outs invoke); every cluster is tried and the first error fails the invocation after the rest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error, aws_error_code
from etcdops.adapters.registry import ClusterRegistry
from etcdops.domain.errors import ConfigError
from etcdops.entrypoints.fanout import invoke_each
from etcdops.entrypoints.settings import ScheduledRunbookSettings

__all__ = ["execution_name", "runbook_of_rule", "start_scheduled_runbooks"]

log = logging.getLogger("etcdops.entrypoints.scheduled_runbooks")


@dataclass(frozen=True)
class Runbook:
    kind: str
    state_machine_arn: str
    extra_input: dict[str, Any]


def runbook_of_rule(settings: ScheduledRunbookSettings, resources: Sequence[str]) -> Runbook:
    """The runbook the rule that sent the scheduled event (its one resource, the rule's ARN) schedules."""
    if len(resources) != 1:
        raise ConfigError(f"a scheduled event names the one rule that sent it; this one names {len(resources)}")
    rule = resources[0].rsplit("/", 1)[-1]
    if rule == settings.maintenance_rule:
        return Runbook("maintain", settings.maintain_state_machine_arn, {"reason": "scheduled maintenance"})
    if rule == settings.restore_drill_rule:
        return Runbook("drill", settings.restore_drill_state_machine_arn, {})
    raise ConfigError(
        f"scheduled event of rule {rule}: not {settings.maintenance_rule} or {settings.restore_drill_rule}, "
        "the runbook schedules of this stack"
    )


def execution_name(kind: str, at: datetime, cluster: str) -> str:
    """``<kind>-<yyyymmddThhmm>-<cluster>``: one per runbook, firing and cluster (at most 63 characters: a
    cluster name has at most 40, Step Functions takes 80)."""
    return f"{kind}-{at.astimezone(UTC):%Y%m%dT%H%M}-{cluster}"


def start_scheduled_runbooks(
    settings: ScheduledRunbookSettings, ssm: Any, sfn: Any, resources: Sequence[str], at: datetime
) -> dict[str, Any]:
    """Start the runbook of the rule that fired (``resources``) for the default cluster and every
    registered one, named for the firing ``at``."""
    runbook = runbook_of_rule(settings, resources)
    default = [settings.cluster_name] if settings.cluster_name else []
    clusters = default + [n for n in ClusterRegistry(ssm, settings.registry_path).names() if n not in default]
    started: dict[str, str] = {}

    def start(cluster: str) -> None:
        name = execution_name(runbook.kind, at, cluster)
        document = json.dumps({"cluster": cluster, **runbook.extra_input})
        try:
            sfn.start_execution(stateMachineArn=runbook.state_machine_arn, name=name, input=document)
        except ClientError as exc:
            if aws_error_code(exc) != "ExecutionAlreadyExists":
                raise aws_error(f"starting {runbook.kind} of cluster {cluster}", exc) from exc
            log.info("%s: started already by an earlier try of this firing", name)
        except BotoCoreError as exc:
            raise aws_error(f"starting {runbook.kind} of cluster {cluster}", exc) from exc
        started[cluster] = name

    invoke_each(clusters, start)
    return {"runbook": runbook.kind, "time": at.astimezone(UTC).isoformat(), "executions": started}
