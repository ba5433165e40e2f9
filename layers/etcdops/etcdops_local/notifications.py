"""Reading back what the stack told its operators (the SNS topic's messages), from an SQS queue.

SNS keeps no copy of what it delivered and has no API to read it, so a copy must be subscribed: an
SQS queue on the stack's topic holds every message for the queue's retention period (4 days by
default, up to 14). :func:`read_queue` lists what the queue holds without consuming it (each
message it saw is made visible again at once), so reading twice shows the same messages.
The local stack subscribes such a queue to its emulated topic when it starts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error

HOLD_SECONDS = 30  # how long a message stays hidden while one read collects the queue's messages


@dataclass(frozen=True)
class Notification:
    sent_at: datetime
    subject: str
    message: str
    attributes: dict[str, str]
    message_id: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "sent_at": self.sent_at.isoformat()}


def subscribe_queue(sns: Any, sqs: Any, topic_arn: str, queue_name: str) -> str:
    """An SQS queue named ``queue_name`` subscribed to ``topic_arn`` (made if missing); its URL."""
    queue_url: str = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return queue_url


def from_body(body: str, message_id: str, sent_timestamp_ms: str | None) -> Notification:
    """A queue message as SNS delivered it: its JSON envelope, or (raw delivery) the message itself."""
    try:
        envelope = json.loads(body)
        if not isinstance(envelope, dict) or envelope.get("Type") != "Notification":
            raise ValueError("not an SNS envelope")
        return Notification(
            sent_at=datetime.fromisoformat(envelope["Timestamp"].replace("Z", "+00:00")),
            subject=envelope.get("Subject") or "",
            message=envelope.get("Message") or "",
            attributes={k: v.get("Value", "") for k, v in (envelope.get("MessageAttributes") or {}).items()},
            message_id=envelope.get("MessageId") or message_id,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        sent = datetime.fromtimestamp(int(sent_timestamp_ms) / 1000, UTC) if sent_timestamp_ms else datetime.now(UTC)
        return Notification(sent, "", body, {}, message_id)


def read_queue(sqs: Any, queue_url: str, *, wait_seconds: int = 1) -> list[Notification]:
    """Every message the queue holds, newest first, left in the queue."""
    seen: dict[str, Notification] = {}
    receipts: list[str] = []
    try:
        while True:
            batch = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=HOLD_SECONDS,
                WaitTimeSeconds=wait_seconds, AttributeNames=["SentTimestamp"],
            ).get("Messages", [])  # fmt: skip
            if not batch:
                break
            for m in batch:
                receipts.append(m["ReceiptHandle"])
                note = from_body(m["Body"], m["MessageId"], (m.get("Attributes") or {}).get("SentTimestamp"))
                seen.setdefault(note.message_id, note)
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(f"reading the queue {queue_url}", exc) from exc
    finally:
        _release(sqs, queue_url, receipts)
    return sorted(seen.values(), key=lambda n: n.sent_at, reverse=True)


def _release(sqs: Any, queue_url: str, receipts: list[str]) -> None:
    """Make the messages read visible again at once (best effort: they come back after HOLD_SECONDS anyway)."""
    for start in range(0, len(receipts), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0}
            for i, r in enumerate(receipts[start : start + 10])
        ]
        try:
            sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError):
            return
