"""The local timer: fires the stack's scheduled functions and state machines, since moto's EventBridge
rules invoke nothing.

The schedules are read from template.yaml itself (each function's and state machine's ``Schedule``
events), with
``!Ref Parameter`` resolved to the parameter value in effect, or to a local override such as
``{"HealthCheckSchedule": "rate(10 seconds)"}``. Locally ``rate(N seconds)`` is accepted too (AWS
refuses it). Each firing sends the event EventBridge sends (the shape of events/backup_schedule.json)
from a background thread; a function never runs twice at once: a firing that finds the previous run
still going is skipped, as a one-at-a-time function would be. A state machine's firing starts an
execution with the event's constant ``Input``, as the rule's role (SAM's ``<rule>Role``), and is done
once the execution started (EventBridge does not wait for it either).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from etcdops.domain.errors import ConfigError
from etcdops_local.aws.iamtrust import EVENTS
from etcdops_local.aws.schedule_expressions import Cron, Rate, Timing, parse_schedule

__all__ = ["Cron", "Rate", "Timing", "parse_schedule"]  # in schedule_expressions, importable here

log = logging.getLogger("etcdops_local.aws.schedule")

Fire = Callable[[str, dict[str, Any]], Any]


# ---- the template's schedules -----------------------------------------------------------------------

_SCHEDULED_TYPES = frozenset({"AWS::Serverless::Function", "AWS::Serverless::StateMachine"})


@dataclass(frozen=True)
class Schedule:
    """One ``Schedule`` event of a function in the template, with its expression in effect."""

    function: str  # logical id of the function or state machine
    event: str  # name of the event in the function's Events
    expression: str
    timing: Timing
    rule: str  # logical id of the EventBridge rule SAM makes for it
    input: Any = None  # the event's constant Input, sent instead of the scheduled event


def template_schedules(
    template: Mapping[str, Any], parameters: Mapping[str, str], overrides: Mapping[str, str] | None = None
) -> list[Schedule]:
    """The enabled Schedule events of every function and state machine. ``overrides`` are keyed by
    parameter name (every ``!Ref`` to it) or by logical id (all of that resource's schedules)."""
    overrides = dict(overrides or {})
    values = {**parameters, **{k: v for k, v in overrides.items() if k in parameters}}
    found: list[Schedule] = []
    for function, resource in template["Resources"].items():
        if resource.get("Type") not in _SCHEDULED_TYPES:
            continue
        for name, event in ((resource.get("Properties") or {}).get("Events") or {}).items():
            if event.get("Type") != "Schedule":
                continue
            props = event.get("Properties") or {}
            if props.get("Enabled") is False or str(props.get("State", "ENABLED")).upper() == "DISABLED":
                continue
            where = f"{function}.Events.{name}.Schedule"
            raw = props.get("Schedule")
            if function in overrides:
                expression = overrides[function]
            elif isinstance(raw, str):
                expression = raw
            elif isinstance(raw, dict) and set(raw) == {"Ref"} and raw["Ref"] in values:
                expression = values[raw["Ref"]]
            else:
                raise ConfigError(f"{where}: {raw!r} is neither an expression nor a !Ref to a parameter")
            try:
                timing = parse_schedule(expression)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            raw_input = props.get("Input")
            constant = json.loads(_substituted(raw_input, values, f"{where}.Input")) if raw_input else None
            found.append(Schedule(function, name, expression, timing, f"{function}{name}", constant))
    return found


def _substituted(value: Any, values: Mapping[str, str], where: str) -> str:
    """A constant ``Input``: a string, or ``!Sub`` of one naming parameters only."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):

        def parameter(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise ConfigError(f"{where}: ${{{match.group(1)}}} is not a parameter")
            return values[match.group(1)]

        return re.sub(r"\$\{([A-Za-z0-9:]+)\}", parameter, value["Fn::Sub"])
    raise ConfigError(f"{where}: {value!r} is neither a string nor !Sub of one")


def scheduled_event(schedule: Schedule, at: datetime, *, region: str, account: str, rule_name: str) -> dict[str, Any]:
    """What EventBridge sends a Lambda target for a scheduled rule."""
    if schedule.input is not None:
        return dict(schedule.input) if isinstance(schedule.input, dict) else schedule.input
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule_name}"],
        "detail": {},
    }


# ---- the timer ---------------------------------------------------------------------------------------


@dataclass
class ScheduledRun:
    function: str
    scheduled: datetime
    started: float  # time.monotonic()
    ended: float | None = None
    ok: bool | None = None
    error: str | None = None  # the exception's class name
    result: Any = None
    event: dict[str, Any] = field(default_factory=dict)


class LocalScheduler:
    """Fires scheduled functions from a background thread until stopped.

    ``fire(logical_id, event)`` runs one invocation (for the local stack: ``localaws.invoke_async``, as
    EventBridge invokes asynchronously: retries and the OnFailure destination included); it raises when
    the invocation failed. Rate schedules first fire one period after ``start``.
    """

    def __init__(
        self,
        schedules: list[Schedule],
        fire: Fire,
        *,
        region: str,
        account: str,
        rule_names: Mapping[str, str] | None = None,
    ) -> None:
        self.schedules = schedules
        self.fire = fire
        self.region = region
        self.account = account
        self.rule_names = dict(rule_names or {})
        self.runs: list[ScheduledRun] = []
        self.skipped: dict[str, int] = {}
        self._busy: set[str] = set()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_stack(
        cls,
        stack: Any,
        overrides: Mapping[str, str] | None = None,
        *,
        template_path: Path | None = None,
        fire: Fire | None = None,
    ) -> LocalScheduler:
        """The schedules of a :class:`etcdops_local.aws.stack.LocalStack`'s template, firing its handlers in-process."""
        from etcdops_local.aws.stack import invoke_async, read_template

        template = read_template(Path(template_path or stack.template_path))
        schedules = template_schedules(template, stack.parameters, overrides)
        schedules = [s for s in schedules if s.function in stack.functions or s.function in stack.state_machines]
        roles = {s.function: stack.resources.get(f"{s.rule}Role") for s in schedules}

        def fire_target(target: str, event: dict[str, Any]) -> Any:
            if target in stack.state_machines:
                return start_scheduled_execution(stack, target, event, roles.get(target))
            return invoke_async(stack, target, event)

        return cls(
            schedules,
            fire or fire_target,
            region=stack.region,
            account=stack.account_id,
            rule_names={s.rule: stack.resources.get(s.rule, s.rule) for s in schedules},
        )

    def __enter__(self) -> LocalScheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="etcdops-local-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop firing; wait up to ``timeout`` for the runs in progress to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        deadline = time.monotonic() + timeout
        for worker in list(self._workers):
            worker.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        now = datetime.now(UTC)
        due = [s.timing.next_after(now) for s in self.schedules]
        while not self._stop.is_set() and due:
            index = min(range(len(due)), key=due.__getitem__)
            wait = (due[index] - datetime.now(UTC)).total_seconds()
            if wait > 0:
                self._stop.wait(min(wait, 60.0))
                continue
            schedule, at = self.schedules[index], due[index]
            due[index] = schedule.timing.next_after(max(at, datetime.now(UTC) - timedelta(seconds=1)))
            self._launch(schedule, at)

    def _launch(self, schedule: Schedule, at: datetime) -> None:
        with self._lock:
            if schedule.function in self._busy:
                self.skipped[schedule.function] = self.skipped.get(schedule.function, 0) + 1
                log.info("%s: still running, skipping the firing of %s", schedule.function, at.isoformat())
                return
            self._busy.add(schedule.function)
            rule = self.rule_names.get(schedule.rule, schedule.rule)
            run = ScheduledRun(
                schedule.function,
                at,
                time.monotonic(),
                event=scheduled_event(schedule, at, region=self.region, account=self.account, rule_name=rule),
            )
            self.runs.append(run)
            self._workers = [w for w in self._workers if w.is_alive()]
            worker = threading.Thread(target=self._run, args=(run,), name=f"scheduled-{schedule.function}", daemon=True)
            self._workers.append(worker)
        worker.start()

    def _run(self, run: ScheduledRun) -> None:
        try:
            run.result = self.fire(run.function, run.event)
            run.ok = True
        except Exception as exc:  # recorded and logged; the timer keeps going, as EventBridge would
            run.ok, run.error = False, getattr(exc, "error_type", None) or type(exc).__name__
            log.warning("scheduled %s failed: %s: %s", run.function, run.error, exc)
        finally:
            run.ended = time.monotonic()
            with self._lock:
                self._busy.discard(run.function)
                self._lock.notify_all()

    def wait_for(self, function: str, count: int, timeout: float) -> list[ScheduledRun]:
        """Wait until ``function`` has ``count`` finished runs (or ``timeout`` passed); its finished runs."""
        deadline = time.monotonic() + timeout

        def finished() -> list[ScheduledRun]:
            return [r for r in self.runs if r.function == function and r.ended is not None]

        with self._lock:
            while len(finished()) < count and time.monotonic() < deadline:
                self._lock.wait(max(0.0, min(0.5, deadline - time.monotonic())))
            return finished()


def start_scheduled_execution(stack: Any, machine: str, document: Any, role: str | None) -> str:
    """Start an execution of the stack's state machine ``machine`` as a schedule rule does: with the
    rule's role (SAM's ``<rule>Role``, whose ``states:StartExecution`` grant is checked) and a fresh
    execution name. Its ARN."""
    from etcdops_local.aws.stack import LocalAwsError, execution_name, require_running, start_execution

    if role is None:
        raise LocalAwsError(f"{machine}: its schedule rule has no role in the stack (SAM makes <rule>Role)")
    role_arn = role if role.startswith("arn:") else f"arn:aws:iam::{stack.account_id}:role/{role}"
    c = require_running().authorizer.role_credentials(role_arn, "events", EVENTS)
    session = boto3.session.Session(
        region_name=stack.region,
        aws_access_key_id=c.access_key_id,
        aws_secret_access_key=c.secret_access_key,
        aws_session_token=c.session_token,
    )
    sfn = session.client("stepfunctions")  # in this process: moto intercepts it, server mode or not
    return start_execution(sfn, stack.state_machines[machine], document, execution_name(machine[:40]))
