"""The cluster registry in SSM, each invocation's configurations, and the HealthCheck fan-out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from etcdops.adapters.awserrors import AwsUnavailableError
from etcdops.adapters.fleet_state import InMemoryFleetStore
from etcdops.adapters.registry import ClusterConfigs, ClusterRegistry
from etcdops.domain.errors import ConfigError, InvalidEventError, NotFoundError, UsageError
from etcdops.entrypoints.events import HealthCheckEvent, parse_event
from etcdops.entrypoints.health_check import fan_out
from etcdops.entrypoints.health_triggers import trigger_from_event
from etcdops.entrypoints.jobs import AwsClients, with_fleet
from etcdops.entrypoints.settings import JobSettings

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
DEFAULT = "/etcdops/cluster/config"


def document(name: str, endpoint: str = "http://10.0.0.1:2379") -> str:
    return json.dumps({"name": name, "endpoints": [endpoint], "plaintext": True})


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("ssm", region_name="us-east-1")
        client.put_parameter(Name=DEFAULT, Value=document("prod"), Type="SecureString")
        yield client


class Counting:
    """An SSM client that counts GetParameter calls."""

    def __init__(self, client: Any) -> None:
        self.client, self.reads = client, 0

    def get_parameter(self, **kwargs: Any) -> Any:
        self.reads += 1
        return self.client.get_parameter(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_clusters_are_added_listed_shown_and_removed(ssm: Any) -> None:
    registry = ClusterRegistry(ssm)
    assert registry.names() == []
    registry.add(document("c2"), "c2.json")
    registry.add(document("c1", "http://10.0.0.2:2379"), "c1.json")
    assert registry.names() == ["c1", "c2"]
    assert registry.load("c1").endpoints == ["http://10.0.0.2:2379"]
    registry.remove("c2")
    assert registry.names() == ["c1"]
    with pytest.raises(NotFoundError, match=r"^cluster c2 is not registered \(etcdops cluster list"):
        registry.load("c2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"name": "c1", "endpoints": ["nope"]}', "c1.json: endpoints: [0] 'nope' is not an http(s)://host:port URL"),
        ('{"name": "Bad_Name"}', "c1.json: name: must be 1-40 lowercase letters"),
    ],
)
def test_a_bad_document_is_refused_in_one_line_and_nothing_is_registered(ssm: Any, text: str, message: str) -> None:
    registry = ClusterRegistry(ssm)
    with pytest.raises(ConfigError) as refused:
        registry.add(text, "c1.json")
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert registry.names() == []


def test_a_name_registered_already_is_refused_and_kept_as_it_was(ssm: Any) -> None:
    registry = ClusterRegistry(ssm)
    registry.add(document("c1"), "first")
    with pytest.raises(UsageError, match=r"^cluster c1 is registered already \(etcdops cluster remove c1 first\)$"):
        registry.add(document("c1", "http://10.9.9.9:2379"), "second")
    assert registry.load("c1").endpoints == ["http://10.0.0.1:2379"]
    with pytest.raises(NotFoundError, match=r"^cluster c9 is not registered$"):
        registry.remove("c9")
    with pytest.raises(ConfigError, match=r"^cluster name 'A/B': must be 1-40"):
        registry.load("A/B")


def test_an_invocation_loads_each_cluster_once_and_no_cluster_means_the_default_one(ssm: Any) -> None:
    ClusterRegistry(ssm).add(document("c1"), "c1.json")
    counting = Counting(ssm)
    configs = ClusterConfigs(counting, DEFAULT, "prod")
    assert configs.load(None).name == "prod" and configs.load("prod").name == "prod"
    assert configs.load("c1").name == "c1" and configs.load("c1").name == "c1"
    assert counting.reads == 3  # the default once; c1's existence and its document once
    assert configs.parameter_for(None) == DEFAULT and configs.parameter_for("c1") == "/etcdops/clusters/c1"


def test_the_fan_out_invokes_one_round_per_registered_cluster_and_saves_the_fleet(ssm: Any) -> None:
    registry = ClusterRegistry(ssm)
    for name in ("c1", "c2"):
        registry.add(document(name), name)
    store, invoked = InMemoryFleetStore(), []
    names = fan_out(ClusterConfigs(ssm, DEFAULT, "prod"), store, invoked.append, NOW)
    assert names == ["c1", "c2"] and sorted(invoked) == ["c1", "c2"]
    assert store.load_members() == ["c1", "c2", "prod"]


def test_one_invocation_that_fails_does_not_keep_the_others_from_theirs(ssm: Any) -> None:
    registry = ClusterRegistry(ssm)
    for name in ("c1", "c2", "c3"):
        registry.add(document(name), name)
    invoked: list[str] = []

    def invoke(name: str) -> None:
        if name == "c2":
            raise AwsUnavailableError("invoking the health round of cluster c2: throttled")
        invoked.append(name)

    with pytest.raises(AwsUnavailableError, match="c2: throttled"):
        fan_out(ClusterConfigs(ssm, DEFAULT, "prod"), InMemoryFleetStore(), invoke, NOW)
    assert sorted(invoked) == ["c1", "c3"]


def test_without_registered_clusters_nothing_fans_out_and_no_fleet_is_saved(ssm: Any) -> None:
    store, invoked = InMemoryFleetStore(), []
    assert fan_out(ClusterConfigs(ssm, DEFAULT, "prod"), store, invoked.append, NOW) == []
    assert invoked == [] and store.load_members() is None


def scheduled(detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "1",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-12-07T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/health"],
        "detail": detail,
    }


def test_a_scheduled_round_names_its_cluster_from_the_input_and_none_means_the_default() -> None:
    assert trigger_from_event(parse_event(scheduled({"cluster": "c1"}), HealthCheckEvent)).cluster == "c1"
    assert trigger_from_event(parse_event(scheduled({}), HealthCheckEvent)).cluster is None
    with pytest.raises(InvalidEventError, match=r"^HealthCheckEvent: aws.events.detail.cluster: String should match"):
        parse_event(scheduled({"cluster": "Not A Name"}), HealthCheckEvent)


def test_a_scheduled_job_asks_the_same_job_of_every_registered_cluster_then_runs_its_own(ssm: Any) -> None:
    registry = ClusterRegistry(ssm)
    for name in ("c1", "c2"):
        registry.add(document(name), name)
    settings = JobSettings(config_parameter=DEFAULT, cluster_name="prod")
    clients = AwsClients(ssm=ssm, secrets=None, s3=None, kms=None)
    invoked: list[str] = []
    runs: list[str] = []

    result = with_fleet(settings, clients, None, invoked.append, lambda: runs.append("prod") or {"backup_id": "b"})
    assert sorted(invoked) == ["c1", "c2"] and runs == ["prod"] and result["fanned_out"] == ["c1", "c2"]

    # a job for one cluster (the fan-out's own invocation) fans out no further
    assert with_fleet(settings, clients, "c1", invoked.append, lambda: {"backup_id": "c"}) == {"backup_id": "c"}
    assert len(invoked) == 2
