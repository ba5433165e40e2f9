"""The last health decision ``etcdops status`` shows: HealthCheck's, read from the state table of the
deployed stack (``--stack-name``) or of the local autopilot (the emulated stack's HealthCheck)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from etcdops_local.cli.options import one_line
from etcdops_local.cli.options import state_dir as _state_dir


def last_round(args: argparse.Namespace, cluster: str) -> dict[str, Any] | None:
    """The last health decision: the deployed stack's, else the local autopilot's (None: no autopilot here)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return stack_last_round(args, cluster) or autopilot_last_round(_state_dir(args), cluster)
    except (ClientError, BotoCoreError) as exc:  # e.g. the local autopilot is gone: the probe still counts
        return {"decided_at": "-", "trigger": {"description": "autopilot"}, "decision": None,
                "skipped": f"cannot read the last decision: {one_line(str(exc))}", "actions": []}  # fmt: skip


def autopilot_last_round(state_dir: Path, cluster: str) -> dict[str, Any] | None:
    """The HealthCheck function's last decision, when the autopilot runs here."""
    if not (state_dir / "aws.json").exists():
        return None
    from etcdops_local.aws.stack import load_local_stack, local_boto3_session

    stack = load_local_stack(state_dir)
    return health_check_last_round(local_boto3_session(state_dir), stack.table or "", cluster, "autopilot")


def stack_last_round(args: argparse.Namespace, cluster: str) -> dict[str, Any] | None:
    """The deployed stack's (``--stack-name``) last HealthCheck decision, else None."""
    from etcdops_local.cli.stack import deployed_stack

    stack = deployed_stack(args)
    if stack is None:
        return None
    from botocore.exceptions import ClientError

    from etcdops.adapters.awserrors import AwsError

    table_name, where = stack.output("table"), f"stack {stack.name}"
    try:
        return health_check_last_round(stack.session, table_name, cluster, where)
    except (AwsError, ClientError) as exc:  # e.g. no read access to the state table: the probe still counts
        return {"decided_at": "-", "trigger": {"description": where}, "decision": None,
                "skipped": f"cannot read the state table of {where}: {one_line(str(exc))}", "actions": []}  # fmt: skip


def health_check_last_round(session: Any, table_name: str, cluster: str, where: str) -> dict[str, Any]:
    """The last decision HealthCheck wrote to the state table ``table_name``."""
    from etcdops.adapters.state_dynamodb import DynamoStateStore
    from etcdops.app.member_metrics import last_member_points

    store = DynamoStateStore(table_name, session.client("dynamodb"))
    last = store.load_last_decision(cluster)
    if last is None:
        return {"decided_at": "-", "trigger": {"description": where}, "decision": None,
                "skipped": "no health round yet", "actions": []}  # fmt: skip
    return {
        "decided_at": last.decided_at.isoformat(timespec="seconds"),
        "trigger": {"description": f"{where} HealthCheck"},
        "decision": last.decision.to_dict(),
        "actions": [],
        # the p99s etc. the last round published of each member, kept beside its metrics sample
        "metrics": {"Members": last_member_points(store.load_member_metrics(cluster))},
    }


def render_last_round(last: dict[str, Any] | None) -> str:
    if last is None:
        return "last decision: none yet (the autopilot runs with `etcdops local up`, unless --no-autopilot)"
    decision = last.get("decision")
    if not decision:
        return f"last round ({last.get('decided_at', '?')}): skipped: {last.get('skipped')}"
    lines = [f"last decision ({last.get('decided_at', '?')}, {last['trigger']['description']}): {decision['action']}"]
    lines.append(f"  reason: {decision['reason']}")
    lines += [f"  done: {action}" for action in last.get("actions", [])]
    members = (last.get("metrics") or {}).get("Members") or {}
    for member, values in sorted(members.items()):
        shown = [f"{label} {1000 * values[key]:.0f} ms" for key, label in _STARVATION if key in values]
        if shown:
            lines.append(f"  {member}: {', '.join(shown)} (p99 since the round before)")
    return "\n".join(lines)


_STARVATION = (("WalFsyncP99", "WAL fsync"), ("BackendCommitP99", "backend commit"), ("PeerRttP99", "peer round trip"))
