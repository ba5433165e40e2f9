"""A registered cluster's alarms and dashboard: the default cluster's, made for it at registration.

There is one definition: the deployed stack's own template. Every ``AWS::CloudWatch::Alarm`` whose
dimension is ``cluster = !Ref ClusterName`` and every dashboard named from ``ClusterName`` is resolved
again with the registered cluster's name, against the stack's parameter values (the thresholds) and
resources (the notification topic), so a registered cluster has the same alarms, thresholds and widgets
as the default one, and a stack update that changes an alarm changes what the next registration makes.

Names: the default cluster's alarm ``<stack>-etcd-no-leader`` is ``<stack>-etcd-<cluster>-no-leader``
for a registered cluster (the ``<stack>-etcd-`` prefix is what routes an alarm to a health round, and
the alarm's ``cluster`` dimension names the round's cluster); its dashboard is ``<stack>-etcd-<cluster>``
as the default's is. Registration (:func:`register_cluster`) puts the alarms and the dashboard first and
then the registry entry; removal deletes them first and then the entry, so a run that stops halfway is
finished by running the command again. The cluster's backups, state and history are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error
from etcdops.adapters.fleet_tags import read_fleet_access
from etcdops.adapters.registry import ClusterRegistry
from etcdops.domain.config import ClusterConfig, check_cluster_name, loads_config
from etcdops.domain.errors import ConfigError, NotFoundError, UsageError
from etcdops.domain.fleet_tags import StackScope, refusal

__all__ = ["ClusterWatch", "StackView", "cluster_watch", "register_cluster", "stack_view", "unregister_cluster"]

_SUB_NAME = re.compile(r"\$\{([^}!][^}]*)\}")
_PROBE = "etcdops-cluster-probe"  # a ClusterName no template uses: tells what depends on ClusterName


@dataclass(frozen=True)
class StackView:
    """What resolving the template needs of a deployed (or local) stack."""

    name: str
    partition: str
    region: str
    account: str
    parameters: Mapping[str, str]
    resources: Mapping[str, str]  # logical id -> physical id (an SNS topic's is its ARN)
    template: Mapping[str, Any]

    def names(self, cluster: str) -> dict[str, str]:
        pseudo = {"AWS::StackName": self.name, "AWS::Region": self.region, "AWS::Partition": self.partition,
                  "AWS::AccountId": self.account, "AWS::URLSuffix": "amazonaws.com"}  # fmt: skip
        return {**pseudo, **self.resources, **self.parameters, "ClusterName": cluster}

    @property
    def scope(self) -> StackScope:
        """Whose ``etcdops:fleet`` tag a registered cluster's resources carry, and where the grants apply."""
        return StackScope(self.name, self.region, self.account, self.partition)


@dataclass(frozen=True)
class ClusterWatch:
    """A cluster's alarms (``put_metric_alarm`` arguments) and dashboards (name -> body)."""

    cluster: str
    alarms: list[dict[str, Any]] = field(default_factory=list)
    dashboards: dict[str, str] = field(default_factory=dict)

    @property
    def alarm_names(self) -> list[str]:
        return [alarm["AlarmName"] for alarm in self.alarms]


def resolve(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with ``Ref`` and ``Fn::Sub`` resolved from ``names``; any other intrinsic is refused."""
    if isinstance(value, list):
        return [resolve(item, names) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return _lookup(str(argument), names)
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
            scope = {**names, **{k: str(resolve(v, names)) for k, v in variables.items()}}
            return _SUB_NAME.sub(lambda m: _lookup(m.group(1), scope), text)
        if function.startswith("Fn::"):
            raise ConfigError(f"the stack's template: {function} in an alarm or dashboard cannot be resolved here")
    return {key: resolve(item, names) for key, item in value.items()}


def _lookup(name: str, names: Mapping[str, str]) -> str:
    if name not in names:
        raise ConfigError(f"the stack's template names {name}, which the stack has no value for")
    return names[name]


def cluster_watch(stack: StackView, cluster: str) -> ClusterWatch:
    """The alarms and dashboards of registered ``cluster``: each of the template's that depends on
    ClusterName, resolved for it."""
    from etcdops_local.aws.build import api_types

    check_cluster_name(cluster)
    names, probe = stack.names(cluster), stack.names(_PROBE)
    default_prefix, prefix = f"{stack.name}-etcd-", f"{stack.name}-etcd-{cluster}-"
    watch = ClusterWatch(cluster)
    for resource in (stack.template.get("Resources") or {}).values():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::CloudWatch::Alarm":
            if resolve(props.get("Dimensions"), probe) != [{"Name": "cluster", "Value": _PROBE}]:
                continue  # a stack-wide alarm (HealthCheck failing): one for the fleet
            alarm = api_types(resolve(props, names))
            default_name = str(alarm["AlarmName"])
            if not default_name.startswith(default_prefix):
                raise ConfigError(f"the stack's alarm {default_name} is not named {default_prefix}...")
            alarm["AlarmName"] = prefix + default_name.removeprefix(default_prefix)
            alarm["AlarmDescription"] = f"cluster {cluster}: {alarm.get('AlarmDescription', '')}".rstrip()
            watch.alarms.append(alarm)
        elif resource.get("Type") == "AWS::CloudWatch::Dashboard":
            if resolve(props.get("DashboardName"), probe) == resolve(props.get("DashboardName"), names):
                continue  # not one per cluster
            body = str(resolve(props["DashboardBody"], names))
            # the alarm widget names the default cluster's alarms: this cluster's instead (not the stack-wide ones)
            body = body.replace(f":alarm:{default_prefix}", f":alarm:{prefix}")
            watch.dashboards[str(resolve(props["DashboardName"], names))] = body
    return watch


def stack_view(session: Any, stack_name: str) -> StackView:
    """The stack's parameters, resources and its template as deployed (CloudFormation's copy)."""
    from samtranslator.yaml_helper import yaml_parse

    cfn = session.client("cloudformation")
    try:
        described = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        resources: dict[str, str] = {}
        for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name):
            for summary in page["StackResourceSummaries"]:
                if summary.get("PhysicalResourceId"):
                    resources[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
        body = cfn.get_template(StackName=stack_name)["TemplateBody"]
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(f"reading stack {stack_name}", exc) from exc
    template = body if isinstance(body, dict) else yaml_parse(body)
    _, partition, _, region, account, _ = described["StackId"].split(":", 5)
    parameters = {p["ParameterKey"]: p.get("ResolvedValue") or p.get("ParameterValue", "")
                  for p in described.get("Parameters", [])}  # fmt: skip
    return StackView(stack_name, partition, region, account, parameters, resources, template)


def put_watch(cloudwatch: Any, watch: ClusterWatch) -> None:
    """Create (or make equal again) the cluster's alarms and dashboards."""
    try:
        for alarm in watch.alarms:
            cloudwatch.put_metric_alarm(**alarm)
        for name, body in watch.dashboards.items():
            answer = cloudwatch.put_dashboard(DashboardName=name, DashboardBody=body)
            refused = answer.get("DashboardValidationMessages")
            if refused:
                raise ConfigError(f"dashboard {name}: CloudWatch refused it: {refused[0].get('Message', refused[0])}")
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(f"creating the alarms and dashboard of cluster {watch.cluster}", exc) from exc


def delete_watch(cloudwatch: Any, watch: ClusterWatch) -> None:
    """Delete those of the cluster's alarms and dashboards that exist (by their exact names: a prefix
    would take cluster ``a-b``'s with ``a``'s)."""
    names = watch.alarm_names
    try:
        for start in range(0, len(names), 100):  # DescribeAlarms and DeleteAlarms take 100 names at most
            batch = names[start : start + 100]
            found = [a["AlarmName"] for a in cloudwatch.describe_alarms(AlarmNames=batch)["MetricAlarms"]]
            if found:
                cloudwatch.delete_alarms(AlarmNames=found)
        for name in watch.dashboards:
            listed = cloudwatch.list_dashboards(DashboardNamePrefix=name).get("DashboardEntries", [])
            if any(entry["DashboardName"] == name for entry in listed):
                cloudwatch.delete_dashboards(DashboardNames=[name])
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(f"deleting the alarms and dashboard of cluster {watch.cluster}", exc) from exc


def register_cluster(
    registry: ClusterRegistry, session: Any, stack: StackView, text: str, source: str, default: str | None
) -> tuple[ClusterConfig, ClusterWatch]:
    """Validate ``text``, check that the stack can reach the cluster's AWS resources (their
    ``etcdops:fleet`` tag), create the cluster's alarms and dashboard, then register it (nothing is
    written for a bad document, the default cluster's name, a name registered already or an untagged
    resource)."""
    config = loads_config(text, source)
    if config.name == default:
        raise UsageError(f"cluster {default} is the stack's default cluster (ClusterConfigParameter) already")
    if config.name in registry.names():
        raise UsageError(f"cluster {config.name} is registered already (etcdops cluster remove {config.name} first)")
    refused = refusal(config.name, read_fleet_access(session, config, stack.scope), stack.scope)
    if refused:
        raise ConfigError(f"nothing registered: {refused}")
    watch = cluster_watch(stack, config.name)
    put_watch(session.client("cloudwatch"), watch)
    return registry.add(text, source), watch


def unregister_cluster(registry: ClusterRegistry, session: Any, stack: StackView, name: str) -> ClusterWatch:
    """Delete the cluster's alarms and dashboard, then its registry entry; backups and state are kept."""
    if name not in registry.names():
        raise NotFoundError(f"cluster {name} is not registered")
    watch = cluster_watch(stack, name)
    delete_watch(session.client("cloudwatch"), watch)
    registry.remove(name)
    return watch
