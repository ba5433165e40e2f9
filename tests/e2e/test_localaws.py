"""The AWS side of the local stack: template.yaml created in moto, our handlers invoked in-process.

Given the real template (or a temporary copy with a test-only function and state machine), when it is
built with :mod:`etcdops_local.aws.stack`, then Lambda invocations, Step Functions executions and the local
timer run our real code, and another process reaches it all through the server endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from builders import configured_stack
from stack_templates import ROOT, TEMPLATE, template_with_extras

from etcdops.adapters.registry import ClusterRegistry
from etcdops_local.aws.schedule import LocalScheduler, scheduled_event
from etcdops_local.aws.stack import (
    LocalAws,
    LocalStack,
    execution_history,
    load_local_stack,
    local_boto3_session,
    read_template,
    start_execution,
    wait_for_execution,
)
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.e2e


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "events" / f"{name}.json").read_text())
    return loaded


def invoke(aws: LocalAws, function: str, payload: Any) -> tuple[str | None, Any]:
    response = aws.client("lambda").invoke(FunctionName=function, Payload=json.dumps(payload))
    return response.get("FunctionError"), json.loads(response["Payload"].read())


@pytest.fixture
def aws() -> Iterator[LocalAws]:
    with LocalAws() as local:
        yield local


@pytest.fixture
def test_stack(aws: LocalAws, tmp_path: Path) -> LocalStack:
    return aws.build_stack(template_with_extras(tmp_path), {"ClusterName": "local"})


# ---- the real template ------------------------------------------------------------------------------


def test_the_real_template_builds_with_every_resource_accounted_for(aws: LocalAws) -> None:
    stack = aws.build_stack(TEMPLATE, {"ClusterName": "local"})

    sam = read_template(TEMPLATE)
    functions = [lid for lid, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    machines = [lid for lid, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::StateMachine"]
    assert sorted(stack.functions) == sorted(functions)
    assert sorted(stack.state_machines) == sorted(machines)
    assert stack.unhandled == [], "template.yaml has resources the local stack does not create"
    # asynchronous invocations as the template configures them (invoke_async and the timer follow them)
    assert stack.invoke_configs == {
        "BackupFunction": {"MaximumRetryAttempts": 1, "OnFailure": "FailureNoticeFunction"},
        "BackupVerifyFunction": {"MaximumRetryAttempts": 1, "OnFailure": "FailureNoticeFunction"},
        "HealthCheckFunction": {"MaximumRetryAttempts": 1},
        "DeltaBackupFunction": {"MaximumRetryAttempts": 0},  # the next minute's run continues the chain
    }
    assert stack.bucket in [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]]
    assert stack.topic_arn in [t["TopicArn"] for t in aws.client("sns").list_topics()["Topics"]]
    assert aws.client("kms").describe_key(KeyId=stack.key_id)["KeyMetadata"]["Arn"] == stack.key_arn
    assert all(not value.startswith("<") for value in stack.outputs.values())
    configuration = aws.client("lambda").get_function_configuration(FunctionName=stack.functions[functions[0]])
    assert configuration["Environment"]["Variables"]["TOPIC_ARN"] == stack.topic_arn

    sfn = aws.client("stepfunctions")
    for lid in machines:  # the runbooks as deployed: every substitution made, JSONPaths intact
        props = sam["Resources"][lid]["Properties"]
        source = (ROOT / props["DefinitionUri"]).read_text()
        deployed = sfn.describe_state_machine(stateMachineArn=stack.state_machines[lid])["definition"]
        for key in props.get("DefinitionSubstitutions", {}):
            assert f"${{{key}}}" not in deployed
        assert json.dumps(json.loads(deployed)).count("$$.") == json.dumps(json.loads(source)).count("$$.")


def test_a_handler_failure_comes_back_as_lambda_reports_it(aws: LocalAws) -> None:
    stack = aws.build_stack(TEMPLATE, {"ClusterName": "local"})

    error, payload = invoke(aws, stack.functions["BackupFunction"], {"source": "aws.events"})

    assert error == "Unhandled"
    assert payload["errorType"] == "InvalidEventError"
    assert payload["errorMessage"].startswith("BackupEvent: version: Field required")


def test_backup_function_runs_our_handler_against_a_real_cluster(aws: LocalAws, shared_cluster: LocalCluster) -> None:
    # Given the stack and the cluster's configuration where the template says it lives
    stack = configured_stack(aws, TEMPLATE, shared_cluster)  # TLS paths: local files

    # When the Backup function is invoked as EventBridge would, then BackupVerify
    error, backup = invoke(aws, stack.functions["BackupFunction"], event("backup_schedule"))
    assert error is None, backup
    error, verified = invoke(aws, stack.functions["BackupVerifyFunction"], event("backup_verify_schedule"))

    # Then the backup is in the stack's bucket, catalogued and verified
    assert error is None, verified
    assert verified["ok"] and verified["backup_id"] == backup["backup_id"]
    keys = [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=stack.bucket)["Contents"]]
    assert f"etcd/local/{backup['backup_id']}.manifest.json" in keys


def test_alarms_and_subscriptions_that_moto_skips_are_created(aws: LocalAws, test_stack: LocalStack) -> None:
    alarms = {a["AlarmName"]: a for a in aws.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    alarm = alarms[test_stack.alarms["TestFunctionErrorsAlarm"]]

    assert "TestUnusedAlarm" not in test_stack.alarms and "never" not in alarms
    assert sorted(alarms) == sorted(test_stack.alarms.values())  # and the template's own, if it has any
    assert alarm["AlarmActions"] == [test_stack.topic_arn]
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": test_stack.functions["TestFunction"]}]
    assert alarm["AlarmDescription"] == f"errors of {test_stack.functions['TestFunction']}"
    assert (alarm["EvaluationPeriods"], alarm["Threshold"]) == (1, 0.0)
    assert test_stack.unhandled == []

    sqs = aws.client("sqs")
    queue = sqs.get_queue_url(QueueName=test_stack.physical("TestInbox").rsplit("/", 1)[-1])["QueueUrl"]
    aws.client("sns").publish(TopicArn=test_stack.topic_arn, Message="hello")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=queue)["Messages"]] == ["hello"]


# ---- a test-only state machine ----------------------------------------------------------------------


def run(aws: LocalAws, stack: LocalStack, mode: str) -> tuple[dict[str, Any], str]:
    sfn = aws.client("stepfunctions")
    arn = start_execution(sfn, stack.state_machines["TestMachine"], {"mode": mode}, name=f"test-{mode}")
    return wait_for_execution(sfn, arn, timeout=120), arn


def test_environment_and_substitutions_reach_the_handler(aws: LocalAws, test_stack: LocalStack) -> None:
    described, _ = run(aws, test_stack, "ok")

    assert described["status"] == "SUCCEEDED"
    output = json.loads(described["output"])
    assert output["execution"] == "test-ok"  # "$$.Execution.Name" survived the substitution
    assert output["greeting"] == "hello"  # a literal DefinitionSubstitution
    assert output["function_name"] == test_stack.functions["TestFunction"]
    assert output["env"]["TOPIC_ARN"] == test_stack.topic_arn  # Globals, Ref resolved
    assert output["env"]["CLUSTER_CONFIG_PARAMETER"] == test_stack.parameters["ClusterConfigParameter"]
    assert output["env"]["ATTEMPTS_DIR"] and output["env"]["AWS_REGION"] == test_stack.region
    assert "ATTEMPTS_DIR" not in os.environ  # only for the length of the invocation


def test_retry_by_our_error_name_then_success(aws: LocalAws, test_stack: LocalStack) -> None:
    described, arn = run(aws, test_stack, "flaky")

    assert described["status"] == "SUCCEEDED"
    [step] = execution_history(aws.client("stepfunctions"), arn)
    assert (step.name, step.status, step.attempts) == ("Call the function", "succeeded", 2)


def test_an_event_invocation_is_retried_as_lambda_retries_it(
    aws: LocalAws, test_stack: LocalStack, tmp_path: Path
) -> None:
    # TestFunction has no EventInvokeConfig: Lambda's default of two retries; "flaky" fails once
    aws.client("lambda").invoke(
        FunctionName=test_stack.functions["TestFunction"],
        InvocationType="Event",
        Payload=json.dumps({"mode": "flaky", "execution": "event-1"}),
    )
    for worker in [t for t in threading.enumerate() if t.name == "lambda-TestFunction"]:
        worker.join(timeout=120)

    assert (tmp_path / "attempts" / "event-1.count").read_text() == "2"  # failed, retried, succeeded: done


def test_catch_by_our_error_name(aws: LocalAws, test_stack: LocalStack) -> None:
    described, arn = run(aws, test_stack, "fatal")

    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == {"handled": "FatalError"}
    steps = execution_history(aws.client("stepfunctions"), arn)
    assert [(s.name, s.status, s.error) for s in steps] == [
        ("Call the function", "caught", "FatalError"),
        ("Handle the failure", "succeeded", None),
    ]


def test_an_uncaught_error_fails_the_execution_with_its_name(aws: LocalAws, test_stack: LocalStack) -> None:
    described, arn = run(aws, test_stack, "broken")

    assert described["status"] == "FAILED"
    assert described["error"] == "BrokenError"
    assert "nobody catches this" in described["cause"]
    [step] = execution_history(aws.client("stepfunctions"), arn)
    assert (step.status, step.error, step.attempts) == ("failed", "BrokenError", 1)
    assert step.ended is not None and step.ended >= step.started


def test_an_emulator_fault_in_a_task_is_states_runtime_with_its_traceback_logged(
    aws: LocalAws, test_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an invocation that fails inside the emulator itself, not in the handler
    def fault(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("injected emulator fault")

    monkeypatch.setattr("etcdops_local.aws.invoke.run_handler", fault)
    described, arn = run(aws, test_stack, "ok")

    # Then the task ends as Step Functions ends one it cannot run, and the log says where it failed
    assert described["status"] == "FAILED" and described["error"] == "States.Runtime"
    [step] = execution_history(aws.client("stepfunctions"), arn)
    assert (step.status, step.error) == ("failed", "States.Runtime") and "injected emulator fault" in (step.cause or "")
    [record] = [r for r in caplog.records if "failed in the emulator" in r.getMessage()]
    assert "'Call the function'" in record.getMessage() and record.exc_info is not None
    assert "in fault" in "".join(traceback.format_exception(*record.exc_info))  # where it was raised


def test_invocations_and_executions_at_once_meet_no_emulator_fault(
    aws: LocalAws, test_stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 8 threads that each invoke the function and start executions at once (as the timer, several
    # executions' tasks and the harness do), while another thread walks the process environment as botocore
    # does for every client it makes (an invocation that wrote its variables there failed such walks)
    function, machine = test_stack.functions["TestFunction"], test_stack.state_machines["TestMachine"]
    threads, rounds = 8, 3
    start, done = threading.Barrier(threads + 1), threading.Event()
    faults: list[str] = []
    answers: list[tuple[str | None, Any]] = []
    started: list[str] = []

    def worker(i: int) -> None:
        lam, sfn = aws.client("lambda"), aws.client("stepfunctions")
        start.wait()
        for r in range(rounds):
            started.append(start_execution(sfn, machine, {"mode": "ok"}, name=f"at-once-{i}-{r}"))
            response = lam.invoke(FunctionName=function, Payload=json.dumps({"mode": "ok"}))
            answers.append((response.get("FunctionError"), json.loads(response["Payload"].read())))

    def walker() -> None:
        start.wait()
        while not done.is_set():
            try:
                urllib.request.getproxies()
                dict(os.environ)
            except Exception as exc:  # what a walk met, said by the assertion below
                faults.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    walking = threading.Thread(target=walker)
    for thread in [*workers, walking]:
        thread.start()
    for thread in workers:
        thread.join(timeout=600)
    ended = [wait_for_execution(aws.client("stepfunctions"), arn, timeout=600) for arn in started]
    done.set()
    walking.join(timeout=60)

    # Then every invocation and execution succeeded, and nothing failed inside the emulator or beside it
    assert len(answers) == len(ended) == threads * rounds
    assert all(error is None and payload["env"]["ATTEMPTS_DIR"] for error, payload in answers), answers
    assert [e["status"] for e in ended] == ["SUCCEEDED"] * len(ended), [e.get("cause") for e in ended]
    assert faults == [] and "ATTEMPTS_DIR" not in os.environ
    assert [r.getMessage() for r in caplog.records if "failed in the emulator" in r.getMessage()] == []


def test_stopping_the_local_aws_aborts_running_executions(aws: LocalAws, test_stack: LocalStack) -> None:
    sfn = aws.client("stepfunctions")
    arn = start_execution(sfn, test_stack.state_machines["TestMachine"], {"mode": "flaky"})  # retries after 1 s

    aws._abort_executions(wait=60)

    # moto reports ABORTED, or FAILED when the stop lands while the task is being invoked
    assert sfn.describe_execution(executionArn=arn)["status"] in {"ABORTED", "FAILED"}


# ---- the local timer ----------------------------------------------------------------------------------


def test_the_timer_fires_scheduled_events_one_run_at_a_time(test_stack: LocalStack, tmp_path: Path) -> None:
    hold = tmp_path / "attempts" / "hold"
    hold.touch()  # the first run waits until released
    scheduler = LocalScheduler.for_stack(test_stack, {"TestSchedule": "rate(1 second)"})
    [schedule] = [s for s in scheduler.schedules if s.function == "TestFunction"]
    assert (schedule.function, schedule.expression) == ("TestFunction", "rate(1 second)")

    with scheduler:
        deadline = time.monotonic() + 60
        while scheduler.skipped.get("TestFunction", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # firings come while the first run is held: they are skipped
        hold.unlink()
        runs = scheduler.wait_for("TestFunction", 2, timeout=60)

    assert scheduler.skipped["TestFunction"] >= 1
    assert len(runs) >= 2 and all(r.ok for r in runs), [(r.error, r.result) for r in runs]
    spans = sorted((r.started, r.ended or 0.0) for r in scheduler.runs)
    assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))
    sent = runs[0].event
    assert sent["detail-type"] == "Scheduled Event" and sent["source"] == "aws.events" and sent["detail"] == {}
    assert sent["resources"] == [
        f"arn:aws:events:{test_stack.region}:{test_stack.account_id}:rule/{test_stack.resources['TestFunctionTick']}"
    ]
    assert set(sent) == set(event("backup_schedule"))
    received = [json.loads(line) for line in (tmp_path / "attempts" / "scheduled.jsonl").read_text().splitlines()]
    assert [e["id"] for e in received] == [r.event["id"] for r in runs]


def test_the_runbook_schedules_start_one_execution_per_cluster(aws: LocalAws, test_stack: LocalStack) -> None:
    """MaintenanceSchedule and RestoreDrillSchedule fire ScheduledRunbooks, which starts the runbook for the
    default cluster and each registered one, one execution name per runbook, firing and cluster; a retried
    firing starts nothing twice, a removed cluster gets none."""
    registry = ClusterRegistry(aws.client("ssm"), test_stack.parameters["ClusterRegistryPath"])
    for name in ("c2", "c3"):  # nothing listens there: their executions fail at once, which is all it takes
        registry.add(f"name: {name}\nendpoints: [http://127.0.0.1:9]\nplaintext: true\n", f"{name}.yaml")
    sfn, machines = aws.client("stepfunctions"), test_stack.state_machines
    scheduler = LocalScheduler.for_stack(test_stack, {"MaintenanceSchedule": "rate(1 second)"})
    assert {s.function for s in scheduler.schedules} >= {"ScheduledRunbooksFunction"}
    assert not {"MaintainClusterStateMachine", "RestoreDrillStateMachine"} & {s.function for s in scheduler.schedules}

    def started(machine: str) -> dict[str, dict[str, Any]]:
        listed = sfn.list_executions(stateMachineArn=machines[machine])["executions"]
        return {e["name"]: json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"]) for e in listed}

    with scheduler:
        [run, *_] = scheduler.wait_for("ScheduledRunbooksFunction", 1, timeout=120)
    assert run.ok, run.error
    firings: dict[str, set[str]] = {}
    for name, document in started("MaintainClusterStateMachine").items():
        kind, at, cluster = name.split("-", 2)
        assert (kind, document) == ("maintain", {"cluster": cluster, "reason": "scheduled maintenance"})
        firings.setdefault(at, set()).add(cluster)
    assert firings and all(clusters == {"local", "c2", "c3"} for clusters in firings.values()), firings

    registry.remove("c3")
    [drill] = [s for s in scheduler.schedules if s.event == "RestoreDrill"]
    rule = test_stack.resources[drill.rule]
    event = scheduled_event(drill, datetime(2026, 12, 13, 5, 30, tzinfo=UTC), region=test_stack.region,
                            account=test_stack.account_id, rule_name=rule)  # fmt: skip
    invoke = aws.client("lambda").invoke
    for _ in range(2):  # the second is a retry of the same firing: it starts nothing more
        answer = invoke(FunctionName=test_stack.functions["ScheduledRunbooksFunction"], Payload=json.dumps(event))
        assert "FunctionError" not in answer, answer["Payload"].read()
    assert started("RestoreDrillStateMachine") == {
        "drill-20261213T0530-local": {"cluster": "local"},
        "drill-20261213T0530-c2": {"cluster": "c2"},
    }
    assert not [d for d in aws.authorizer.denials if "StartExecution" in str(d) or "GetParametersByPath" in str(d)]


# ---- another process ----------------------------------------------------------------------------------

OTHER_PROCESS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from etcdops_local.aws.stack import load_local_stack, local_boto3_session, start_execution, wait_for_execution

    state_dir = Path(sys.argv[1])
    stack = load_local_stack(state_dir)
    session = local_boto3_session(state_dir)
    sfn = session.client("stepfunctions")
    invoked = session.client("lambda").invoke(FunctionName=stack.functions["TestFunction"], Payload='{"mode": "ok"}')
    execution = start_execution(sfn, stack.state_machines["TestMachine"], {"mode": "fatal"})
    print(json.dumps({
        "buckets": [b["Name"] for b in session.client("s3").list_buckets()["Buckets"]],
        "machines": [m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]],
        "invoked": json.loads(invoked["Payload"].read()),
        "execution": json.loads(wait_for_execution(sfn, execution, timeout=120)["output"]),
    }))
    """
)


def test_another_process_reaches_the_stack_through_the_server(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with LocalAws(server=True, state_dir=state_dir) as aws:
        stack = aws.build_stack(template_with_extras(tmp_path), {"ClusterName": "local"})
        assert aws.endpoint and aws.endpoint.startswith("http://127.0.0.1:")
        assert os.environ["MOTO_PORT"] == aws.endpoint.rsplit(":", 1)[1]
        assert load_local_stack(state_dir) == stack

        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        done = subprocess.run(
            [sys.executable, "-c", OTHER_PROCESS, str(state_dir)],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            check=False,
        )

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert stack.bucket in seen["buckets"]
    assert stack.state_machines["TestMachine"] in seen["machines"]
    assert seen["invoked"]["function_name"] == stack.functions["TestFunction"]  # ran in the server's process
    assert seen["execution"] == {"handled": "FatalError"}
    assert not (state_dir / "aws.json").exists()  # stopping removes the endpoint record


def test_the_serve_process_runs_the_stack_and_the_timer_until_sigterm(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    template = template_with_extras(tmp_path)
    serving = subprocess.Popen(
        [sys.executable, "-m", "etcdops_local.aws.stack", "--state-dir", str(state_dir), "--template", str(template),
         "--schedule", "TestSchedule=rate(1 second)", "--parameter", "ClusterName=local"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (state_dir / "aws.json").exists() and serving.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (state_dir / "aws.json").exists(), serving.stderr.read() if serving.poll() is not None else "timeout"
        stack = load_local_stack(state_dir)
        session = local_boto3_session(state_dir)

        function = stack.functions["TestFunction"]
        invoked = session.client("lambda").invoke(FunctionName=function, Payload='{"mode": "ok"}')
        assert json.loads(invoked["Payload"].read())["mode"] == "ok"
        scheduled = tmp_path / "attempts" / "scheduled.jsonl"
        while not scheduled.exists() and time.monotonic() < deadline + 60:
            time.sleep(0.1)
        assert scheduled.exists()  # the timer fired in the serving process
    finally:
        serving.send_signal(signal.SIGTERM)
        assert serving.wait(timeout=120) == 0
    assert not (state_dir / "aws.json").exists()
