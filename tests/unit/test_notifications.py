"""`etcdops notifications`: the topic's messages read back from a queue subscribed to it, left there."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from etcdops.adapters.aws import SnsNotifier
from etcdops_local.cli.notifications import notifications_text, since_time
from etcdops_local.notifications import Notification, read_queue, subscribe_queue


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("sns"), boto3.client("sqs")


def test_every_message_sent_is_listed_newest_first_and_reading_leaves_them(aws) -> None:  # type: ignore[no-untyped-def]
    sns, sqs = aws
    topic = sns.create_topic(Name="etcdops-notifications")["TopicArn"]
    queue = subscribe_queue(sns, sqs, topic, "etcdops-notifications")
    notifier = SnsNotifier(sns, topic)
    for i in range(13):  # more than one receive can carry
        notifier.publish(f"etcdops: message {i:02d}", f"body {i}", {"cluster": "local", "kind": f"k{i}"})

    first = read_queue(sqs, queue, wait_seconds=0)
    second = read_queue(sqs, queue, wait_seconds=0)

    assert sorted(n.subject for n in first) == [f"etcdops: message {i:02d}" for i in range(13)]
    assert [n.message_id for n in second] == [n.message_id for n in first]  # nothing consumed
    assert [n.sent_at for n in first] == sorted((n.sent_at for n in first), reverse=True)
    assert {n.attributes["kind"] for n in first} == {f"k{i}" for i in range(13)}
    assert all(n.message == f"body {n.subject[-2:].lstrip('0') or '0'}" for n in first)


def test_a_raw_message_in_the_queue_is_listed_as_it_is(aws) -> None:  # type: ignore[no-untyped-def]
    _, sqs = aws
    queue = sqs.create_queue(QueueName="raw")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="not an SNS envelope")

    [note] = read_queue(sqs, queue, wait_seconds=0)

    assert (note.subject, note.message) == ("", "not an SNS envelope")
    assert abs(note.sent_at - datetime.now(UTC)) < timedelta(hours=1)


def test_since_takes_an_age_or_a_time() -> None:
    now = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)

    assert since_time("90s", now) == now - timedelta(seconds=90)
    assert since_time("2h", now) == now - timedelta(hours=2)
    assert since_time("1.5d", now) == now - timedelta(hours=36)
    assert since_time("2026-12-07T17:00:00", now) == datetime(2026, 12, 7, 17, tzinfo=UTC)  # UTC when no zone
    assert since_time("2026-12-07T18:00:00+01:00", now) == datetime(2026, 12, 7, 17, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="neither an age"):
        since_time("yesterday", now)


def test_the_listing_counts_in_words_and_wraps_the_text() -> None:
    sent = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
    one = Notification(sent, "etcdops: replaced member m2 of local", "word " * 30, {"kind": "replace-succeeded"}, "id1")

    assert notifications_text([], full=False) == "no notifications"
    assert notifications_text([one], full=False).splitlines() == [
        "SENT (UTC)           KIND               SUBJECT",
        "2026-12-07 18:00:00  replace-succeeded  etcdops: replaced member m2 of local",
        "1 message, newest first; --full shows their text",
    ]
    full = notifications_text([one, one], full=True, width=40).splitlines()
    body = [line for line in full[4:-1] if line and not line.startswith("== ")]
    assert full[-1] == "2 messages, newest first" and " ".join(body) == " ".join(["word"] * 60)
    assert max(len(line) for line in body) <= 40
