"""``etcdops status [--watch]``: the cluster's health, what its runbooks do now, and the last health decision.

Every read, and every refresh of the live screen, starts from the live membership (invariant 10):
the configuration is read again (the runbooks rewrite it after every membership change) and the
members seen in the refresh before are asked first, so a screen left open through replacements and
restores keeps showing the cluster as it is, under its current member names.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import ConfigError
from etcdops_local.cli.format import emit, human_bytes, table
from etcdops_local.cli.last_decision import (
    autopilot_last_round,
    health_check_last_round,
    last_round,
    render_last_round,
    stack_last_round,
)
from etcdops_local.cli.options import chosen_cluster, one_line, positive_seconds, resolve_config, stack_state_dir
from etcdops_local.cli.options import state_dir as _state_dir
from etcdops_local.cli.story import current_step, waiting_for_approval

__all__ = [  # what lives in cli/last_decision.py, still importable from here
    "autopilot_last_round",
    "health_check_last_round",
    "last_round",
    "render_last_round",
    "stack_last_round",
]


@dataclass(frozen=True)
class Runbooks:
    """Where a status read finds the runbooks: Step Functions, their state machines, the state table."""

    sfn: Any
    arns: dict[str, str]  # runbook -> state machine ARN
    store: Any | None  # a StateStore: the approval requests
    approve: Callable[[str], str] = lambda name: f"etcdops approve {name}"
    about: Callable[[str], bool] | None = None  # --cluster NAME: whether an execution (ARN) runs on it


@dataclass
class LiveScreen:
    """What ``status`` shows, one refresh at a time (``--watch`` refreshes it until Ctrl-C)."""

    load_config: Callable[[], ClusterConfig]
    deadline: float | None = None
    last_round: Callable[[str], dict[str, Any] | None] = lambda cluster: None
    runbooks: Callable[[], Runbooks | None] = lambda: None
    seen: list[str] = field(default_factory=list)  # the live members' client URLs, as last seen
    config: ClusterConfig | None = None
    footer: str = ""  # said under every refresh

    def refresh(self) -> dict[str, Any]:
        """Read the configuration again, probe the live membership, read the runbooks and the last
        decision: ``{"status", "runbooks", "last_round"}`` plus ``text``, the screen for people."""
        from etcdops.adapters.etcd.connect import client_for
        from etcdops.adapters.etcd.membership import merge_endpoints
        from etcdops.app.probe import health_to_dict, probe_cluster

        try:
            self.config = self.load_config()
        except ConfigError:  # e.g. read while it was being replaced: the one read before still seeds
            if self.config is None:
                raise
        config = self.config
        deadline = self.deadline or config.health.probe_deadline_seconds
        with client_for(config, endpoints=merge_endpoints(self.seen, config.endpoints), timeout=deadline) as client:
            health = probe_cluster(client, deadline=deadline)
        self.seen = merge_endpoints(*(m.client_urls for m in health.members if m.id)) or self.seen
        status = with_space(health_to_dict(health), config.health.quota_backend_bytes)
        activity = runbook_activity(self.runbooks())
        last = self.last_round(config.name)
        parts = [render_status(config.name, status), render_runbooks(activity), render_last_round(last), self.footer]
        text = "\n\n".join(p for p in parts if p)
        return {"status": status, "runbooks": activity, "last_round": last, "text": text}


def live_screen(args: argparse.Namespace) -> LiveScreen:
    return LiveScreen(
        load_config=lambda: resolve_config(args),
        deadline=args.deadline,
        last_round=lambda cluster: last_round(args, cluster),
        runbooks=lambda: runbooks_of(args),
        footer=env_hint(args) if args.watch else "",
    )


def env_hint(args: argparse.Namespace) -> str:
    """For the local stack's screen: the line that gives another terminal this etcdops and the
    stack's own etcdctl and etcdutl (absolute paths: it works from any directory)."""
    from etcdops_local.cli.stack import stack_name

    state = _state_dir(args).absolute()
    if stack_name(args) or args.config or not (state / "local.json").exists():
        return ""
    import shlex

    etcdops = shlex.quote(str(Path(sys.executable).parent / "etcdops"))
    command = f"{etcdops} local env --state-dir {shlex.quote(str(state))}"
    return f'in another terminal, eval "$({command})" puts etcdops, etcdctl and etcdutl of this stack on PATH'


def cmd_status(args: argparse.Namespace) -> int:
    if args.all:
        from etcdops_local.cli.fleet import cmd_status_all

        return cmd_status_all(args)
    screen = live_screen(args)
    if args.watch:
        return watch_status(args, screen)
    shown = screen.refresh()
    emit(args, shown["status"], lambda: shown["text"])
    return 0 if shown["status"]["has_quorum"] else 1


def watch_status(args: argparse.Namespace, screen: LiveScreen) -> int:
    """Refresh ``screen`` every ``--interval`` seconds until Ctrl-C."""
    import time

    clear = sys.stdout.isatty() and not args.json
    interrupted, restore = _interrupt_flag()
    try:
        while not interrupted:
            started = time.monotonic()
            shown = screen.refresh()
            if args.json:
                print(json.dumps({k: v for k, v in shown.items() if k != "text"}, default=str), flush=True)
            else:
                print(("\x1b[2J\x1b[H" if clear else "") + shown["text"] + "\n", flush=True)
            if not interrupted:
                time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    finally:
        restore()
    return 0


def _interrupt_flag() -> tuple[list[bool], Callable[[], object]]:
    """A SIGINT handler that raises KeyboardInterrupt as Python's does and also remembers the signal
    in the returned list (true once interrupted); the second value puts the previous handler back.
    Python swallows an exception raised while the main thread runs a finalizer or a gc callback
    ("Exception ignored in ..."; gRPC's channels and calls have finalizers that wait for a lock), so
    a Ctrl-C that lands there must still end the loop, after the round in flight (bounded by the
    probe deadline)."""
    import signal

    interrupted: list[bool] = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    return interrupted, lambda: signal.signal(signal.SIGINT, previous)


# ---- the runbooks, now ---------------------------------------------------------------------------


def runbooks_of(args: argparse.Namespace) -> Runbooks | None:
    """The runbooks ``runbook list`` reads (the deployed stack's, else the local autopilot's, else
    from ``ETCDOPS_*_STATE_MACHINE_ARN``) with the state table that holds their approval requests;
    None when there are none."""
    import os

    from etcdops.adapters.state_dynamodb import DynamoStateStore
    from etcdops_local.cli.runbook import approve_command, execution_cluster, operator_session
    from etcdops_local.cli.stack import deployed_stack

    try:
        session, arns = operator_session(args)
    except ConfigError:
        return None
    stack, state = deployed_stack(args), stack_state_dir(args)
    if stack is not None:
        table_name = stack.outputs.get("StateTableName")
    elif (state / "aws.json").exists():
        from etcdops_local.aws.stack import load_local_stack

        table_name = load_local_stack(state).table
    else:
        table_name = os.environ.get("ETCDOPS_TABLE", "").strip() or None
    store = DynamoStateStore(table_name, session.client("dynamodb")) if table_name else None
    sfn = session.client("stepfunctions")
    chosen = chosen_cluster(args) if getattr(args, "cluster", None) else None
    about = None if chosen is None else (lambda arn: execution_cluster(sfn, arn, args) == chosen)
    return Runbooks(sfn, arns, store, lambda name: approve_command(args, name), about)


def runbook_activity(runbooks: Runbooks | None) -> dict[str, Any] | None:
    """Every running execution (its step now, or the approval it waits for) and the newest one of
    any runbook with its outcome in words; None where no runbooks are known."""
    from botocore.exceptions import BotoCoreError, ClientError

    if runbooks is None:
        return None
    try:
        return _activity(runbooks)
    except (ClientError, BotoCoreError) as exc:  # the probe above still counts
        return {"running": [], "newest": None, "error": f"cannot read the runbooks: {one_line(str(exc))}"}


def _activity(runbooks: Runbooks) -> dict[str, Any]:
    from etcdops_local.aws.stack import execution_history

    sfn, newest, running = runbooks.sfn, None, []
    about = runbooks.about or (lambda arn: True)
    for runbook, arn in runbooks.arns.items():
        for execution in sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]:
            if about(execution["executionArn"]):
                steps = execution_history(sfn, execution["executionArn"])
                running.append(_running(runbooks, runbook, execution, steps))
        listed = sfn.list_executions(stateMachineArn=arn, maxResults=1 if runbooks.about is None else 100)
        for execution in (e for e in listed["executions"] if about(e["executionArn"])):
            if newest is None or execution["startDate"] > newest[1]["startDate"]:
                newest = (runbook, execution)
            break  # newest first: the first of this runbook that counts
    running.sort(key=lambda r: r["started"], reverse=True)
    if newest is None:
        return {"running": running, "newest": None}
    from etcdops_local.cli.runbook import show_data

    runbook, execution = newest
    data, _ = show_data(sfn, execution["executionArn"], runbooks.store, runbooks.approve)
    fields = ("name", "status", "started", "outcome")
    return {"running": running, "newest": {"runbook": runbook, **{k: data[k] for k in fields}}}


def _running(runbooks: Runbooks, runbook: str, execution: dict[str, Any], steps: list[Any]) -> dict[str, Any]:
    step = current_step(steps)
    entry: dict[str, Any] = {
        "runbook": runbook,
        "name": execution["name"],
        "started": execution["startDate"].isoformat(),
        "step": step.name if step else None,
        "waiting_for_approval": None,
    }
    if waiting_for_approval("RUNNING", steps):
        approval = runbooks.store.load_approval(execution["name"]) if runbooks.store else None
        entry["waiting_for_approval"] = {
            "what": approval.summary if approval else "the approval request is being sent",
            "approve": runbooks.approve(execution["name"]),
        }
    return entry


def render_runbooks(activity: dict[str, Any] | None) -> str:
    if activity is None:  # no autopilot here and no --stack-name: nothing to say
        return ""
    if activity.get("error"):
        return f"runbooks: {activity['error']}"
    lines = ["runbooks:"]
    for r in activity["running"]:
        wait = r["waiting_for_approval"]
        now = (
            f"waiting for approval: {wait['what']} — approve with `{wait['approve']}`"
            if wait
            else f"at step {r['step']!r}"
            if r["step"]
            else "starting"
        )
        lines.append(f"  {r['name']} ({r['runbook']}): {now}")
    newest = activity["newest"]
    if newest is None:
        lines.append("  none has run yet")
    elif not activity["running"] or newest["status"] != "RUNNING":
        lines.append(f"  newest: {newest['name']} ({newest['runbook']}) {newest['status']}: {newest['outcome']}")
    return "\n".join(lines)


# ---- the cluster ---------------------------------------------------------------------------------


def with_space(status: dict[str, Any], quota_bytes: int) -> dict[str, Any]:
    """``status`` with each member's ``fragmentation`` (the share of its file not in use: what a
    defragmentation gives back) and ``quota_used`` (its file's share of ``health.quota_backend_bytes``:
    etcd refuses writes at 1), ratios or None where the member did not say."""
    from etcdops.domain.maintenance import fragmented_ratio

    for m in status["members"]:
        size, used = m["db_size"], m["db_size_in_use"]
        m["fragmentation"] = round(fragmented_ratio(size, used), 4) if size and used is not None else None
        m["quota_used"] = round(size / quota_bytes, 4) if size is not None and quota_bytes > 0 else None
    status["quota_backend_bytes"] = quota_bytes
    return status


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.0f} %"



def render_status(name: str, data: dict[str, Any]) -> str:
    members = data["members"]
    healthy = sum(1 for m in members if m["healthy"] and not m["is_learner"])
    voters = sum(1 for m in members if not m["is_learner"])
    quorum = "QUORUM" if data["has_quorum"] else "NO QUORUM"
    lines = [
        f"cluster {name} ({data['cluster_id'] or 'unknown id'}): {quorum}, leader {data['leader'] or 'none'}, "
        f"{healthy}/{voters} voters healthy, quorum margin {data['quorum_margin']}, "
        f"cluster version {data.get('cluster_version') or 'unknown'}",
        "",
        table(
            ["NAME", "ID", "ROLE", "HEALTH", "VERSION", "DB SIZE", "IN USE", "FRAGMENTED", "QUOTA", "RAFT INDEX",
             "TERM", "ENDPOINT", "ERROR"],
            [
                [
                    m["name"] or "?",
                    m["id"],
                    "leader" if m["is_leader"] else "learner" if m["is_learner"] else "follower",
                    "healthy" if m["healthy"] else "UNHEALTHY",
                    m["version"],
                    human_bytes(m["db_size"]),
                    human_bytes(m["db_size_in_use"]),
                    _percent(m.get("fragmentation")),
                    _percent(m.get("quota_used")),
                    m["raft_index"],
                    m["raft_term"],
                    ",".join(m["client_urls"]),
                    m["error"],
                ]
                for m in members
            ],
        ),
    ]
    if data["alarms"]:
        lines += ["", "alarms: " + ", ".join(f"{a['alarm']} on {a['member_id']}" for a in data["alarms"])]
    if data["errors"]:
        lines += ["", *("note: " + e for e in data["errors"])]
    return "\n".join(lines)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    status = commands.add_parser("status", help="probe every member and show the cluster's health", parents=[common])
    status.add_argument(
        "--deadline", type=positive_seconds, help="probe deadline in seconds (default: from the config, 2 s)"
    )
    status.add_argument(
        "--watch",
        action="store_true",
        help="refresh until Ctrl-C, with the runbooks now and the last health decision (the stack's or the local "
        "autopilot's)",
    )
    status.add_argument(
        "--interval", type=positive_seconds, default=3.0, help="seconds between refreshes (default 3)"
    )
    status.add_argument("--all", action="store_true", help="one line per cluster of the local stack and its fleet")
    status.set_defaults(handler=cmd_status)
