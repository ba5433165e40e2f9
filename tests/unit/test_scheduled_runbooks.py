"""ScheduledRunbooks' names and refusals (the emulated stack's run: tests/e2e/test_localaws.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from etcdops.domain.config import check_cluster_name
from etcdops.domain.errors import ConfigError
from etcdops.entrypoints.scheduled_runbooks import execution_name, runbook_of_rule
from etcdops.entrypoints.settings import ScheduledRunbookSettings

AT = datetime(2026, 12, 13, 5, 30, 59, tzinfo=UTC)
SETTINGS = ScheduledRunbookSettings.from_env({
    "MAINTENANCE_RULE": "s-maintenance", "MAINTAIN_STATE_MACHINE_ARN": "arn:m",
    "RESTORE_DRILL_RULE": "s-restore-drill", "RESTORE_DRILL_STATE_MACHINE_ARN": "arn:d",
})  # fmt: skip


def test_names_are_one_per_runbook_firing_and_cluster_within_step_functions_limit() -> None:
    assert execution_name("maintain", AT, "prod") == "maintain-20261213T0530-prod"
    longest = check_cluster_name("a" * 40)  # the longest cluster name there is
    assert len(execution_name("maintain", AT, longest)) <= 80  # Step Functions' limit
    with pytest.raises(ConfigError):
        check_cluster_name("a" * 41)


def test_the_rule_says_which_runbook_and_anything_else_is_refused() -> None:
    assert runbook_of_rule(SETTINGS, ["arn:aws:events:r:1:rule/s-restore-drill"]).state_machine_arn == "arn:d"
    maintain = runbook_of_rule(SETTINGS, ["arn:aws:events:r:1:rule/s-maintenance"])
    assert (maintain.kind, maintain.extra_input) == ("maintain", {"reason": "scheduled maintenance"})
    with pytest.raises(ConfigError, match="rule other: not s-maintenance or s-restore-drill"):
        runbook_of_rule(SETTINGS, ["arn:aws:events:r:1:rule/other"])
    with pytest.raises(ConfigError, match="names 0"):
        runbook_of_rule(SETTINGS, [])
