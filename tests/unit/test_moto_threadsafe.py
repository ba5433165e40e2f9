"""moto's backends serving requests from several threads at once, as the local stack serves them
(:mod:`etcdops_local.aws.threadsafe`): a listing beside an addition of a new key is answered whole,
never ``RuntimeError: dictionary changed size during iteration`` (a DynamoDB Query beside a PutItem,
SSM GetParametersByPath beside a PutParameter, an IAM role lookup beside a CreateRole, SNS's
subscriptions of a topic beside a Subscribe)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from etcdops_local.aws import threadsafe

LAMBDA = {"Service": "lambda.amazonaws.com"}
ASSUMED = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": LAMBDA}
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [ASSUMED]})


@pytest.fixture
def switching_often() -> Iterator[None]:
    """Threads take turns every microsecond, not every 5 ms: a walk is interrupted far more often."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.session.Session]:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        undo = threadsafe.install()
        try:
            yield boto3.session.Session(region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
        finally:
            undo()


@pytest.mark.usefixtures("switching_often")
def test_listings_beside_additions_of_new_keys_are_answered_whole(session: boto3.session.Session) -> None:
    ddb, ssm, iam, sns = (session.client(service) for service in ("dynamodb", "ssm", "iam", "sns"))
    topic = sns.create_topic(Name="notices")["TopicArn"]
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    types = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}]
    ddb.create_table(TableName="t", KeySchema=keys, AttributeDefinitions=types, BillingMode="PAY_PER_REQUEST")
    for i in range(50):
        ddb.put_item(TableName="t", Item={"pk": {"S": f"old-{i}"}, "sk": {"S": "s"}})
        ssm.put_parameter(Name=f"/registry/old-{i}", Value="v", Type="String")
    iam.create_role(RoleName="reader", AssumeRolePolicyDocument=TRUST)
    additions = 60
    done = threading.Event()
    met: list[str] = []
    reads = 0

    def adder() -> None:  # new keys, as a runbook's lock, `cluster add` and a second stack add them
        writers = [session.client(service) for service in ("dynamodb", "ssm", "iam", "sns")]
        try:
            for i in range(additions):
                writers[0].put_item(TableName="t", Item={"pk": {"S": f"new-{i}"}, "sk": {"S": "s"}})
                writers[1].put_parameter(Name=f"/registry/new-{i}", Value="v", Type="String")
                writers[2].create_role(RoleName=f"role-{i}", AssumeRolePolicyDocument=TRUST)
                writers[3].subscribe(TopicArn=topic, Protocol="email", Endpoint=f"operator-{i}@example.com")
        finally:
            done.set()

    def read(call: Any) -> None:
        try:
            call()
        except Exception as exc:  # what a listing met, said by the assertion below
            met.append(f"{type(exc).__name__}: {exc}")

    adding = threading.Thread(target=adder)
    adding.start()
    while not done.is_set():
        read(lambda: ddb.query(TableName="t", KeyConditionExpression="pk = :p",
                               ExpressionAttributeValues={":p": {"S": "old-1"}}))  # fmt: skip
        read(lambda: ssm.get_parameters_by_path(Path="/registry", MaxResults=10))
        read(lambda: iam.get_role(RoleName="reader"))
        read(lambda: sns.list_subscriptions_by_topic(TopicArn=topic))
        reads += 1
    adding.join(timeout=120)

    assert met == [] and reads > 0
    assert ddb.scan(TableName="t", Select="COUNT")["Count"] == 50 + additions
    assert len(sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]) == additions
