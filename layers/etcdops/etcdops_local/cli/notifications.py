"""``etcdops notifications [--since WHEN] [--queue-url URL]``: the messages the stack sent its operators.

Locally they come from the queue the local stack subscribed to its emulated topic when it started.
A deployed stack's topic keeps no copy (SNS has no read API): subscribe an SQS queue to it and name
the queue with ``--queue-url`` (README, "Reading the notifications").
"""

from __future__ import annotations

import argparse
import re
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

from etcdops.domain.errors import ConfigError
from etcdops.domain.wording import count
from etcdops_local.cli.format import emit, table
from etcdops_local.cli.options import AWS_OPTIONS
from etcdops_local.cli.options import state_dir as _state_dir

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_time(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an age (``90s``, ``30m``, ``2h``, ``1d``) or a time (ISO 8601; UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    age = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if age:
        return now - timedelta(seconds=float(age.group(1)) * _UNITS[age.group(2)])
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an age (90s, 30m, 2h, 1d) nor a time (2026-12-07T18:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _queue(args: argparse.Namespace) -> tuple[Any, str, int]:
    """The SQS client, the queue's URL, and how long to wait on an empty receive."""
    from etcdops_local.cli.stack import deployed_stack

    if args.queue_url:
        stack = deployed_stack(args)
        if stack is not None:
            return stack.session.client("sqs"), args.queue_url, 1
        import boto3

        return boto3.session.Session().client("sqs"), args.queue_url, 1
    stack = deployed_stack(args)
    if stack is not None:
        topic = stack.outputs.get("NotificationTopicArn", "its NotificationTopicArn output")
        raise ConfigError(
            f"stack {stack.name}: SNS keeps no copy of what it sent; subscribe an SQS queue to {topic} "
            "and pass --queue-url URL (README: Reading the notifications)"
        )
    state = _state_dir(args)
    if not (state / "aws.json").exists():
        raise ConfigError(
            f"no local stack with its autopilot in {state} (start one with `etcdops local up`, or pass "
            "--state-dir DIR); for a deployed stack pass --queue-url URL of a queue subscribed to its topic"
        )
    from etcdops_local.aws.stack import load_local_stack, local_boto3_session

    local = load_local_stack(state)
    if not local.notification_queue:
        raise ConfigError(f"the local stack in {state} was started without a notification queue: restart it "
                          "(`etcdops local down`, then `etcdops local up`)")  # fmt: skip
    return local_boto3_session(state).client("sqs"), local.notification_queue, 0


def cmd_notifications(args: argparse.Namespace) -> int:
    from etcdops_local.notifications import read_queue

    sqs, url, wait = _queue(args)
    found = [n for n in read_queue(sqs, url, wait_seconds=wait) if args.since is None or n.sent_at >= args.since]
    emit(args, [n.to_json() for n in found], lambda: notifications_text(found, args.full))
    return 0


def notifications_text(found: list[Any], full: bool, width: int = 100) -> str:
    if not found:
        return "no notifications"
    rows = [[n.sent_at.strftime("%Y-%m-%d %H:%M:%S"), n.attributes.get("kind", ""), n.subject] for n in found]
    lines = [table(["SENT (UTC)", "KIND", "SUBJECT"], rows)]
    if full:
        for n in found:
            lines += ["", f"== {n.sent_at.isoformat(timespec='seconds')} {n.subject}"]
            for paragraph in n.message.splitlines():
                lines += textwrap.wrap(paragraph, width=width) or [""]
    lines.append(f"{count(len(found), 'message')}, newest first" + ("" if full else "; --full shows their text"))
    return "\n".join(lines)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "notifications",
        help="the messages the stack sent to its SNS topic (locally: the emulated topic's)",
        parents=[common],
    )
    sub.add_argument("--since", type=since_time, metavar="WHEN", help="only newer ones: an age (30m, 2h, 1d) or a time")
    sub.add_argument("--full", action="store_true", help="also print each message's text")
    sub.add_argument(
        "--queue-url",
        metavar="URL",
        help="an SQS queue subscribed to the stack's topic (needed for a deployed stack: SNS keeps no copy)",
    )
    sub.set_defaults(handler=cmd_notifications, uses=AWS_OPTIONS)

