"""HealthCheck's triggers: every sample event parses, malformed ones are refused by name, and each
kind of event becomes the right Trigger (or an explained skip)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from etcdops.app.healthcheck import Trigger, TriggerKind, trigger_skip
from etcdops.domain.config import parse_config
from etcdops.entrypoints.events import HealthCheckEvent, InvalidEventError, parse_event
from etcdops.entrypoints.health_triggers import trigger_from_event

EVENTS = Path(__file__).resolve().parents[2] / "events"
CONFIG = parse_config({"name": "local", "endpoints": ["http://127.0.0.1:2379"], "plaintext": True})


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / f"health_{name}.json").read_text())
    return loaded


def trigger_of(event: dict[str, Any]) -> Trigger:
    return trigger_from_event(parse_event(event, HealthCheckEvent))


def test_the_scheduled_event_runs_a_round() -> None:
    trigger = trigger_of(sample("schedule"))

    assert trigger.kind is TriggerKind.SCHEDULE
    assert "etcdops-HealthCheckFunctionSchedule" in trigger.description
    assert trigger_skip(trigger, CONFIG) is None


def test_an_alarm_of_our_cluster_runs_a_round() -> None:
    trigger = trigger_of(sample("alarm"))

    assert (trigger.kind, trigger.cluster, trigger.instance_id) == (TriggerKind.ALARM, "local", None)
    assert trigger_skip(trigger, CONFIG) is None


def test_an_alarm_of_another_cluster_is_skipped_with_its_reason() -> None:
    event = sample("alarm")
    event["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"] = {"cluster": "prod-us"}

    skip = trigger_skip(trigger_of(event), CONFIG)

    assert skip is not None and "'prod-us'" in skip and "'local'" in skip


def test_an_alarm_without_a_cluster_dimension_is_skipped() -> None:
    event = sample("alarm")
    event["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"] = {
        "namespace": "AWS/Lambda",
        "name": "Errors",
        "dimensions": {"FunctionName": "x"},
    }

    skip = trigger_skip(trigger_of(event), CONFIG)

    assert skip is not None and "no 'cluster' dimension" in skip


def test_an_ec2_state_change_to_stopped_names_a_failed_instance() -> None:
    trigger = trigger_of(sample("ec2_state_change"))

    assert trigger.kind is TriggerKind.EC2_STATE
    assert (trigger.instance_id, trigger.instance_failed) == ("i-0a1b2c3d4e5f60002", True)
    assert trigger_skip(trigger, CONFIG) is None


@pytest.mark.parametrize("state", ["stopping", "stopped", "shutting-down", "terminated"])
def test_every_failed_ec2_state_is_a_failure(state: str) -> None:
    event = sample("ec2_state_change")
    event["detail"]["state"] = state

    assert trigger_of(event).instance_failed


@pytest.mark.parametrize("state", ["pending", "running"])
def test_an_instance_starting_is_not_a_failure(state: str) -> None:
    event = sample("ec2_state_change")
    event["detail"]["state"] = state

    trigger = trigger_of(event)

    assert not trigger.instance_failed
    assert trigger_skip(trigger, CONFIG) == f"EC2 reports instance i-0a1b2c3d4e5f60002 {state}: not a failure"


def test_a_status_check_alarm_names_an_impaired_instance() -> None:
    trigger = trigger_of(sample("ec2_status_check"))

    assert trigger.kind is TriggerKind.EC2_STATUS
    assert (trigger.instance_id, trigger.instance_failed) == ("i-0a1b2c3d4e5f60003", True)


def test_a_status_check_back_to_ok_is_skipped() -> None:
    event = sample("ec2_status_check")
    event["detail"]["state"]["value"] = "OK"

    trigger = trigger_of(event)

    assert not trigger.instance_failed
    skip = trigger_skip(trigger, CONFIG)
    assert skip is not None and skip.endswith("is OK: not impaired")


def _without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    target = changed
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return changed


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], r"^HealthCheckEvent: expected a JSON object, got list$"),
        ({"source": "aws.events"}, r"^HealthCheckEvent: aws\.events\.version: Field required"),
        ({**sample("schedule"), "source": "aws.s3"}, r"^HealthCheckEvent: Input tag 'aws.s3'"),
        ({**sample("schedule"), "detail-type": "Object Created"}, r"aws\.events\.detail-type: Input should be"),
        (_without(sample("alarm"), "detail", "alarmName"), r"aws\.cloudwatch\.detail\.alarmName: Field required"),
        (_without(sample("alarm"), "detail", "state"), r"aws\.cloudwatch\.detail\.state: Field required"),
        (
            {**sample("ec2_state_change"), "detail": {"instance-id": "vm-1", "state": "stopped"}},
            r"aws\.ec2\.detail\.instance-id: String should match pattern",
        ),
        (
            {**sample("ec2_state_change"), "detail": {"instance-id": "i-0a1b2c3d4e5f60002", "state": "melted"}},
            r"aws\.ec2\.detail\.state: Input should be",
        ),
    ],
)
def test_malformed_events_are_refused_naming_the_field(event: Any, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        parse_event(event, HealthCheckEvent)
