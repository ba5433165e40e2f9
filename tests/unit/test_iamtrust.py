"""Role trust policies as AWS decides them (etcdops_local.aws.iamtrust): a service assumes a role only when
the trust policy names it; an AWS principal only when named (directly or by its account) with every
condition holding (a wrong or missing sts:ExternalId is refused); an explicit Deny wins; a malformed
policy trusts nobody."""

from __future__ import annotations

import json
from typing import Any

import pytest

from etcdops_local.aws.iampolicy import PolicyError
from etcdops_local.aws.iamtrust import LAMBDA, STATES, Assumer, assume_role_context, decide_trust, read_trust_policy

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/etcdops-RunbookStepFunctionRole"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/etcdops-RunbookStepFunctionRole/etcdops-runbook-step"
CALLER = Assumer.of_arns(ACCOUNT, ROLE, SESSION)


def trust(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(principal: Any, **condition: Any) -> dict[str, Any]:
    statement = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    return {**statement, "Condition": condition} if condition else statement


def external_id(value: str | None) -> dict[str, list[str]]:
    return {"sts:ExternalId": [value]} if value is not None else {}


def test_a_service_assumes_a_role_only_when_its_trust_policy_names_that_service() -> None:
    lambda_role = trust(allow({"Service": [LAMBDA]}))
    assert decide_trust("r", lambda_role, Assumer.of_service(LAMBDA)).allowed
    refused = decide_trust("r", lambda_role, Assumer.of_service(STATES))
    assert not refused.allowed and refused.reason == f"its trust policy does not allow {STATES} to assume it"
    account_role = trust(allow({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}))
    assert not decide_trust("r", account_role, Assumer.of_service(LAMBDA)).allowed
    assert not decide_trust("r", lambda_role, CALLER).allowed  # a service's trust is not a principal's


@pytest.mark.parametrize(
    ("principal", "by_account"),
    [
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, True),
        ({"AWS": ACCOUNT}, True),
        ({"AWS": "*"}, True),
        ("*", True),
        ({"AWS": [f"arn:aws:iam::{ACCOUNT}:role/other", ROLE]}, False),
        ({"AWS": SESSION}, False),
    ],
)
def test_a_principal_is_trusted_by_its_account_or_by_name(principal: Any, by_account: bool) -> None:
    decision = decide_trust("r", json.dumps(trust(allow(principal))), CALLER)
    assert decision.allowed and decision.by_account == by_account, decision


@pytest.mark.parametrize(
    "principal",
    [
        {"AWS": "arn:aws:iam::222233334444:root"},  # another account
        {"AWS": "222233334444"},
        {"AWS": f"arn:aws:iam::{ACCOUNT}:role/etcdops-HealthCheckFunctionRole"},  # another role of the account
        {"AWS": f"arn:aws:iam::{ACCOUNT}:role/etcdops-*"},  # no wildcards in a principal's ARN
        {"Federated": "cognito-identity.amazonaws.com"},
    ],
)
def test_a_principal_not_named_is_refused(principal: Any) -> None:
    decision = decide_trust("r", trust(allow(principal)), CALLER)
    assert not decision.allowed and "does not allow" in decision.reason


@pytest.mark.parametrize(
    ("sent", "allowed"), [("fleet-7", True), ("fleet-8", False), (None, False), ("FLEET-7", False)]
)
def test_an_external_id_the_trust_policy_asks_for_must_be_sent_exactly(sent: str | None, allowed: bool) -> None:
    policy = trust(allow({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, StringEquals={"sts:ExternalId": "fleet-7"}))
    assert decide_trust("r", policy, CALLER, external_id(sent)).allowed == allowed


def test_conditions_on_the_callers_arn_and_session_name_are_decided_on_the_request() -> None:
    policy = trust(allow({"AWS": ACCOUNT}, ArnLike={"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/etcdops-*"},
                         StringLike={"sts:RoleSessionName": "etcdops-*-c2"}))  # fmt: skip
    context = assume_role_context(CALLER, {"RoleArn": "r", "RoleSessionName": "etcdops-RunbookStep-c2"})
    assert context == {"aws:PrincipalArn": [ROLE], "aws:PrincipalAccount": [ACCOUNT],
                       "sts:RoleSessionName": ["etcdops-RunbookStep-c2"]}  # fmt: skip
    assert decide_trust("r", policy, CALLER, context).allowed
    assert not decide_trust("r", policy, CALLER, {**context, "sts:RoleSessionName": ["etcdops-RunbookStep-c3"]}).allowed
    stranger = Assumer.of_arns(ACCOUNT, f"arn:aws:iam::{ACCOUNT}:role/admin")
    assert not decide_trust("r", policy, stranger, {**context, "aws:PrincipalArn": [stranger.arns[0]]}).allowed
    assert assume_role_context(CALLER, {"ExternalId": "fleet-7"})["sts:ExternalId"] == ["fleet-7"]


def test_an_explicit_deny_wins_over_an_allow() -> None:
    policy = trust(
        allow({"AWS": ACCOUNT}),
        {"Sid": "NoRunbook", "Effect": "Deny", "Principal": {"AWS": ROLE}, "Action": "sts:*"},
    )
    decision = decide_trust("r", policy, CALLER)
    assert not decision.allowed
    assert decision.reason == f"its trust policy denies {SESSION} explicitly (r[1] (NoRunbook))"
    not_principal = trust(allow({"AWS": ACCOUNT}), {"Effect": "Deny", "NotPrincipal": {"AWS": SESSION},
                                                     "Action": "sts:AssumeRole"})  # fmt: skip
    assert decide_trust("r", not_principal, CALLER).allowed
    other = Assumer.of_arns(ACCOUNT, f"arn:aws:iam::{ACCOUNT}:role/x", f"arn:aws:sts::{ACCOUNT}:assumed-role/x/s")
    assert not decide_trust("r", not_principal, other).allowed


def test_a_statement_for_another_action_does_not_trust() -> None:
    policy = trust({"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:TagSession"})
    assert not decide_trust("r", policy, CALLER).allowed
    assert decide_trust("r", trust({"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "NotAction": "sts:TagSession"}),
                        CALLER).allowed  # fmt: skip


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("{}", "needs a Statement"),
        ({"Statement": []}, "needs a Statement"),
        ("not json", "is not JSON"),
        (trust({"Effect": "Allow", "Action": "sts:AssumeRole"}), "exactly one of Principal and NotPrincipal"),
        (trust({**allow({"AWS": ACCOUNT}), "Resource": "*"}), "has no Resource"),
        (trust(allow({"AWS": ACCOUNT}, StringEqualz={"sts:ExternalId": "x"})), "not supported"),
        (trust({**allow({"AWS": ACCOUNT}), "Effect": "Permit"}), "Effect must be Allow or Deny"),
        (trust(allow([ACCOUNT])), "Principal must be"),
    ],
)
def test_a_malformed_trust_policy_is_named_and_trusts_nobody(document: Any, says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        read_trust_policy("etcdops-cluster-c2", document)
    decision = decide_trust("etcdops-cluster-c2", document, CALLER)
    assert not decision.allowed and "its trust policy cannot be read: etcdops-cluster-c2" in decision.reason
