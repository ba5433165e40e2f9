"""EC2 events in a fleet: HealthCheck maps the instance to its registered cluster by its
``etcdops:cluster`` tag and runs that cluster's round only; an instance of no cluster of this
deployment is skipped with one log line, before any TLS secret or etcd is touched."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto_ec2 import emulated_account, register_host_image

from etcdops.adapters.healthmetrics import RecordingMetrics
from etcdops.adapters.registry import ClusterConfigs, ClusterRegistry
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.healthcheck import Trigger, TriggerKind
from etcdops.entrypoints.health_check import HealthAwsClients, health_job
from etcdops.entrypoints.health_triggers import route_instance_event
from etcdops.entrypoints.settings import HealthSettings

REGION = "eu-west-1"
DEFAULT = "/etcdops/cluster/config"


def document(name: str, **more: Any) -> str:
    return json.dumps({"name": name, "endpoints": ["http://10.0.0.1:2379"], "plaintext": True, **more})


@dataclass
class Account:
    ssm: Any
    ec2: Any
    image: str

    def instance(self, **tags: str) -> str:
        spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
        launched = self.ec2.run_instances(ImageId=self.image, MinCount=1, MaxCount=1, TagSpecifications=spec)
        return str(launched["Instances"][0]["InstanceId"])

    def configs(self) -> ClusterConfigs:
        return ClusterConfigs(self.ssm, DEFAULT, "prod")


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    emulated_account(monkeypatch, REGION)
    with mock_aws():
        ssm, ec2 = boto3.client("ssm", region_name=REGION), boto3.client("ec2", region_name=REGION)
        yield Account(ssm, ec2, register_host_image(ec2))


def stopped(instance: str) -> Trigger:
    return Trigger(
        TriggerKind.EC2_STATE, f"EC2 reports instance {instance} stopped", instance_id=instance, instance_failed=True
    )


def test_an_instance_is_routed_to_the_registered_cluster_its_tag_names(account: Account) -> None:
    static = "i-0123456789abcdef0"
    account.ssm.put_parameter(
        Name=DEFAULT, Value=document("prod", health={"member_instances": {"m1": static}}), Type="String"
    )
    ClusterRegistry(account.ssm).add(document("c2"), "c2.json")
    c2_host = account.instance(**{"etcdops:cluster": "c2", "etcdops:member": "m3"})
    prod_host = account.instance(**{"etcdops:cluster": "prod"})
    configs = account.configs()

    assert route_instance_event(stopped(c2_host), configs, account.ec2).cluster == "c2"
    assert route_instance_event(stopped(prod_host), configs, account.ec2).cluster == "prod"
    # not tagged, but the default cluster's configuration lists it: the default cluster's round
    assert route_instance_event(stopped(static), configs, account.ec2).cluster == "prod"

    for instance, why in (
        (account.instance(**{"etcdops:cluster": "c2-drill"}), "its etcdops:cluster tag is c2-drill"),  # a scratch host
        (account.instance(**{"etcdops:cluster": "staging"}), "its etcdops:cluster tag is staging"),  # not registered
        (account.instance(Name="web"), "its etcdops:cluster tag is missing"),
        ("i-0fedcba9876543210", "EC2 knows no such instance"),
    ):
        routed = route_instance_event(stopped(instance), configs, account.ec2)
        assert routed.cluster is None
        assert routed.ignore == (
            f"EC2 reports instance {instance} stopped: not a member of any cluster this deployment watches ({why})"
        )


def test_health_check_runs_only_the_instances_cluster_and_skips_a_stranger_cheaply(
    account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    account.ssm.put_parameter(Name=DEFAULT, Value=document("prod"), Type="String")
    ClusterRegistry(account.ssm).add(document("c2"), "c2.json")
    settings = HealthSettings.from_env({"CLUSTER_CONFIG_PARAMETER": DEFAULT, "TABLE_NAME": "t", "CLUSTER_NAME": "prod"})
    state = InMemoryStateStore()

    def run(instance: str, secrets: Any = None) -> dict[str, Any]:
        clients = HealthAwsClients(ssm=account.ssm, secrets=secrets, s3=None, ec2=account.ec2, stepfunctions=None)
        return health_job(settings, clients, RecordingMetrics(), None, state, stopped(instance))

    # a host of c2 without a member tag: c2's round runs (and finds it is no member), prod's does not
    c2_host = account.instance(**{"etcdops:cluster": "c2"})
    result = run(c2_host)
    assert result["cluster"] == "c2"
    assert result["skipped"].endswith(
        "the instance is not a member of cluster c2 "
        "(not in health.member_instances, no etcdops:cluster=c2 and etcdops:member tags)"
    )

    # another deployment's host: no configuration of a cluster, no secret, no etcd; one log line
    stranger = account.instance(**{"etcdops:cluster": "staging"})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="etcdops"):
        result = run(stranger, secrets=object())  # a secrets client that is never called
    assert result == {
        "cluster": None,
        "trigger": {"kind": "ec2-state-change", "description": f"EC2 reports instance {stranger} stopped"},
        "skipped": f"EC2 reports instance {stranger} stopped: not a member of any cluster this deployment watches "
        "(its etcdops:cluster tag is staging)",
        "decision": None,
        "actions": [],
    }
    assert [r.getMessage() for r in caplog.records] == [f"skipped: {result['skipped']}"]
