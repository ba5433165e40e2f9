"""IAM identity-policy evaluation as AWS does it (pure: documents in, decisions with reasons out)."""

from __future__ import annotations

from typing import Any

import pytest

from etcdops_local.aws.iam_coverage import coverage, of_these_policies
from etcdops_local.aws.iam_records import Record
from etcdops_local.aws.iampolicy import Call, PolicyError, evaluate, fingerprint, granted_actions, read_policy

KEY = "arn:aws:kms:us-east-1:123456789012:key/1234"
BUCKET = "arn:aws:s3:::backups"


def policy(*statements: dict[str, Any], name: str = "p") -> Any:
    return read_policy(name, {"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def allowed(policies: Any, action: str, resource: str, context: dict[str, list[str]] | None = None) -> bool:
    return evaluate(policies if isinstance(policies, list) else [policies], Call.of(action, resource, context)).allowed


def test_nothing_is_allowed_unless_a_statement_allows_it() -> None:
    decision = evaluate([policy(allow("s3:GetObject", f"{BUCKET}/*"))], Call.of("kms:Decrypt", KEY))

    assert not decision.allowed
    assert decision.reason == "no statement allows it (implicit deny)"


def test_action_and_resource_must_both_match() -> None:
    p = policy(allow("s3:GetObject", f"{BUCKET}/*"))

    assert allowed(p, "s3:GetObject", f"{BUCKET}/etcd/a.snapshot")
    assert not allowed(p, "s3:GetObject", "arn:aws:s3:::other/etcd/a.snapshot")
    assert not allowed(p, "s3:PutObject", f"{BUCKET}/etcd/a.snapshot")
    assert not allowed(p, "s3:ListBucket", BUCKET)  # the bucket is not bucket/*


def test_actions_ignore_case_and_resources_do_not() -> None:
    p = policy(allow("KMS:decrypt", "arn:aws:kms:*:123456789012:key/abc?"))

    assert allowed(p, "kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/abcd")
    assert not allowed(p, "kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/ABCD")
    assert not allowed(p, "kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/abcde")  # ? is one character


def test_an_explicit_deny_wins_and_says_which_statement() -> None:
    p = policy(allow("s3:*"), deny("s3:DeleteObject", f"{BUCKET}/*", Sid="KeepBackups"), name="backup")

    decision = evaluate([p], Call.of("s3:DeleteObject", f"{BUCKET}/x"))

    assert not decision.allowed
    assert decision.reason == "explicitly denied by backup[1] (KeepBackups) s3:DeleteObject"
    assert allowed(p, "s3:PutObject", f"{BUCKET}/x")


def test_not_action_and_not_resource() -> None:
    p = policy({"Effect": "Allow", "NotAction": "iam:*", "NotResource": f"{BUCKET}/secret/*"})

    assert allowed(p, "s3:GetObject", f"{BUCKET}/etcd/x")
    assert not allowed(p, "iam:PassRole", "arn:aws:iam::123456789012:role/r")
    assert not allowed(p, "s3:GetObject", f"{BUCKET}/secret/x")


def test_conditions_on_tags_as_aws_evaluates_them() -> None:
    by_tag = policy(
        allow("ec2:TerminateInstances", Condition={"StringEquals": {"aws:ResourceTag/etcdops:cluster": "prod"}})
    )
    instance = "arn:aws:ec2:us-east-1:123456789012:instance/i-1"

    assert allowed(by_tag, "ec2:TerminateInstances", instance, {"aws:ResourceTag/etcdops:cluster": ["prod"]})
    assert not allowed(by_tag, "ec2:TerminateInstances", instance, {"aws:ResourceTag/etcdops:cluster": ["dev"]})
    assert not allowed(by_tag, "ec2:TerminateInstances", instance)  # an untagged instance: the key is absent


def test_negated_if_exists_null_and_set_operators() -> None:
    instance = "arn:aws:ec2:us-east-1:123456789012:instance/i-1"
    not_prod = policy(allow("ec2:*", Condition={"StringNotEquals": {"aws:ResourceTag/env": "prod"}}))
    if_exists = policy(allow("ec2:*", Condition={"StringEqualsIfExists": {"aws:ResourceTag/env": "dev"}}))
    untagged = policy(allow("ec2:*", Condition={"Null": {"aws:ResourceTag/env": "true"}}))
    only_known_keys = policy(
        allow("ec2:CreateTags", Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}})
    )

    assert allowed(not_prod, "ec2:StopInstances", instance)  # absent: a negated operator holds
    assert not allowed(not_prod, "ec2:StopInstances", instance, {"aws:ResourceTag/env": ["prod"]})
    assert allowed(if_exists, "ec2:StopInstances", instance)
    assert not allowed(if_exists, "ec2:StopInstances", instance, {"aws:ResourceTag/env": ["prod"]})
    assert allowed(untagged, "ec2:StopInstances", instance)
    assert not allowed(untagged, "ec2:StopInstances", instance, {"aws:ResourceTag/env": ["x"]})
    assert allowed(only_known_keys, "ec2:CreateTags", instance, {"aws:TagKeys": ["a"]})
    assert not allowed(only_known_keys, "ec2:CreateTags", instance, {"aws:TagKeys": ["a", "c"]})


def test_pass_role_only_to_the_service_named() -> None:
    role = "arn:aws:iam::123456789012:role/etcdops-member"
    p = policy(allow("iam:PassRole", "arn:aws:iam::*:role/etcdops-*",
                     Condition={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}))  # fmt: skip

    assert allowed(p, "iam:PassRole", role, {"iam:PassedToService": ["ec2.amazonaws.com"]})
    assert not allowed(p, "iam:PassRole", role, {"iam:PassedToService": ["lambda.amazonaws.com"]})
    assert not allowed(p, "iam:PassRole", "arn:aws:iam::123456789012:role/other")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"Statement": [{"Effect": "Maybe", "Action": "s3:*", "Resource": "*"}]},
            "p[0]: Effect must be Allow or Deny, got 'Maybe'",
        ),
        ({"Statement": [{"Effect": "Allow", "Resource": "*"}]}, "p[0]: exactly one of Action and NotAction"),
        ({"Statement": [{"Effect": "Allow", "Action": "s3:*"}]}, "p[0]: exactly one of Resource and NotResource"),
        (
            {"Statement": [allow("s3:*", Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}})]},
            "p[0]: condition operator 'DateGreaterThan' is not supported by the local evaluator",
        ),
        ({"Statement": "everything"}, "p: Statement must be a list or an object"),
    ],
)
def test_a_policy_the_evaluator_cannot_read_is_refused_by_name(document: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as refused:
        read_policy("p", document)

    assert str(refused.value) == message


def test_granted_actions_lists_every_allowed_action_of_every_statement() -> None:
    p = policy(allow(["s3:GetObject", "s3:ListBucket"], BUCKET, Sid="Read"), deny("s3:*"), allow("kms:Decrypt", KEY))

    assert [(g.statement, g.action, g.sid) for g, _ in granted_actions([p])] == [
        (0, "s3:GetObject", "Read"),
        (0, "s3:ListBucket", "Read"),
        (2, "kms:Decrypt", None),
    ]


# ---- the coverage check, both directions ----------------------------------------------------------------------


def record(action: str, allowed: bool, granted_by: tuple[tuple[str, int, str], ...] = (), **extra: Any) -> Record:
    return Record("Fn", action, extra.pop("resource", "*"), extra.pop("because", None), allowed, granted_by, **extra)


def test_coverage_passes_when_every_call_was_allowed_and_every_grant_used_or_explained() -> None:
    grants = {"Fn": [policy(allow(["s3:GetObject", "s3:PutObjectAcl"], f"{BUCKET}/*"), name="Fn0")]}
    records = [record("s3:GetObject", True, (("Fn0", 0, "s3:GetObject"),))]

    found = coverage(grants, records, {"Fn": {"s3:PutObjectAcl": "part of SAM's S3CrudPolicy"}})

    assert found.ok, found.report()
    assert "1 of 2 granted actions used by the tests" in found.report()


def test_coverage_fails_on_a_missing_permission_an_unused_grant_and_a_stale_reason() -> None:
    grants = {"Fn": [policy(allow(["s3:GetObject", "s3:DeleteObject"], f"{BUCKET}/*"), name="Fn0")]}
    records = [
        record("s3:GetObject", True, (("Fn0", 0, "s3:GetObject"),)),
        record("kms:Decrypt", False, resource=KEY, because="s3:GetObject of an SSE-KMS object"),
        record("ec2:AssociateAddress", False, modelled=False),
    ]

    found = coverage(grants, records, {"Fn": {"s3:GetObject": "not really", "sns:Publish": "gone"}})

    assert not found.ok
    report = found.report()
    assert f"MISSING  Fn: kms:Decrypt on {KEY} (needed by s3:GetObject of an SSE-KMS object)" in report
    assert "UNMODELLED  Fn: ec2:AssociateAddress" in report
    assert "UNUSED  Fn: Fn0[0] s3:DeleteObject" in report
    assert "STALE REASON  Fn: s3:GetObject: now used by a test" in report
    assert "STALE REASON  Fn: sns:Publish: not granted" in report


def test_a_denial_provoked_on_purpose_is_not_a_missing_permission() -> None:
    grants = {"Fn": [policy(allow("s3:GetObject", f"{BUCKET}/*"), name="Fn0")]}
    records = [
        record("s3:GetObject", True, (("Fn0", 0, "s3:GetObject"),)),
        record("iam:PassRole", False, resource="arn:aws:iam::1:role/other", expected=True),
    ]

    found = coverage(grants, records)

    assert found.ok, found.report()


def test_records_of_a_changed_copy_of_the_template_are_set_aside_by_their_policies() -> None:
    real = [policy(allow(["s3:GetObject", "kms:Decrypt"], "*", Sid="Read"), allow("sns:Publish"), name="Fn0")]
    taken_away = [policy(allow("s3:GetObject", "*", Sid="Read"), allow("sns:Publish"), name="Fn0")]
    elsewhere = allow(["s3:GetObject", "kms:Decrypt"], "arn:x", Sid="Read")
    other_resources = [policy(elsewhere, allow("sns:Publish"), name="Fn0")]
    assert fingerprint(real) != fingerprint(taken_away)
    assert fingerprint(real) == fingerprint(other_resources)  # resources name the stack: left out
    same = record("s3:GetObject", True, (("Fn0", 0, "s3:GetObject"),), policies=fingerprint(real))
    changed = record("kms:Decrypt", False, resource=KEY, policies=fingerprint(taken_away))
    test_only = Record("TestFunction", "ssm:GetParameter", "*", None, False, (), policies=fingerprint(real))

    kept, aside = of_these_policies([same, changed, test_only], {"Fn": real})

    assert (kept, aside) == ([same], [changed, test_only])


def test_a_reason_may_name_one_statement_by_its_sid() -> None:
    grants = {
        "Fn": [policy(allow("s3:GetObject", f"{BUCKET}/a/*", Sid="A"), allow("s3:GetObject", "x", Sid="B"), name="Fn0")]
    }
    records = [record("s3:GetObject", True, (("Fn0", 0, "s3:GetObject"),))]

    assert coverage(grants, records, {"Fn": {"B/s3:GetObject": "read by hosts only"}}).ok
    # the action alone names both statements, one of which is used: the reason is stale
    stale = coverage(grants, records, {"Fn": {"s3:GetObject": "read by hosts only"}})
    assert stale.stale_reasons == ["Fn: s3:GetObject: now used by a test"]
    assert coverage(grants, records, {"Fn": {"A/s3:GetObject": "x"}}).stale_reasons == [
        "Fn: A/s3:GetObject: now used by a test"
    ]
    unused = coverage(grants, records)
    assert [str(g) for _, g in unused.unused] == ["Fn0[1] (B) s3:GetObject"]
