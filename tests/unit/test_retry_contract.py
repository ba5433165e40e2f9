"""The one retry contract: errors declare whether they are transient, and every state machine's Retry
lists are exactly what :mod:`etcdops_local.retry_contract` makes from those declarations."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import etcdops
import etcdops_local
from etcdops.app.runbook import replace, restore
from etcdops.domain.errors import DEFAULT_BACKOFF
from etcdops_local import retry_contract as retries

ROOT = Path(__file__).resolve().parents[2]
MACHINES = sorted((ROOT / "statemachines").glob("*.asl.json"))
PACKAGES = [Path(etcdops.__file__).parent, Path(etcdops_local.__file__).parent]


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: state for name, state, _ in retries._states(definition) if state["Type"] == "Task"}


def retried(state: dict[str, Any]) -> dict[str, tuple[int, int, float]]:
    """error name -> (interval, attempts, rate) of the retrier that handles it (the first that names it)."""
    out: dict[str, tuple[int, int, float]] = {}
    for retrier in state.get("Retry", []):
        for name in retrier["ErrorEquals"]:
            out.setdefault(name, (retrier["IntervalSeconds"], retrier["MaxAttempts"], retrier["BackoffRate"]))
    return out


def test_there_are_state_machines_to_check() -> None:
    assert {p.name for p in MACHINES} >= {"replace_member.asl.json", "restore_cluster.asl.json"}


@pytest.mark.parametrize("path", MACHINES, ids=lambda p: p.name)
def test_every_state_machine_retries_exactly_what_the_errors_declare(path: Path) -> None:
    text = path.read_text()
    assert retries.render(retries.with_retry_contract(json.loads(text))) == text, (
        f"{path.name}: Retry lists differ from the retry contract; run: "
        f"python -m etcdops_local.retry_contract --write statemachines/*.asl.json"
    )


@pytest.mark.parametrize("path", MACHINES, ids=lambda p: p.name)
def test_every_state_machine_catches_only_known_errors_and_every_failure(path: Path) -> None:
    assert retries.contract_problems(load(path)) == []


@pytest.mark.parametrize("path", MACHINES, ids=lambda p: p.name)
def test_every_transient_error_is_retried_in_every_task_and_no_permanent_one_is(path: Path) -> None:
    transient = retries.transient_errors()
    permanent = {name for name, cls in retries.error_classes().items() if not cls.retryable}
    for name, state in tasks(load(path)).items():
        handled = retried(state)
        assert set(transient) <= set(handled), f"{name}: not retried: {set(transient) - set(handled)}"
        assert not permanent & set(handled), f"{name}: retries permanent errors {permanent & set(handled)}"
        assert set(retries.LAMBDA_SERVICE_ERRORS) <= set(handled)


@pytest.mark.parametrize("path", MACHINES, ids=lambda p: p.name)
def test_a_step_whose_function_died_halfway_runs_again_twice_at_most(path: Path) -> None:
    # a crash or out-of-memory (Lambda.Unknown) or the function's timeout (Sandbox.Timedout): the step
    # converges (invariant 7), so it runs again, but a step that dies every time fails within minutes
    # and reaches the failure path instead of being retried for the day; the approval's own timeout
    # (States.Timeout) is an answer, never retried
    for name, state in tasks(load(path)).items():
        handled = retried(state)
        for error in ("Lambda.Unknown", "Sandbox.Timedout"):
            assert error in handled, f"{name}: a function that died halfway ({error}) is not retried"
            interval, attempts, rate = handled[error]
            assert attempts <= 2 and interval * rate**attempts <= 60, (name, error, handled[error])
        assert "States.Timeout" not in handled and "States.ALL" not in handled, name


def test_the_bugs_of_issue_9_are_gone() -> None:
    replace_machine = tasks(load(ROOT / "statemachines" / "replace_member.asl.json"))
    # a fresh EC2 host not yet online in SSM is waited for where etcd is started on it
    start = retried(replace_machine["Start etcd on the replacement"])
    assert start["HostNotReadyError"][0] * start["HostNotReadyError"][1] >= 120
    restore_machine = tasks(load(ROOT / "statemachines" / "restore_cluster.asl.json"))
    for state in [*replace_machine.values(), *restore_machine.values()]:
        handled = retried(state)
        # transient errors that were in no list are retried now
        assert {"ComputeApiUnavailableError", "ConflictError", "SnapshotStreamError"} <= set(handled)
        # an AWS or compute API refusal (permissions, bad request) is not retried in place
        assert "AwsError" not in handled and "ComputeApiError" not in handled


def test_promotion_still_waits_about_90_seconds_for_the_learner_then_gives_up_safely() -> None:
    machine = tasks(load(ROOT / "statemachines" / "replace_member.asl.json"))
    promote = machine["Promote it once caught up"]
    interval, attempts, rate = retried(promote)["EtcdLearnerNotReadyError"]
    assert (interval, attempts, rate) == (2, 45, 1.0)
    assert promote["Catch"][0] == {
        "ErrorEquals": ["EtcdLearnerNotReadyError"],
        "ResultPath": "$.error",
        "Next": "Remove the learner that could not catch up",
    }


def test_error_names_are_unique_and_every_error_module_is_registered() -> None:
    for package in (etcdops, etcdops_local):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.startswith("etcdops.adapters.etcd.pb"):
                importlib.import_module(module.name)
    for name, cls in retries.error_classes().items():
        assert cls.__module__ in retries.ERROR_MODULES, f"{name}: add {cls.__module__} to ERROR_MODULES"
        assert name.endswith("Error")


def test_transience_is_declared_on_classes_never_decided_per_instance() -> None:
    # Step Functions matches errors by class name only: an instance-level flag cannot reach a Retry list
    offenders = []
    for path in (path for package in PACKAGES for path in package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            stored = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
            if stored and node.attr in ("retryable", "backoff"):  # type: ignore[attr-defined]
                offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.keyword) and node.arg == "retryable":
                offenders.append(f"{path.name}:{node.value.lineno}")
    assert offenders == []


def test_every_retryable_error_has_a_sane_backoff() -> None:
    for name, backoff in retries.transient_errors().items():
        assert backoff.interval_seconds >= 1 and backoff.max_attempts >= 1 and backoff.rate >= 1.0, name
        assert backoff.budget_seconds <= 900, f"{name}: retries outlast a Lambda invocation's 15 minutes"
    assert DEFAULT_BACKOFF.budget_seconds < 30


@pytest.mark.parametrize("runbook", [replace, restore], ids=["replace", "restore"])
def test_step_overrides_name_real_steps_and_transient_errors(runbook: Any) -> None:
    for step, overrides in runbook.STEP_RETRY.items():
        assert step in runbook.STEPS
        assert all(error.retryable for error in overrides)


def test_an_override_of_a_permanent_error_is_refused() -> None:
    with pytest.raises(ValueError, match="not transient"):
        retries.task_retriers({replace.UnsafeChangeError: DEFAULT_BACKOFF})


def test_a_task_without_a_failure_path_or_with_an_unknown_error_is_reported() -> None:
    definition = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Task", "Resource": "x", "Catch": [{"ErrorEquals": ["NoSuchError"], "Next": "B"}],
                  "Next": "B"},
            "B": {"Type": "Task", "Resource": "x", "Next": "C"},
            "C": {"Type": "Fail"},
            "D": {"Type": "Parallel", "Branches": [{"StartAt": "E", "States": {"E": {"Type": "Task", "End": True}}}],
                  "End": True},
        },
    }  # fmt: skip
    problems = retries.contract_problems(retries.with_retry_contract(definition))
    assert problems == [
        "'A' catches unknown error(s) NoSuchError",
        "'A' has no Catch for States.ALL (every failure must reach the failure path)",
        "'E' has no Catch for States.ALL (every failure must reach the failure path)",
    ]
    nested = retries.with_retry_contract(definition)["States"]["D"]["Branches"][0]["States"]["E"]
    assert nested["Retry"] == retries.task_retriers()


def test_the_check_command_fails_on_a_drifted_file_and_write_repairs_it(tmp_path: Path) -> None:
    drifted = load(ROOT / "statemachines" / "replace_member.asl.json")
    drifted["States"]["Start etcd on the replacement"]["Retry"] = []
    path = tmp_path / "drifted.asl.json"
    path.write_text(retries.render(drifted))
    assert retries.main([str(path)]) == 1
    assert retries.main([str(path), "--write"]) == 0
    assert retries.main([str(path)]) == 0
    assert path.read_text() == (ROOT / "statemachines" / "replace_member.asl.json").read_text()


@pytest.mark.parametrize(
    ("code", "transient"),
    [("ThrottlingException", True), ("InternalServerError", True), ("AccessDeniedException", False),
     ("ParameterNotFound", False), ("ValidationException", False)],
)  # fmt: skip
def test_an_aws_failure_is_transient_or_not_by_its_class(code: str, transient: bool) -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from etcdops.adapters.awserrors import AwsError, AwsUnavailableError, aws_error
    from etcdops.adapters.compute.ec2 import _api_error
    from etcdops.domain.compute.errors import ComputeApiError, ComputeApiUnavailableError

    failure = ClientError({"Error": {"Code": code, "Message": "m"}}, "PutParameter")
    error = aws_error("writing", failure)
    assert isinstance(error, AwsError) and error.retryable is transient
    assert (type(error) is AwsUnavailableError) is transient and code in str(error)
    compute = _api_error("launching", failure)
    assert isinstance(compute, ComputeApiError) and (type(compute) is ComputeApiUnavailableError) is transient
    network = EndpointConnectionError(endpoint_url="https://ssm")
    assert type(aws_error("writing", network)) is AwsUnavailableError
    assert type(_api_error("launching", network)) is ComputeApiUnavailableError
