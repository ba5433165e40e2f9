"""The local stack's health loop: the HealthCheck round on a local timer, in this process.

EventBridge schedules do not fire locally, so :func:`run_local_health_loop` runs
:func:`etcdops.app.healthcheck.run_health_round` on the local cluster (its ``cluster.yaml``) every
``interval``: by default ``rate(10 seconds)``; ``None`` takes the default of the template's
``HealthCheckSchedule`` parameter (what AWS runs). It keeps the streaks and incidents in an
:class:`~etcdops.adapters.state_memory.InMemoryStateStore`, collects SNS messages in a
:class:`~etcdops.adapters.aws.MemoryNotifier`, records ReplaceMember starts instead of running them, and
after each round writes ``<state dir>/health/last_round.json`` (the decision, its reason, the
metrics, what was done, the messages sent), which ``etcdops status --watch`` shows.

    python -m etcdops_local.health_loop [--state-dir .etcdops] [--schedule "rate(10 seconds)" | --template-schedule]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.backup.store import open_store
from etcdops.adapters.etcd.connect import client_for
from etcdops.adapters.health_aws import InstanceDirectory, RecordingReplaceStarter
from etcdops.adapters.healthmetrics import RecordingMetrics
from etcdops.adapters.state import StateStore
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.healthcheck import (
    HealthContext,
    HealthRoundResult,
    Trigger,
    TriggerKind,
    round_seeds,
    run_health_round,
)
from etcdops.domain.config import ClusterConfig, load_config, write_text_atomically
from etcdops.domain.errors import ConfigError, EtcdopsError

log = logging.getLogger("etcdops_local.health_loop")

LOCAL_HEALTH_SCHEDULE = "rate(10 seconds)"
TEMPLATE_PARAMETER = "HealthCheckSchedule"
LAST_ROUND = Path("health") / "last_round.json"
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"


class _TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (``!Ref``, ``!Sub`` ...) as plain values."""


def _any_tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_TemplateLoader.add_multi_constructor("!", _any_tag)


def template_health_schedule(template_path: Path = DEFAULT_TEMPLATE) -> str:
    """The default of the template's ``HealthCheckSchedule`` parameter (what AWS runs)."""
    try:
        document = yaml.load(template_path.read_text(), Loader=_TemplateLoader)  # a SafeLoader subclass
    except OSError as exc:
        raise ConfigError(f"template: cannot read {template_path}: {exc.strerror}") from None
    try:
        return str(document["Parameters"][TEMPLATE_PARAMETER]["Default"])
    except (KeyError, TypeError):
        raise ConfigError(f"template: {template_path} has no {TEMPLATE_PARAMETER} parameter with a default") from None


def schedule_seconds(expression: str) -> float:
    """Seconds between firings of ``rate(N unit)``; locally ``seconds`` are allowed (AWS refuses them)."""
    from etcdops_local.aws.schedule import Rate, parse_schedule

    timing = parse_schedule(expression)
    if not isinstance(timing, Rate):
        raise ConfigError(f"schedule: {expression!r}: the local health loop takes rate(N seconds|minutes|hours|days)")
    return float(timing.seconds)


def local_health_schedule(
    override: str | float | None = LOCAL_HEALTH_SCHEDULE, template_path: Path = DEFAULT_TEMPLATE
) -> tuple[str, float]:
    """(expression, seconds) in effect: ``override`` (an expression or seconds), else the template's."""
    if override is None:
        expression = template_health_schedule(template_path)
    elif isinstance(override, int | float):
        if override <= 0:
            raise ConfigError(f"schedule: the interval must be positive, got {override}")
        return f"every {override:g} s", float(override)
    else:
        expression = override
    return expression, schedule_seconds(expression)


def read_last_round(state_dir: Path) -> dict[str, Any] | None:
    """What the local health loop last wrote, or None if it never ran here."""
    path = state_dir / LAST_ROUND
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable: {exc}") from None
    return loaded


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(data, indent=2, default=str) + "\n")


@dataclass
class LocalHealthLoop:
    """What the loop keeps: its store, the messages it sent, the runs it would have started."""

    config: ClusterConfig
    state_dir: Path
    expression: str
    interval: float
    state: StateStore = field(default_factory=InMemoryStateStore)
    notifier: MemoryNotifier = field(default_factory=MemoryNotifier)
    replace: RecordingReplaceStarter = field(default_factory=RecordingReplaceStarter)
    metrics: RecordingMetrics = field(default_factory=RecordingMetrics)
    results: list[HealthRoundResult] = field(default_factory=list)

    def round(self, now: datetime | None = None) -> HealthRoundResult:
        """One round now, as the timer fires it; writes ``last_round.json``."""
        moment = now or datetime.now(UTC)
        sent_before = len(self.notifier.messages)
        try:  # the runbooks rewrite the endpoints after every membership change
            self.config = load_config(self.state_dir / "cluster.yaml")
        except ConfigError as exc:
            log.warning("cluster.yaml unreadable, using the configuration read before: %s", exc)
        backups = open_store(self.config.backup.destination) if self.config.backup else None
        deadline = self.config.health.probe_deadline_seconds
        seeds = round_seeds(self.config, self.state)
        with client_for(self.config, endpoints=seeds, timeout=deadline) as client:
            ctx = HealthContext(
                config=self.config,
                client=client,
                state=self.state,
                metrics=self.metrics,
                notifier=self.notifier,
                replace=self.replace,
                instances=InstanceDirectory(self.config),
                backups=backups,
            )
            trigger = Trigger(TriggerKind.SCHEDULE, f"local timer {self.expression}")
            result = run_health_round(ctx, trigger, moment)
        self.results = [*self.results[-99:], result]
        document = result.to_dict()
        document["decided_at"] = moment.isoformat()
        document["schedule"] = self.expression
        document["messages"] = [
            {"subject": subject, "message": message, "attributes": attributes}
            for subject, message, attributes in self.notifier.messages[sent_before:]
        ]
        document["replace_requests"] = self.replace.started
        _write_json(self.state_dir / LAST_ROUND, document)
        return result


def run_local_health_loop(
    state_dir: Path,
    interval: str | float | None = LOCAL_HEALTH_SCHEDULE,
    *,
    template_path: Path = DEFAULT_TEMPLATE,
    rounds: int | None = None,
    stop: threading.Event | None = None,
    on_round: Callable[[HealthRoundResult], None] | None = None,
) -> LocalHealthLoop:
    """Run HealthCheck rounds on the local cluster of ``state_dir`` every ``interval`` (an
    expression such as ``rate(10 seconds)``, seconds, or None for the template's schedule) until
    ``stop`` is set or ``rounds`` rounds ran. A failed round is logged and the timer goes on, as
    EventBridge would go on invoking."""
    config = load_config(state_dir / "cluster.yaml")
    expression, seconds = local_health_schedule(interval, template_path)
    loop = LocalHealthLoop(config, state_dir, expression, seconds)
    stop = stop or threading.Event()
    done = 0
    while not stop.is_set() and (rounds is None or done < rounds):
        started = datetime.now(UTC)
        try:
            result = loop.round(started)
        except EtcdopsError as exc:
            log.warning("health round failed: %s: %s", type(exc).__name__, exc)
        else:
            if on_round is not None:
                on_round(result)
        done += 1
        if rounds is not None and done >= rounds:
            break
        elapsed = (datetime.now(UTC) - started).total_seconds()
        stop.wait(max(0.0, seconds - elapsed))
    return loop


def _print_round(result: HealthRoundResult) -> None:
    decision = result.decision
    when = datetime.now(UTC).strftime("%H:%M:%S")
    if decision is None:
        print(f"{when} skipped: {result.skipped}", flush=True)
        return
    print(f"{when} {decision.action}: {decision.reason}", flush=True)
    for action in result.actions:
        print(f"{when}   {action}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etcdops_local.health_loop", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", default=os.environ.get("ETCDOPS_STATE_DIR") or ".etcdops")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--schedule", default=LOCAL_HEALTH_SCHEDULE, help="default: %(default)s")
    which.add_argument("--template-schedule", action="store_true", help="use template.yaml's HealthCheckSchedule")
    parser.add_argument("--rounds", type=int, help="stop after this many rounds (default: until Ctrl-C)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_local_health_loop(
            Path(args.state_dir),
            None if args.template_schedule else args.schedule,
            rounds=args.rounds,
            on_round=_print_round,
        )
    except EtcdopsError as exc:
        print(f"etcdops: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
