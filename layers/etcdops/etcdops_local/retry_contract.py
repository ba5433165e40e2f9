"""The one retry contract: which errors are transient, and every state machine's ``Retry`` lists, made from it.

Each error class declares whether it is transient (``retryable``) and how patiently it is retried in
place (``backoff``), in :mod:`etcdops.domain.errors` and the modules that define errors. A runbook may give
one of its steps more patience for an error (``STEP_RETRY`` in its module: "promote once caught up"
waits about 90 s for ``EtcdLearnerNotReadyError``). Nothing else decides.

:func:`with_retry_contract` rewrites the ``Retry`` list of every ``Task`` state of a state machine
from those declarations: one retrier per distinct backoff, the default one last together with
Lambda's own service errors. A unit test runs it over every ``statemachines/*.asl.json`` and
requires each file to equal its rewritten self, so a new error, a new step or a new runbook cannot
drift from the contract. To rewrite the files after changing a declaration::

    python -m etcdops_local.retry_contract --write statemachines/*.asl.json

:func:`contract_problems` checks the rest: every name in a ``Catch`` is a known error, and every
``Task`` catches ``States.ALL`` unless it leads straight to a ``Fail`` state.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from etcdops.domain.errors import APPROVAL_REJECTED, DEFAULT_BACKOFF, Backoff, EtcdopsError

ERROR_MODULES: tuple[str, ...] = (
    "etcdops.domain.errors",
    "etcdops.adapters.aws",
    "etcdops.adapters.awserrors",
    "etcdops.adapters.state",
    "etcdops.app.approval.errors",
    "etcdops.domain.compute.errors",
    "etcdops.domain.backup.errors",
    "etcdops.app.runbook",
    "etcdops.app.runbook.members",
    "etcdops.app.runbook.replace",
    "etcdops.app.runbook.restore",
    "etcdops.app.runbook.restore_validate",
    "etcdops.app.runbook.upgrade",
    "etcdops.app.runbook.maintain",
    "etcdops.app.runbook.drill",
    "etcdops.app.runbook.scale",
    "etcdops.app.runbook.rotate",
    "etcdops.app.runbook.rotate_ca",
    "etcdops_local.cluster.files",
    "etcdops_local.aws.invoke",
    "etcdops_local.aws.sandbox",
    "etcdops_local.aws.iampolicy",
    "etcdops_local.demo",
)
"""Every module that defines an error class (a unit test keeps this list complete)."""

LAMBDA_SERVICE_ERRORS: tuple[str, ...] = (
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ServiceException",
    "Lambda.TooManyRequestsException",
)
"""Errors of the Lambda service itself (not of our code): transient, retried with the default backoff."""

LAMBDA_RUNTIME_ERRORS: tuple[str, ...] = ("Lambda.Unknown", "Sandbox.Timedout")
"""The function's process died halfway through a step (a crash, out of memory) or hit its timeout: no
error class of ours reaches Step Functions. The step runs again, twice at most (invariant 7: every step
reads what is there before it changes it, so a second run finishes what the first left halfway)."""

RUNTIME_BACKOFF = Backoff(interval_seconds=5, max_attempts=2, rate=2.0)

STATES_ERRORS: frozenset[str] = frozenset(
    {
        "States.ALL",
        "States.Timeout",
        "States.HeartbeatTimeout",
        "States.TaskFailed",
        "States.Permissions",
        "States.Runtime",
        "States.DataLimitExceeded",
    }
)
RUNBOOK_PACKAGE = "etcdops.app.runbook"
StepRetry = Mapping[str, Mapping[type[EtcdopsError], Backoff]]


def error_classes() -> dict[str, type[EtcdopsError]]:
    """Every named error of the package, by class name (the name Step Functions sees)."""
    for module in ERROR_MODULES:
        importlib.import_module(module)
    found: dict[str, type[EtcdopsError]] = {}
    pending: list[type[EtcdopsError]] = [EtcdopsError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__module__.startswith("etcdops."):
            continue  # e.g. a test's own error class
        other = found.setdefault(cls.__name__, cls)
        if other is not cls:
            raise TypeError(f"two error classes are named {cls.__name__}: {other.__module__}, {cls.__module__}")
    return found


def transient_errors() -> dict[str, Backoff]:
    """The name and declared backoff of every transient error."""
    return {name: cls.backoff for name, cls in sorted(error_classes().items()) if cls.retryable}


def other_error_names() -> frozenset[str]:
    """Error names that are not classes but may be caught: Step Functions' own, and the approval's rejection."""
    return STATES_ERRORS | {APPROVAL_REJECTED, *LAMBDA_SERVICE_ERRORS, *LAMBDA_RUNTIME_ERRORS}


def step_retry(runbook: str) -> StepRetry:
    """The ``STEP_RETRY`` of runbook ``runbook`` (its module ``etcdops.app.runbook.<runbook>``)."""
    try:
        module = importlib.import_module(f"{RUNBOOK_PACKAGE}.{runbook}")
    except ModuleNotFoundError:
        raise KeyError(f"no runbook module {RUNBOOK_PACKAGE}.{runbook}") from None
    declared: StepRetry = getattr(module, "STEP_RETRY", {})
    return declared


def _retrier(names: Sequence[str], backoff: Backoff) -> dict[str, Any]:
    return {
        "ErrorEquals": list(names),
        "IntervalSeconds": backoff.interval_seconds,
        "MaxAttempts": backoff.max_attempts,
        "BackoffRate": backoff.rate,
    }


def task_retriers(overrides: Mapping[type[EtcdopsError], Backoff] | None = None) -> list[dict[str, Any]]:
    """The ``Retry`` list of one Task: every transient error with its backoff (or the step's
    override), grouped by backoff, the default group with Lambda's service errors, and last a
    function that died halfway (:data:`LAMBDA_RUNTIME_ERRORS`)."""
    transient = transient_errors()
    groups: dict[Backoff, list[str]] = {}
    for error in overrides or {}:
        if error.__name__ not in transient:
            raise ValueError(f"STEP_RETRY names {error.__name__}, which is not transient (retryable = False)")
    named = {error.__name__: backoff for error, backoff in (overrides or {}).items()}
    for name, backoff in transient.items():
        groups.setdefault(named.get(name, backoff), []).append(name)
    default = groups.pop(DEFAULT_BACKOFF, [])
    retriers = [_retrier(names, backoff) for backoff, names in sorted(groups.items(), key=lambda g: g[1])]
    retriers.append(_retrier([*default, *LAMBDA_SERVICE_ERRORS], DEFAULT_BACKOFF))
    retriers.append(_retrier(LAMBDA_RUNTIME_ERRORS, RUNTIME_BACKOFF))
    return retriers


def _states(definition: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any], Mapping[str, Any]]]:
    """(name, state, the States it belongs to) of every state, nested ones (Parallel, Map) included."""
    states: Mapping[str, Any] = definition.get("States") or {}
    for name, state in states.items():
        yield name, state, states
        for branch in state.get("Branches") or []:
            yield from _states(branch)
        for key in ("Iterator", "ItemProcessor"):
            if isinstance(state.get(key), dict):
                yield from _states(state[key])


def _overrides(state: Mapping[str, Any]) -> Mapping[type[EtcdopsError], Backoff]:
    payload = (state.get("Parameters") or {}).get("Payload") or {}
    runbook, step = payload.get("runbook"), payload.get("step")
    if not isinstance(runbook, str) or not isinstance(step, str):
        return {}
    return step_retry(runbook).get(step, {})


def with_retry_contract(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``definition`` whose every Task state retries exactly what the contract says."""
    rewritten = copy.deepcopy(dict(definition))
    for _name, state, _siblings in _states(rewritten):
        if state.get("Type") == "Task":
            state["Retry"] = task_retriers(_overrides(state))
    return rewritten


def contract_problems(definition: Mapping[str, Any]) -> list[str]:
    """What in ``definition`` breaks the contract beyond the Retry lists (empty: nothing)."""
    known = set(error_classes()) | other_error_names()
    problems: list[str] = []
    for name, state, siblings in _states(definition):
        if state.get("Type") != "Task":
            continue
        catches = state.get("Catch") or []
        for catcher in catches:
            unknown = [e for e in catcher.get("ErrorEquals", []) if e not in known]
            if unknown:
                problems.append(f"{name!r} catches unknown error(s) {', '.join(unknown)}")
        for retrier in state.get("Retry") or []:
            unknown = [e for e in retrier.get("ErrorEquals", []) if e not in known]
            if unknown:
                problems.append(f"{name!r} retries unknown error(s) {', '.join(unknown)}")
        caught_all = any("States.ALL" in c.get("ErrorEquals", []) for c in catches)
        leads_to_fail = (siblings.get(str(state.get("Next"))) or {}).get("Type") == "Fail"
        if not caught_all and not leads_to_fail:
            problems.append(f"{name!r} has no Catch for States.ALL (every failure must reach the failure path)")
    return problems


def render(definition: Mapping[str, Any]) -> str:
    """The file form of a definition (two-space JSON, as the files are kept)."""
    return json.dumps(definition, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etcdops_local.retry_contract", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="state machine definitions (*.asl.json)")
    parser.add_argument("--write", action="store_true", help="rewrite the files instead of checking them")
    args = parser.parse_args(argv)
    failed = False
    for path in args.files:
        text = path.read_text()
        expected = render(with_retry_contract(json.loads(text)))
        for problem in contract_problems(json.loads(expected)):
            print(f"{path}: {problem}", file=sys.stderr)
            failed = True
        if expected != text:
            if args.write:
                path.write_text(expected)
                print(f"{path}: Retry lists rewritten from the retry contract")
            else:
                print(f"{path}: Retry lists differ from the retry contract (run with --write)", file=sys.stderr)
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
