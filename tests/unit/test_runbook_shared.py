"""What the runbooks share: the RunbookStep environment, and how a caught error reads in a mail."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import boto3
import pytest

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.runbook import caught_error, publish_failure_once
from etcdops.domain.config import parse_config
from etcdops.domain.errors import ConfigError
from etcdops.entrypoints.runbook_step import staging_store
from etcdops.entrypoints.settings import RunbookSettings

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


@pytest.mark.parametrize(
    ("compute", "staged_in"),
    [
        ({"provider": "ec2", "launch_template": "lt", "subnets": ["subnet-0123abcd"]}, "s3://staging/prod"),
        ({"provider": "local", "state_dir": "/var/etcdops"}, None),  # local hosts read files: the backup store
    ],
)
def test_restores_stage_in_the_stacks_staging_bucket_unless_the_hosts_are_local(
    compute: dict[str, object], staged_in: str | None
) -> None:
    settings = RunbookSettings.from_env({**ENV, "RESTORE_STAGING_BUCKET": "staging"})
    config = parse_config(
        {"name": "prod", "endpoints": ["http://10.0.0.1:2379"], "plaintext": True, "compute": compute}
    )

    staging = staging_store(config, settings, boto3.session.Session(region_name="us-east-1"))

    assert (staging().uri if staging else None) == staged_in
    assert RunbookSettings.from_env(ENV).staging_bucket is None


# ---- what a failure mail says ----------------------------------------------------------------------


def test_a_lambda_error_document_is_reduced_to_its_message() -> None:
    cause = json.dumps(
        {
            "errorMessage": "etcdops-StartEtcd (command c-1) failed: m4 Failed: no space left",
            "errorType": "HostCommandFailedError",
            "requestId": "r-1",
            "stackTrace": ['  File "/var/task/app.py", line 20, in handler\n', "    raise\n"],
        }
    )

    text = caught_error({"Error": "HostCommandFailedError", "Cause": cause})

    assert text == "HostCommandFailedError: etcdops-StartEtcd (command c-1) failed: m4 Failed: no space left"


def test_other_causes_are_kept_but_bounded() -> None:
    assert caught_error({"Error": "States.Timeout", "Cause": "the wait timed out"}) == (
        "States.Timeout: the wait timed out"
    )
    assert caught_error({"Error": "X", "Cause": '["not", "a", "lambda", "error"]'}).endswith('"error"]')
    long = caught_error({"Error": "X", "Cause": "y" * 5000})
    assert len(long) < 1100 and long.endswith("…")
    assert caught_error(None) == "None: "
    # a Lambda error's own message is kept longer: a failed preflight lists every finding
    findings = "\n".join(f"{i}. [host] instance i-{i:017x}: is not online in SSM. Fix: start it." for i in range(1, 30))
    listed = caught_error({"Error": "PreflightFailedError", "Cause": json.dumps({"errorMessage": findings})})
    assert listed == f"PreflightFailedError: {findings}" and len(findings) > 1100


def test_a_failure_is_published_once_however_often_the_catch_path_runs() -> None:
    ctx = SimpleNamespace(
        state=InMemoryStateStore(), notifier=MemoryNotifier(), now=lambda: datetime(2026, 12, 7, tzinfo=UTC)
    )
    doc = {"cluster": "prod", "execution": "upgrade-prod-1"}

    for _ in range(2):  # a retried NotifyFailure step
        assert publish_failure_once(ctx, doc, "upgrade-failed", "subject", "body") == doc

    assert ctx.notifier.messages == [("subject", "body", {"cluster": "prod", "kind": "upgrade-failed"})]


@pytest.mark.parametrize(("rotated", "said"), [(1, "1 member of prod"), (3, "3 members of prod")])
def test_a_certificate_rotation_counts_its_members_in_words(rotated: int, said: str) -> None:
    from etcdops.app.runbook.rotate import notify_success

    ctx = SimpleNamespace(
        state=InMemoryStateStore(), notifier=MemoryNotifier(), now=lambda: datetime(2026, 12, 7, tzinfo=UTC)
    )
    done = [{"name": f"m{i}", "serial_before": "1", "serial_after": "2", "not_after": None} for i in range(rotated)]

    notify_success(ctx, {"cluster": "prod", "execution": "rotate-prod-1", "rotated": done})

    ((subject, _, _),) = ctx.notifier.messages
    assert subject == f"etcdops: renewed the certificates of {said}"
