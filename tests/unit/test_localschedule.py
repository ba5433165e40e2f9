"""The local timer's schedule expressions and the schedules it reads from a template (no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from etcdops.domain.errors import ConfigError
from etcdops_local.aws.schedule import Cron, Rate, parse_schedule, scheduled_event, template_schedules


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(30 minutes)", 1800), ("rate(2 hours)", 7200), ("rate(1 day)", 86400),
     ("rate(10 seconds)", 10), ("rate(1 second)", 1)],
)
def test_rates(expression: str, seconds: int) -> None:
    assert parse_schedule(expression) == Rate(seconds)


def test_seconds_are_a_local_extension() -> None:
    with pytest.raises(ConfigError, match="smallest unit is minutes"):
        parse_schedule("rate(10 seconds)", allow_seconds=False)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("cron(15 4 * * ? *)", "2026-11-25T20:30", "2026-11-26T04:15"),  # the BackupVerify default: daily
        ("cron(15 4 * * ? *)", "2026-11-26T04:14", "2026-11-26T04:15"),
        ("cron(15 4 * * ? *)", "2026-11-26T04:15", "2026-11-27T04:15"),  # strictly after
        ("cron(0/15 9-17 ? * MON-FRI *)", "2026-11-27T17:50", "2026-11-30T09:00"),  # Friday evening -> Monday
        ("cron(0 0 1 JAN ? *)", "2026-03-01T00:00", "2027-01-01T00:00"),
        ("cron(0 12 ? * SUN *)", "2026-11-25T00:00", "2026-11-29T12:00"),  # 2026-11-29 is a Sunday
        ("cron(*/20 * * * ? 2027)", "2026-12-31T23:59", "2027-01-01T00:00"),
        ("cron(5,35 * 29 2 ? *)", "2026-03-01T00:00", "2028-02-29T00:05"),  # the next leap day
    ],
)
def test_cron_next_firing(expression: str, after: str, expected: str) -> None:
    timing = parse_schedule(expression)
    assert isinstance(timing, Cron)
    assert timing.next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("every 5 minutes", "neither rate"),
        ("rate(0 minutes)", "must be positive"),
        ("rate(5 weeks)", "neither rate"),
        ("cron(0 4 * * *)", "6 fields"),
        ("cron(0 4 * * MON *)", "exactly one of"),
        ("cron(0 4 ? * ? *)", "exactly one of"),
        ("cron(0 25 * * ? *)", "outside 0-23"),
        ("cron(0 4 L * ? *)", "not supported locally"),
        ("cron(0 4 ? * 2#1 *)", "not supported locally"),
    ],
)
def test_bad_expressions_are_refused_by_name(expression: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_schedule(expression)


TEMPLATE = {
    "Parameters": {"HealthCheckSchedule": {"Type": "String"}},
    "Resources": {
        "HealthCheckFunction": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Events": {
                    "Every": {"Type": "Schedule", "Properties": {"Schedule": {"Ref": "HealthCheckSchedule"}}},
                    "Alarm": {"Type": "CloudWatchEvent", "Properties": {"Pattern": {"source": ["aws.cloudwatch"]}}},
                }
            },
        },
        "NightlyFunction": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Events": {
                    "Nightly": {
                        "Type": "Schedule",
                        "Properties": {"Schedule": "cron(0 3 * * ? *)", "Input": '{"backup_id": "b1"}'},
                    },
                    "Off": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)", "Enabled": False}},
                }
            },
        },
        "Topic": {"Type": "AWS::SNS::Topic"},
    },
}


def test_template_schedules_resolve_parameters_and_local_overrides() -> None:
    schedules = template_schedules(
        TEMPLATE, {"HealthCheckSchedule": "rate(1 minute)"}, {"HealthCheckSchedule": "rate(10 seconds)"}
    )

    assert [(s.function, s.event, s.expression, s.timing, s.rule, s.input) for s in schedules] == [
        ("HealthCheckFunction", "Every", "rate(10 seconds)", Rate(10), "HealthCheckFunctionEvery", None),
        ("NightlyFunction", "Nightly", "cron(0 3 * * ? *)", parse_schedule("cron(0 3 * * ? *)"),
         "NightlyFunctionNightly", {"backup_id": "b1"}),
    ]
    [health] = template_schedules(TEMPLATE, {"HealthCheckSchedule": "rate(1 minute)"}, {})[:1]
    assert health.expression == "rate(1 minute)"


def test_a_bad_schedule_in_the_template_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^HealthCheckFunction\.Events\.Every\.Schedule: schedule: 'hourly'"):
        template_schedules(TEMPLATE, {"HealthCheckSchedule": "hourly"})


def test_state_machine_schedules_are_read_with_their_substituted_input() -> None:
    machine = {
        "Type": "AWS::Serverless::StateMachine",
        "Properties": {"Events": {"Schedule": {"Type": "Schedule", "Properties": {
            "Schedule": {"Ref": "MaintenanceSchedule"},
            "Input": {"Fn::Sub": '{"cluster": "${ClusterName}", "reason": "scheduled maintenance"}'},
        }}}},
    }  # fmt: skip
    template = {"Resources": {"MaintainClusterStateMachine": machine}}

    [schedule] = template_schedules(template, {"MaintenanceSchedule": "rate(1 day)", "ClusterName": "prod"})
    assert (schedule.function, schedule.rule, schedule.timing) == (
        "MaintainClusterStateMachine", "MaintainClusterStateMachineSchedule", Rate(86400)
    )
    assert schedule.input == {"cluster": "prod", "reason": "scheduled maintenance"}
    with pytest.raises(ConfigError, match=r"Schedule\.Input: \$\{ClusterName\} is not a parameter$"):
        template_schedules(template, {"MaintenanceSchedule": "rate(1 day)"})


def test_the_scheduled_event_has_eventbridges_shape() -> None:
    [health, nightly] = template_schedules(TEMPLATE, {"HealthCheckSchedule": "rate(1 minute)"})

    sent = scheduled_event(health, at("2026-11-25T20:30:00.123"), region="eu-west-1", account="1", rule_name="r-1")
    assert {k: v for k, v in sent.items() if k != "id"} == {
        "version": "0",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "1",
        "time": "2026-11-25T20:30:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:1:rule/r-1"],
        "detail": {},
    }
    assert scheduled_event(nightly, at("2026-11-25T03:00"), region="r", account="1", rule_name="n") == {
        "backup_id": "b1"
    }
