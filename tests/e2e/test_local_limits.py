"""The emulated AWS enforces AWS's limits: a function's /tmp is its EphemeralStorage, payloads, state
data, execution names, parameter values and items have AWS's maximum sizes, names are unique.

Given a copy of template.yaml with a test-only function (512 MB of ephemeral storage, Lambda's
minimum) and a state machine calling it, when a limit is crossed, then the call fails with the error
AWS gives, and just under the limit it works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from stack_templates import template_with_extras, write_template

from etcdops_local.aws.stack import LocalAws, LocalAwsError, LocalStack, wait_for_execution

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws() as local:
        yield local


@pytest.fixture(scope="module")
def stack(aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> LocalStack:
    def sized(template: dict[str, Any]) -> None:
        template["Resources"]["TestFunction"]["Properties"]["EphemeralStorage"] = {"Size": 512}

    return aws.build_stack(template_with_extras(tmp_path_factory.mktemp("limits"), sized))


def invoke(aws: LocalAws, stack: LocalStack, payload: Any, **kwargs: Any) -> tuple[str | None, Any]:
    response = aws.client("lambda").invoke(
        FunctionName=stack.functions["TestFunction"], Payload=json.dumps(payload), **kwargs
    )
    return response.get("FunctionError"), json.loads(response["Payload"].read() or b"null")


def refused(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as error:
        call()
    details: dict[str, Any] = error.value.response["Error"]
    return details


# ---- Lambda's /tmp ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("ephemeral_limit")
def test_writing_more_than_the_ephemeral_storage_fails_with_enospc_as_in_lambda(
    aws: LocalAws, stack: LocalStack
) -> None:
    error, fits = invoke(aws, stack, {"mode": "write-tmp", "mb": 100})
    assert error is None, fits
    assert fits["tmp"] != "/tmp" and Path(fits["file"]).parent == Path(fits["tmp"])  # the sandbox's own /tmp

    error, payload = invoke(aws, stack, {"mode": "write-tmp", "mb": 600})

    assert error == "Unhandled"
    assert payload["errorType"] == "OSError"
    assert payload["errorMessage"].startswith("[Errno 28] No space left on device")


@pytest.mark.usefixtures("ephemeral_limit")
def test_a_warm_sandbox_keeps_its_tmp_between_invocations(aws: LocalAws, stack: LocalStack) -> None:
    error, first = invoke(aws, stack, {"mode": "write-tmp", "mb": 300, "keep": True})
    assert error is None, first

    error, second = invoke(aws, stack, {"mode": "write-tmp", "mb": 300})  # 600 MB in one 512 MB /tmp

    assert error == "Unhandled" and second["errorMessage"].startswith("[Errno 28]")
    Path(first["file"]).unlink()  # the harness may reach into the sandbox; the function's next call fits again
    assert invoke(aws, stack, {"mode": "write-tmp", "mb": 300})[0] is None


# ---- Lambda payloads ---------------------------------------------------------------------------------------


def test_invocation_payloads_have_lambdas_limits(aws: LocalAws, stack: LocalStack) -> None:
    sync = refused(lambda: invoke(aws, stack, {"mode": "ok", "pad": "x" * (6 * 1024 * 1024)}))
    asynchronous = refused(
        lambda: invoke(aws, stack, {"mode": "ok", "pad": "x" * (256 * 1024)}, InvocationType="Event")
    )
    assert sync["Code"] == asynchronous["Code"] == "RequestEntityTooLargeException"

    assert invoke(aws, stack, {"mode": "ok", "pad": "x" * (200 * 1024)}, InvocationType="Event")[0] is None
    error, payload = invoke(aws, stack, {"mode": "respond", "bytes": 7 * 1024 * 1024})
    assert (error, payload["errorType"]) == ("Unhandled", "Function.ResponseSizeTooLarge")


# ---- Step Functions --------------------------------------------------------------------------------------------


def test_execution_names_and_inputs_have_step_functions_limits(aws: LocalAws, stack: LocalStack) -> None:
    sfn = aws.client("stepfunctions")
    machine = stack.state_machines["TestMachine"]

    def start(name: str, document: Any) -> Any:
        return sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(document))

    assert refused(lambda: start("x" * 81, {"mode": "ok"}))["Code"] == "ValidationException"
    for bad in ("two words", "restore:cluster", "a/b", "wild*", "{json}"):
        assert refused(lambda bad=bad: start(bad, {"mode": "ok"}))["Code"] == "InvalidName"
    assert (
        refused(lambda: start("big-input", {"mode": "ok", "pad": "x" * (256 * 1024)}))["Code"] == "ValidationException"
    )

    ok = start("x" * 80, {"mode": "ok", "pad": "x" * (200 * 1024)})
    assert wait_for_execution(sfn, ok["executionArn"], timeout=120)["status"] == "SUCCEEDED"


def test_a_state_result_over_256_kib_fails_the_execution(aws: LocalAws, stack: LocalStack) -> None:
    sfn = aws.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=stack.state_machines["TestMachine"], name="large-result", input=json.dumps({"mode": "large"})
    )["executionArn"]

    described = wait_for_execution(sfn, arn, timeout=120)

    assert (described["status"], described.get("error")) == ("FAILED", "States.DataLimitExceeded")


# ---- SSM, SNS, DynamoDB --------------------------------------------------------------------------------------


def test_parameter_values_have_the_tiers_limits(aws: LocalAws) -> None:
    ssm = aws.client("ssm")

    assert refused(lambda: ssm.put_parameter(Name="/limits/standard", Value="x" * 4097, Type="String"))["Code"] == (
        "ValidationException"
    )
    ssm.put_parameter(Name="/limits/standard", Value="x" * 4096, Type="String")
    ssm.put_parameter(Name="/limits/advanced", Value="x" * 8192, Type="String", Tier="Advanced")
    too_big = refused(lambda: ssm.put_parameter(Name="/limits/big", Value="x" * 8193, Type="String", Tier="Advanced"))
    assert too_big["Code"] == "ValidationException"


def test_sns_messages_and_dynamodb_items_have_their_limits(aws: LocalAws, stack: LocalStack) -> None:
    sns, dynamodb = aws.client("sns"), aws.client("dynamodb")

    assert refused(lambda: sns.publish(TopicArn=stack.topic_arn, Message="x" * (256 * 1024 + 1)))["Code"] == (
        "InvalidParameter"
    )
    item = {"pk": {"S": "limits"}, "sk": {"S": "item"}, "blob": {"S": "x" * (400 * 1024)}}
    assert refused(lambda: dynamodb.put_item(TableName=stack.table, Item=item))["Code"] == "ValidationException"


# ---- unique names ------------------------------------------------------------------------------------------------


def test_a_fixed_name_makes_a_second_stack_fail_as_cloudformation_would(aws: LocalAws, tmp_path: Path) -> None:
    def fixed_dashboard_name(template: dict[str, Any]) -> None:
        template["Resources"]["HealthDashboard"]["Properties"]["DashboardName"] = "etcdops-fixed"

    template = write_template(tmp_path, fixed_dashboard_name)
    aws.build_stack(template, stack_name="fixed-one")

    with pytest.raises(LocalAwsError) as collided:
        aws.build_stack(template, stack_name="fixed-two")

    assert "AWS::CloudWatch::Dashboard etcdops-fixed already exist(s) in this account and region" in str(collided.value)
