"""The RunbookStep function's environment: every variable named when missing."""

from __future__ import annotations

import pytest

from etcdops.errors import ConfigError
from etcdops.runbook.handler import RunbookSettings

ENV = {"CLUSTER_CONFIG_PARAMETER": "/etcdops/prod", "TABLE_NAME": "t", "TOPIC_ARN": "arn:t", "STACK_NAME": "prod"}


def test_settings_come_from_the_environment() -> None:
    settings = RunbookSettings.from_env(ENV)

    assert (settings.config_parameter, settings.table_name, settings.topic_arn, settings.stack_name) == (
        "/etcdops/prod", "t", "arn:t", "prod",
    )  # fmt: skip


def test_a_missing_stack_name_is_named() -> None:
    # the stack name says whose SSM documents the EC2 provider sends
    with pytest.raises(ConfigError, match=r"^STACK_NAME: not set"):
        RunbookSettings.from_env({**ENV, "STACK_NAME": " "})
