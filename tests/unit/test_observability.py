"""Lambda logging (etcdops.entrypoints.observability): in AWS Lambda the package's log lines, the health decision
and its reason first, are structured JSON written by the function's Powertools Logger; elsewhere the
host process keeps its own logging."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from etcdops.app.healthcheck import Trigger, log_decision
from etcdops.domain.policy import Action, Decision
from etcdops.entrypoints.observability import PACKAGE_LOGGER, function_logger, in_aws_lambda

LAMBDA = {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"}
DECISION = Decision(
    action=Action.REPLACE_MEMBER,
    reason="Replace member m3 (3): it failed 3 consecutive probes over 2 s.",
    cluster="prod",
    target_member_id=3,
    target_member_name="m3",
    incident_id="prod-replace-3-20261125T203000Z-0123456789",
)


@pytest.fixture
def package_logger() -> Iterator[logging.Logger]:
    """The ``etcdops`` logger, put back as it was (other tests in this process log through it)."""
    package = logging.getLogger(PACKAGE_LOGGER)
    saved = (list(package.handlers), package.level, package.propagate)
    yield package
    package.handlers[:], package.propagate = saved[0], saved[2]
    package.setLevel(saved[1])


def test_in_lambda_the_decision_and_its_reason_are_one_json_line(
    package_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    function_logger("etcdops-test-observability", LAMBDA)  # what every functions/*/app.py does at import

    log_decision(DECISION, Trigger.manual("alarm prod-quorum is ALARM"))

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (line,) = [entry for entry in lines if entry.get("decision")]
    assert line["level"] == "INFO" and line["service"] == "etcdops-test-observability"
    assert line["decision"] == "REPLACE_MEMBER" and line["reason"] == DECISION.reason
    assert line["cluster"] == "prod" and line["incident"] == DECISION.incident_id
    assert line["trigger"] == "alarm prod-quorum is ALARM" and line["name"] == "etcdops.app.healthcheck"
    assert line["message"] == f"decision REPLACE_MEMBER: {DECISION.reason}"
    assert package_logger.propagate is False  # once, not again as the runtime's plain-text line


def test_outside_lambda_the_host_process_keeps_its_logging(
    package_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    assert not in_aws_lambda({}) and not in_aws_lambda({"AWS_EXECUTION_ENV": "CloudShell"})
    handlers = list(package_logger.handlers)
    function_logger("etcdops-test-observability-local", {})

    with caplog.at_level(logging.INFO, logger="etcdops.app.healthcheck"):
        log_decision(DECISION, Trigger.manual())

    assert package_logger.handlers == handlers and package_logger.propagate
    (record,) = [r for r in caplog.records if r.name == "etcdops.app.healthcheck"]
    assert record.getMessage() == f"decision REPLACE_MEMBER: {DECISION.reason}"
    assert (record.decision, record.reason) == ("REPLACE_MEMBER", DECISION.reason)  # type: ignore[attr-defined]
