"""Approvals end to end with AWS emulated by moto: a real Step Functions execution waits on a
``lambda:invoke.waitForTaskToken`` task whose Lambda is our RequestApproval handler (run in-process
in place of moto's Docker invoke); the link from the SNS message goes through the Approval handler
(or the CLI) and the execution moves on, or fails with ApprovalRejected."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
import zipfile
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import boto3
import moto.awslambda.models
import pytest
from builders import trust_policy
from lambda_handlers import lambda_context, load_handler
from moto import mock_aws

from etcdops.adapters.state_dynamodb import DynamoStateStore, table_definition
from etcdops.app.approval import sign_link
from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops_local.cli import main as cli

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
TABLE = "etcdops-state"
BASE_URL = "https://abcdef1234.execute-api.us-east-1.amazonaws.com"
SECRET = "s3cr3t-for-tests-only-0123456789abcdefghijklmnopqrstuvwxyz"

MACHINE = {
    "Comment": "The approval step of a runbook, and a state after it",
    "StartAt": "Wait for approval",
    "States": {
        "Wait for approval": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
            "Parameters": {
                "FunctionName": "etcdops-request-approval",
                "Payload": {
                    "task_token.$": "$$.Task.Token",
                    "execution.$": "$$.Execution.Name",
                    "execution_arn.$": "$$.Execution.Id",
                    "runbook": "ReplaceMember",
                    "cluster.$": "$.cluster",
                    "reason.$": "$.reason",
                    "member_id.$": "$.member_id",
                    "member_name.$": "$.member_name",
                },
            },
            "TimeoutSeconds": 600,
            "ResultPath": "$.approval",
            "Next": "Replace the member",
        },
        "Replace the member": {"Type": "Pass", "End": True},
    },
}


def api_event(url: str, method: str = "GET", form: str | None = None) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event for ``url``, shaped like events/approval_*.json."""
    template = "approval_get.json" if method == "GET" else "approval_post.json"
    document: dict[str, Any] = json.loads((ROOT / "events" / template).read_text())
    parts = urlsplit(url)
    document["rawPath"] = document["requestContext"]["http"]["path"] = parts.path
    document["routeKey"] = document["requestContext"]["routeKey"] = f"{method} {parts.path}"
    document["rawQueryString"] = parts.query
    document["queryStringParameters"] = None  # the handler reads rawQueryString only
    if form is not None:
        document["body"] = base64.b64encode(form.encode()).decode()
    return document


class CountingSfn:
    """A Step Functions client that counts the decisions it sends."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sent: list[str] = []
        self.arguments: list[dict[str, Any]] = []

    def send_task_success(self, **kwargs: Any) -> Any:
        self.sent.append("success")
        self.arguments.append(kwargs)
        return self.client.send_task_success(**kwargs)

    def send_task_failure(self, **kwargs: Any) -> Any:
        self.sent.append("failure")
        self.arguments.append(kwargs)
        return self.client.send_task_failure(**kwargs)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_LOGGER_LOG_EVENT": "false",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        session = boto3.session.Session(region_name=REGION)
        dynamodb, sns, sqs, secrets, sfn, iam, lam = (
            session.client(n) for n in ("dynamodb", "sns", "sqs", "secretsmanager", "stepfunctions", "iam", "lambda")
        )
        dynamodb.create_table(**table_definition(TABLE))
        topic = sns.create_topic(Name="etcdops")["TopicArn"]
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        secret_arn = secrets.create_secret(Name="etcdops/approval-signing", SecretString=SECRET)["ARN"]
        for name, value in {
            "TABLE_NAME": TABLE,
            "TOPIC_ARN": topic,
            "APPROVAL_SECRET_ARN": secret_arn,
            "APPROVAL_BASE_URL": BASE_URL,
        }.items():
            monkeypatch.setenv(name, value)

        # The RequestApproval function: moto would run it in Docker; run our handler in-process.
        request_handler = load_handler("request_approval").handler
        invocations: list[dict[str, Any]] = []

        def invoke(self: Any, body: str, request_headers: Any, response_headers: Any) -> bytes:
            event = json.loads(body) if body else {}
            invocations.append(event)
            return json.dumps(request_handler(event, lambda_context(memory_mb=256))).encode()

        monkeypatch.setattr(moto.awslambda.models.LambdaFunction, "invoke", invoke)
        trust = trust_policy({"Service": "lambda.amazonaws.com"})
        role = iam.create_role(RoleName="etcdops", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("app.py", "def handler(event, context):\n    return {}\n")
        lam.create_function(
            FunctionName="etcdops-request-approval",
            Runtime="python3.11",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": code.getvalue()},
        )
        machine = sfn.create_state_machine(name="etcdops-ReplaceMember", definition=json.dumps(MACHINE), roleArn=role)

        def start(name: str) -> str:
            arn: str = sfn.start_execution(
                stateMachineArn=machine["stateMachineArn"],
                name=name,
                input=json.dumps(
                    {
                        "cluster": "prod-etcd",
                        "reason": "member etcd-2 failed 3 probes over 95 s; quorum kept; policy approval=always",
                        "member_id": 7,
                        "member_name": "etcd-2",
                    }
                ),
            )["executionArn"]
            return arn

        def messages(expected: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            deadline = time.monotonic() + timeout
            while len(found) < expected and time.monotonic() < deadline:
                for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
                    found.append(json.loads(m["Body"]))
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                if len(found) < expected:
                    time.sleep(0.1)
            return found

        def status(arn: str, wanted: str | None = None, timeout: float = 20) -> dict[str, Any]:
            deadline = time.monotonic() + timeout
            while True:
                described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
                if described["status"] == wanted or (wanted is None and described["status"] != "RUNNING"):
                    return described
                if time.monotonic() > deadline:
                    return described
                time.sleep(0.1)

        counting = CountingSfn(sfn)
        api = load_handler("approval")
        api.aws_clients = counted_clients(counting)  # the container's clients, before its first invocation
        yield SimpleNamespace(
            sfn=sfn,
            counting=counting,
            store=DynamoStateStore(TABLE, dynamodb),
            start=start,
            messages=messages,
            status=status,
            invocations=invocations,
            api=api,
        )
        # Executions still waiting hold worker threads, and moto's StopExecution does not end a
        # task-token wait: fail each waiting task with its token so nothing outlives the test.
        store = DynamoStateStore(TABLE, dynamodb)
        for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING")[
            "executions"
        ]:
            pending = store.load_approval(execution["name"])
            if pending is not None:
                with contextlib.suppress(sfn.exceptions.InvalidToken, sfn.exceptions.TaskTimedOut):
                    sfn.send_task_failure(taskToken=pending.task_token, error="TestOver")


def links(message: dict[str, Any]) -> dict[str, str]:
    found = {}
    for line in message["Message"].splitlines():
        for action in ("approve", "reject"):
            if line.lower().startswith(f"{action}:"):
                found[action] = line.split(":", 1)[1].strip()
    return found


def wait_for_request(aws: SimpleNamespace, name: str) -> tuple[str, dict[str, Any]]:
    arn = aws.start(name)
    [message] = aws.messages()
    assert aws.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    return arn, message


def call_api(aws: SimpleNamespace, url: str, method: str = "GET", form: str | None = None) -> dict[str, Any]:
    """The Approval handler (its Step Functions client is counted: see :func:`counted_clients`)."""
    response: dict[str, Any] = aws.api.handler(api_event(url, method, form), lambda_context(memory_mb=256))
    return response


def counted_clients(counting: CountingSfn) -> ContainerClients:
    """The Approval container's clients, its Step Functions client wrapped in ``counting``."""

    class Session(boto3.session.Session):
        def client(self, name: str, *args: Any, **kwargs: Any) -> Any:
            made = super().client(name, *args, **kwargs)
            if name == "stepfunctions":
                counting.client = made
                return counting
            return made

    return ContainerClients(Session)


# ---- the tests ----------------------------------------------------------------------------


def test_request_publishes_one_message_with_what_why_expiry_links_and_the_cli_fallback(aws: SimpleNamespace) -> None:
    # Given a ReplaceMember execution reaching its approval step
    arn, message = wait_for_request(aws, "replace-prod-1")
    # Then one SNS message says what will happen, why, until when, and how to decide
    assert message["Subject"] == "etcdops: approval needed: ReplaceMember on cluster prod-etcd"
    text = message["Message"]
    assert "What will happen: Replace failed member etcd-2 (id 7) of etcd cluster prod-etcd" in text
    assert "Why: member etcd-2 failed 3 probes over 95 s; quorum kept; policy approval=always" in text
    assert "Expires: " in text
    found = links(message)
    assert found["approve"].startswith(f"{BASE_URL}/approve?execution=replace-prod-1&action=approve&expires=")
    assert found["reject"].startswith(f"{BASE_URL}/reject?execution=replace-prod-1&action=reject&expires=")
    approval = aws.store.load_approval("replace-prod-1")
    assert approval is not None and approval.execution_arn == arn and approval.decision is None
    assert approval.task_token not in text and "etcdops approval show replace-prod-1" in text
    assert approval.task_token not in repr(approval)
    assert len(aws.invocations) == 1 and aws.invocations[0]["task_token"] == approval.task_token


def test_get_on_a_link_only_shows_a_confirmation(aws: SimpleNamespace) -> None:
    # Given a waiting execution
    arn, message = wait_for_request(aws, "replace-prod-2")
    # When the approve link is opened (as a mail scanner would)
    response = call_api(aws, links(message)["approve"])
    # Then a page shows what and why with a confirm button, and nothing was decided
    assert response["statusCode"] == 200
    assert "Replace failed member etcd-2" in response["body"] and 'method="post"' in response["body"]
    assert aws.counting.sent == []
    assert aws.status(arn, timeout=0.5)["status"] == "RUNNING"


def test_approve_link_lets_the_execution_proceed_and_a_second_use_has_no_effect(aws: SimpleNamespace) -> None:
    # Given a waiting execution
    arn, message = wait_for_request(aws, "replace-prod-3")
    approve, reject = links(message)["approve"], links(message)["reject"]
    # When the approve link is confirmed
    response = call_api(aws, approve, "POST")
    # Then the execution runs on to its next state with the decision as the task's result
    assert response["statusCode"] == 200 and "Execution approved" in response["body"]
    done = aws.status(arn, "SUCCEEDED")
    assert done["status"] == "SUCCEEDED"
    output = json.loads(done["output"])
    assert output["approval"]["approved"] is True and output["approval"]["by"] == "signed link from 203.0.113.7"
    # When the same link, or the reject link, is used again
    again = call_api(aws, approve, "POST")
    other = call_api(aws, reject, "POST", "reason=too+late")
    # Then 409, and Step Functions was called exactly once
    assert again["statusCode"] == 409 and other["statusCode"] == 409
    assert "already approved by signed link from 203.0.113.7" in again["body"]
    assert aws.counting.sent == ["success"]


def test_reject_link_fails_the_execution_with_approval_rejected(aws: SimpleNamespace) -> None:
    arn, message = wait_for_request(aws, "replace-prod-4")
    response = call_api(aws, links(message)["reject"], "POST", "reason=not+during+the+release+freeze")
    assert response["statusCode"] == 200 and "Execution rejected" in response["body"]
    failed = aws.status(arn, "FAILED")
    assert failed["status"] == "FAILED"
    assert failed["error"] == "ApprovalRejected"
    # moto 5.2.5 drops SendTaskFailure's cause (its responses.py passes only the error): check what we sent
    assert aws.counting.sent == ["failure"]
    assert aws.counting.arguments[0]["cause"] == "not during the release freeze"


@pytest.mark.parametrize(
    "alter",
    [
        lambda url: url.replace("execution=replace-prod-5", "execution=replace-prod-6"),
        lambda url: url.replace("/approve?", "/reject?").replace("action=approve", "action=reject"),
        lambda url: url.replace("expires=1", "expires=2"),
        lambda url: url[:-1] + ("A" if url[-1] != "A" else "B"),
        lambda url: url.split("&sig=")[0],
    ],
    ids=["execution", "action", "expiry", "signature", "unsigned"],
)
def test_altered_link_is_403_and_changes_nothing(aws: SimpleNamespace, alter: Any) -> None:
    arn, message = wait_for_request(aws, "replace-prod-5")
    aws.start("replace-prod-6")
    aws.messages()
    for method in ("GET", "POST"):
        response = call_api(aws, alter(links(message)["approve"]), method)
        assert response["statusCode"] == 403, response["body"]
        assert "Traceback" not in response["body"]
    assert aws.counting.sent == []
    assert aws.status(arn, timeout=0.5)["status"] == "RUNNING"
    approval = aws.store.load_approval("replace-prod-5")
    assert approval is not None and approval.decision is None


def test_expired_link_is_403_and_changes_nothing(aws: SimpleNamespace) -> None:
    arn, _ = wait_for_request(aws, "replace-prod-7")
    approval = aws.store.load_approval("replace-prod-7")
    assert approval is not None
    # a genuine link (right secret, right request) whose expiry has passed
    past = datetime.now(UTC) - timedelta(seconds=1)
    url = f"{BASE_URL}/approve?" + sign_link(SECRET.encode(), "replace-prod-7", "approve", past, approval.request_id)
    response = call_api(aws, url, "POST")
    assert response["statusCode"] == 403 and "expired" in response["body"]
    assert aws.counting.sent == []
    assert aws.status(arn, timeout=0.5)["status"] == "RUNNING"


@pytest.mark.parametrize(
    "form",
    [
        "reason=a&b=1&c=2&d=3&e=4",  # five fields
        "reason=a&reason=b",  # a repeated field
        "why=because",  # an unknown field
        "reason",  # a field without a value
        "reason=%FF%FE",  # not UTF-8
        "&".join(f"reason{i}=x" for i in range(50)),  # too many fields
    ],
    ids=["five-fields", "repeated", "unknown", "no-value", "bad-encoding", "many-fields"],
)
def test_a_malformed_form_is_400_and_changes_nothing(aws: SimpleNamespace, form: str) -> None:
    arn, message = wait_for_request(aws, "replace-prod-9")
    for action in ("approve", "reject"):
        response = call_api(aws, links(message)[action], "POST", form)
        assert response["statusCode"] == 400, response["body"]
        assert "Traceback" not in response["body"] and "Bad request" in response["body"]
    assert aws.counting.sent == []
    assert aws.status(arn, timeout=0.5)["status"] == "RUNNING"
    approval = aws.store.load_approval("replace-prod-9")
    assert approval is not None and approval.decision is None


def test_a_form_body_that_is_not_base64_is_400(aws: SimpleNamespace) -> None:
    arn, message = wait_for_request(aws, "replace-prod-10")
    event = api_event(links(message)["reject"], "POST")
    event["body"], event["isBase64Encoded"] = "%%% not base64 %%%", True
    response = aws.api.handler(event, lambda_context(memory_mb=256))
    assert response["statusCode"] == 400 and "base64" in response["body"]
    assert aws.status(arn, timeout=0.5)["status"] == "RUNNING"


def test_unknown_path_is_404(aws: SimpleNamespace) -> None:
    _, message = wait_for_request(aws, "replace-prod-8")
    response = call_api(aws, links(message)["approve"].replace("/approve?", "/launch?"))
    assert response["statusCode"] == 404


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def test_cli_approve_and_second_approve(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ETCDOPS_TABLE", TABLE)
    arn, _ = wait_for_request(aws, "replace-prod-9")
    # the operator may name the execution by its ARN
    code, out = run_cli("approve", arn, "--json")
    assert code == 0
    assert json.loads(out)["decision"] == "approved" and json.loads(out)["execution"] == "replace-prod-9"
    assert aws.status(arn, "SUCCEEDED")["status"] == "SUCCEEDED"
    capsys.readouterr()
    code, _ = run_cli("approve", "replace-prod-9")
    assert code == 1 and "AlreadyDecidedError" in capsys.readouterr().err


def test_cli_reject_with_injected_clients(aws: SimpleNamespace) -> None:
    import argparse

    from etcdops_local.cli import approval as cli_approval

    arn, _ = wait_for_request(aws, "replace-prod-10")
    parser = argparse.ArgumentParser()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    cli_approval.register(commands, common, factory=lambda args: cli_approval.ApprovalClients(aws.store, aws.counting))
    args = parser.parse_args(["reject", "replace-prod-10", "--reason", "wrong member", "--json"])
    with redirect_stdout(io.StringIO()):
        assert args.handler(args) == 0
    failed = aws.status(arn, "FAILED")
    assert failed["error"] == "ApprovalRejected"
    assert aws.counting.sent == ["failure"] and aws.counting.arguments[0]["cause"] == "wrong member"
    # approval show prints the request and its send-task-success command
    code, out = run_cli("approval", "show", "replace-prod-10", "--table", TABLE, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["state"] == "reject" and shown["decided_by"].startswith("cli")
    assert shown["send_task_success"].startswith("aws stepfunctions send-task-success --task-token ")


def test_token_step_functions_no_longer_accepts_is_a_named_error(aws: SimpleNamespace) -> None:
    from dataclasses import replace

    from etcdops.app.approval import TaskTokenRejectedError, decide_approval

    # Given a request whose task token Step Functions does not know (moto 5.2.5 keeps an execution
    # waiting after StopExecution, so a stale token is simulated by storing another one)
    wait_for_request(aws, "replace-prod-11")
    approval = aws.store.load_approval("replace-prod-11")
    assert approval is not None
    aws.store.save_approval(replace(approval, task_token="AAAAKgAAAAIAAAAAAAAAAStaleToken"))
    # When it is approved
    # Then Step Functions' InvalidToken becomes TaskTokenRejectedError, and the decision stays spent
    with pytest.raises(TaskTokenRejectedError, match="InvalidToken"):
        decide_approval(
            "replace-prod-11", "approve", None, store=aws.store, sfn=aws.counting, now=datetime.now(UTC), by="test"
        )
    spent = aws.store.load_approval("replace-prod-11")
    assert spent is not None and spent.decision == "approve"
    assert aws.counting.sent == ["success"]
    aws.store.save_approval(approval)  # the real token again, so the fixture can end the wait
