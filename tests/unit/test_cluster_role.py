"""A cluster's aws.role_arn: one STS AssumeRole per invocation under a session naming function and
cluster; a refusal is one line naming both, raised before anything of the cluster is touched."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from builders import trust_policy
from moto import mock_aws

from etcdops.adapters.aws import cluster_session, role_session_name
from etcdops.adapters.awserrors import AwsError
from etcdops.domain.config import ClusterConfig, parse_config
from etcdops.entrypoints.health_check import HealthAwsClients
from etcdops.entrypoints.jobs import AwsClients

ROLE = "arn:aws:iam::123456789012:role/etcdops-cluster-c2"


def config(**aws: str) -> ClusterConfig:
    document: dict[str, Any] = {"name": "c2", "endpoints": ["http://10.0.0.1:2379"], "plaintext": True}
    return parse_config({**document, **({"aws": aws} if aws else {})})


class Recording:
    """A session whose STS records the request and answers or refuses it."""

    def __init__(self, refuse: bool = False) -> None:
        self.requests: list[dict[str, Any]] = []
        self.refuse = refuse
        self.meta = type("Meta", (), {"region_name": "eu-west-1"})()

    def client(self, service: str) -> Any:
        assert service == "sts", service  # nothing of the cluster before the role is assumed
        return self

    def assume_role(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if self.refuse:
            message = f"User: x is not authorized to perform: sts:AssumeRole on\nresource: {ROLE}"
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": message}}, "AssumeRole")
        return {"Credentials": {"AccessKeyId": "AKIA", "SecretAccessKey": "s", "SessionToken": "t"}}


def test_the_role_is_assumed_once_under_a_session_naming_function_and_cluster() -> None:
    sts = Recording()
    session = cluster_session(sts, config(role_arn=ROLE, external_id="fleet-7"), "RunbookStep")
    assert sts.requests == [{"RoleArn": ROLE, "RoleSessionName": "etcdops-RunbookStep-c2", "DurationSeconds": 3600,
                             "ExternalId": "fleet-7"}]  # fmt: skip
    credentials = session.get_credentials()
    assert (credentials.access_key, credentials.token, session.region_name) == ("AKIA", "t", "eu-west-1")
    assert len(role_session_name("DeltaBackup", "c" * 40)) <= 64  # the longest names fit STS's 64 characters


def test_without_a_role_the_functions_own_clients_serve_the_cluster() -> None:
    sts = Recording()
    assert cluster_session(sts, config(), "HealthCheck") is sts
    health = HealthAwsClients(ssm=1, secrets=2, s3=3, ec2=4, stepfunctions=5, session=sts)
    jobs = AwsClients(ssm=1, secrets=2, s3=3, kms=4, session=sts)
    assert health.for_cluster(config()) is health and jobs.for_cluster(config(), "Backup") is jobs
    assert sts.requests == []


def test_a_refused_role_is_one_line_naming_cluster_and_role() -> None:
    jobs = AwsClients(ssm=None, secrets=None, s3=None, kms=None, session=Recording(refuse=True))
    with pytest.raises(AwsError) as refused:
        jobs.for_cluster(config(role_arn=ROLE), "Backup")
    message = str(refused.value)
    assert message.startswith(f"cluster c2: assuming aws.role_arn {ROLE}: AccessDenied: ") and "\n" not in message
    assert not refused.value.retryable


def test_against_the_emulated_sts_the_clients_act_as_the_assumed_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        session = boto3.session.Session(region_name="eu-west-1")
        trust = trust_policy({"AWS": "123456789012"})
        session.client("iam").create_role(RoleName="etcdops-cluster-c2", AssumeRolePolicyDocument=trust)
        health = HealthAwsClients.from_session(session).for_cluster(config(role_arn=ROLE))
        assumed = cluster_session(session, config(role_arn=ROLE), "HealthCheck").client("sts")
        arn = assumed.get_caller_identity()["Arn"]
        assert arn == "arn:aws:sts::123456789012:assumed-role/etcdops-cluster-c2/etcdops-HealthCheck-c2"
        assert health.ec2.meta.region_name == "eu-west-1" and health.ssm is not health.secrets
