"""What started a HealthCheck round: the entry point translates its Lambda event into a :class:`Trigger`.

The health round (``etcdops.app.healthcheck``) takes a ``Trigger`` and never sees an event. A
schedule is a plain round; an EC2 state change of a member instance, or a status-check alarm of
one, names the instance (a failure unless the state or the alarm says otherwise); one of our
alarms names its cluster by the metrics' ``cluster`` dimension. What is not about a member or a
cluster is kept with the reason it is ignored. In a fleet, :func:`route_instance_event` names the
cluster an EC2 event's instance belongs to by its ``etcdops:cluster`` tag.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from etcdops.adapters.aws import ClusterNotConfiguredError
from etcdops.adapters.health_aws import CLUSTER_TAG, InstanceDirectory, instance_tags
from etcdops.adapters.registry import ClusterConfigs
from etcdops.app.healthcheck import Trigger, TriggerKind
from etcdops.domain.errors import NotFoundError
from etcdops.entrypoints.events import AlarmStateChangeEvent, Ec2StateChangeEvent, HealthCheckEvent, ScheduledEvent

EC2_FAILED_STATES = frozenset({"stopping", "stopped", "shutting-down", "terminated"})
STATUS_CHECK_METRICS = frozenset(
    {"StatusCheckFailed", "StatusCheckFailed_Instance", "StatusCheckFailed_System", "StatusCheckFailed_AttachedEBS"}
)


def trigger_from_event(event: HealthCheckEvent) -> Trigger:
    """What started this HealthCheck round, from its (already parsed) event."""
    parsed = event.root
    if isinstance(parsed, ScheduledEvent):
        rule = parsed.resources[0].rsplit("/", 1)[-1] if parsed.resources else "schedule"
        cluster = parsed.detail.cluster
        description = f"scheduled by {rule} at {parsed.time.isoformat()}" + (f" for {cluster}" if cluster else "")
        return Trigger(TriggerKind.SCHEDULE, description, cluster=cluster)
    if isinstance(parsed, Ec2StateChangeEvent):
        instance, state = parsed.detail.instance_id, parsed.detail.state
        description = f"EC2 reports instance {instance} {state}"
        if state not in EC2_FAILED_STATES:
            return Trigger(
                TriggerKind.EC2_STATE, description, instance_id=instance, ignore=f"{description}: not a failure"
            )
        return Trigger(TriggerKind.EC2_STATE, description, instance_id=instance, instance_failed=True)
    return _from_alarm(parsed)


def _from_alarm(event: AlarmStateChangeEvent) -> Trigger:
    detail = event.detail
    state = detail.state.value
    description = f"alarm {detail.alarmName} is {state}"
    checks = [
        m
        for m in detail.metrics
        if m.namespace == "AWS/EC2" and m.name in STATUS_CHECK_METRICS and m.dimensions.get("InstanceId")
    ]
    if checks:
        instance = checks[0].dimensions["InstanceId"]
        description = f"EC2 status check alarm {detail.alarmName} of instance {instance} is {state}"
        if state != "ALARM":
            return Trigger(
                TriggerKind.EC2_STATUS, description, instance_id=instance, ignore=f"{description}: not impaired"
            )
        return Trigger(TriggerKind.EC2_STATUS, description, instance_id=instance, instance_failed=True)
    clusters = sorted({m.dimensions["cluster"] for m in detail.metrics if m.dimensions.get("cluster")})
    if not clusters:
        return Trigger(
            TriggerKind.ALARM,
            description,
            ignore=f"{description}: its metrics have no 'cluster' dimension and it is not an EC2 status check",
        )
    if len(clusters) > 1:
        return Trigger(TriggerKind.ALARM, description, ignore=f"{description}: it names several clusters {clusters}")
    return Trigger(TriggerKind.ALARM, description, cluster=clusters[0])


def route_instance_event(trigger: Trigger, configs: ClusterConfigs, ec2: Any) -> Trigger:
    """The trigger of an EC2 event (state change, status check) with the cluster its instance belongs
    to: the registered cluster (or the default one) its ``etcdops:cluster`` tag names, else the default
    cluster when its configuration lists the instance (``health.member_instances`` or its discovery tag).
    An instance of no cluster of this deployment (another deployment's, a drill's scratch host, an
    untagged one) gets ``ignore``: the round is skipped with one log line, after one DescribeInstances
    and at most two configuration reads, without TLS or etcd."""
    instance = trigger.instance_id
    if instance is None or trigger.cluster is not None or trigger.ignore is not None:
        return trigger
    tags = instance_tags(ec2, instance)
    named = (tags or {}).get(CLUSTER_TAG)
    if named is not None:
        try:
            configs.load(named)
            return dataclasses.replace(trigger, cluster=named)
        except (NotFoundError, ClusterNotConfiguredError):
            pass  # not a cluster of this deployment; the default's own mapping may still claim it
    try:
        default = configs.load(None)
    except ClusterNotConfiguredError:
        if not configs.registry.names():
            return trigger  # a fresh stack: its round says "not configured yet", as for every trigger
        default = None
    if default is not None and (
        instance in default.health.member_instances.values()
        or (tags is not None and InstanceDirectory(default).tags_are_ours(tags))
    ):
        return dataclasses.replace(trigger, cluster=default.name)
    why = "EC2 knows no such instance" if tags is None else f"its {CLUSTER_TAG} tag is {named or 'missing'}"
    return dataclasses.replace(
        trigger, ignore=f"{trigger.description}: not a member of any cluster this deployment watches ({why})"
    )
