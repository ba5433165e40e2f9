"""Approval links and decisions without AWS: signing, verifying, deciding once, the HTTP mapping."""

from __future__ import annotations

import hmac
import json
import string
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.awserrors import AwsError
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.approval import (
    AlreadyDecidedError,
    ApprovalExpiredError,
    ApprovalNotFoundError,
    ApprovalRequest,
    ApprovalRequestEvent,
    ExpiredLinkError,
    InvalidLinkError,
    LinkSigner,
    TaskTokenRejectedError,
    decide_approval,
    execution_name,
    http_status,
    link_params,
    request_approval,
    sign_link,
    verify_link,
)
from etcdops.app.approval import links as approval_links
from etcdops.domain.errors import ConfigError
from etcdops.entrypoints.events import parse_event
from etcdops.entrypoints.settings import RequestApprovalSettings

SECRET = b"k" * 32
OTHER_SECRET = b"j" * 32
T0 = datetime(2026, 11, 25, 20, 30, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=1)
RID = "0123456789abcdef0123456789abcdef"
BASE = "https://abc.execute-api.us-east-1.amazonaws.com"


def params(query: str) -> dict[str, str]:
    return link_params(query)


# ---- signing and verifying ----------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    query = sign_link(SECRET, "replace-prod-1", "approve", EXPIRES, RID)
    link = verify_link(SECRET, params(query), T0)
    assert (link.execution, link.action, link.request_id) == ("replace-prod-1", "approve", RID)
    assert link.expires_at == EXPIRES
    assert link.query == query


@pytest.mark.parametrize(
    ("field", "value"),
    [("execution", "replace-prod-2"), ("action", "reject"), ("expires", str(int(EXPIRES.timestamp()) + 3600)),
     ("request", "f" * 32), ("sig", "A" * 43)],
)
def test_altered_field_is_invalid(field: str, value: str) -> None:
    fields = params(sign_link(SECRET, "replace-prod-1", "approve", EXPIRES, RID))
    fields[field] = value
    with pytest.raises(InvalidLinkError):
        verify_link(SECRET, fields, T0)


def test_another_secret_missing_or_extra_fields_are_invalid() -> None:
    fields = params(sign_link(SECRET, "replace-prod-1", "approve", EXPIRES, RID))
    with pytest.raises(InvalidLinkError):
        verify_link(OTHER_SECRET, fields, T0)
    with pytest.raises(InvalidLinkError):
        verify_link(SECRET, {k: v for k, v in fields.items() if k != "sig"}, T0)
    with pytest.raises(InvalidLinkError):
        verify_link(SECRET, {**fields, "by": "mallory"}, T0)
    with pytest.raises(InvalidLinkError):
        link_params(sign_link(SECRET, "replace-prod-1", "approve", EXPIRES, RID) + "&action=approve")


def test_expired_link_is_expired_not_invalid() -> None:
    fields = params(sign_link(SECRET, "replace-prod-1", "approve", EXPIRES, RID))
    with pytest.raises(ExpiredLinkError):
        verify_link(SECRET, fields, EXPIRES)
    assert verify_link(SECRET, fields, EXPIRES - timedelta(seconds=1)).execution == "replace-prod-1"


def test_signature_is_checked_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(approval_links.hmac, "compare_digest", spy)
    fields = params(sign_link(SECRET, "replace-prod-1", "approve", EXPIRES, RID))
    verify_link(SECRET, fields, T0)
    with pytest.raises(InvalidLinkError):
        verify_link(SECRET, {**fields, "sig": "B" * 43}, T0)
    assert len(calls) == 2 and calls[0][1] == fields["sig"].encode() and calls[1][1] == b"B" * 43


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ConfigError):
        LinkSigner(b"short")


# SFN execution names: no whitespace, brackets, wildcards, or " # % \ ^ | ~ ` $ & , ; : /
NAME_CHARS = string.ascii_letters + string.digits + "-_.+=@!'()"
UNRESERVED = string.ascii_letters + string.digits + "-_."


@given(
    execution=st.text(NAME_CHARS, min_size=1, max_size=80),
    action=st.sampled_from(["approve", "reject"]),
    position=st.integers(min_value=0),
    replacement=st.characters(codec="utf-8", exclude_categories=("Cs",)),
)
def test_any_single_character_change_to_the_query_is_rejected(
    execution: str, action: str, position: int, replacement: str
) -> None:
    # Given a genuine link's query string
    query = sign_link(SECRET, execution, action, EXPIRES, RID)
    i = position % len(query)
    if query[i] == replacement:
        return
    changed = query[:i] + replacement + query[i + 1 :]
    # When one character is changed, then the link is refused, unless the change does not change
    # what the query means (e.g. the case of a %-escape's hex digits)
    try:
        decoded = link_params(changed)
    except InvalidLinkError:
        return
    if decoded == link_params(query):
        return
    with pytest.raises(InvalidLinkError):
        verify_link(SECRET, decoded, T0)


@given(
    execution=st.text(UNRESERVED, min_size=1, max_size=80),
    position=st.integers(min_value=0),
    replacement=st.characters(codec="utf-8", exclude_categories=("Cs",)),
)
def test_with_plain_names_every_single_character_change_is_rejected(
    execution: str, position: int, replacement: str
) -> None:
    # Execution names of plain characters need no %-escapes, so there is no harmless change at all
    query = sign_link(SECRET, execution, "approve", EXPIRES, RID)
    i = position % len(query)
    if query[i] == replacement:
        return
    changed = query[:i] + replacement + query[i + 1 :]
    with pytest.raises(InvalidLinkError):
        verify_link(SECRET, link_params(changed), T0)


def test_execution_name_from_arn() -> None:
    arn = "arn:aws:states:us-east-1:123456789012:execution:etcdops-ReplaceMember:replace-prod-1"
    assert execution_name(arn) == "replace-prod-1"
    assert execution_name(" replace-prod-1 ") == "replace-prod-1"


# ---- requesting ---------------------------------------------------------------------------


def event(**changes: Any) -> ApprovalRequestEvent:
    document = {
        "task_token": "TOKEN-abc/+=",
        "execution": "replace-prod-1",
        "runbook": "ReplaceMember",
        "cluster": "prod-etcd",
        "reason": "member etcd-2 failed 3 probes over 95 s",
        "member_id": 10276657743932975437,
        "member_name": "etcd-2",
        **changes,
    }
    return parse_event(document, ApprovalRequestEvent)


def test_request_stores_the_token_and_publishes_one_message() -> None:
    store, notifier = InMemoryStateStore(), MemoryNotifier()
    request = ApprovalRequest.from_event(event(), T0, 3600)
    result = request_approval(
        request, "TOKEN-abc/+=", store=store, notifier=notifier, signer=LinkSigner(SECRET), base_url=BASE, now=T0
    )
    assert "TOKEN" not in json.dumps(result) and "sig=" not in json.dumps(result)
    [(subject, message, attributes)] = notifier.messages
    assert subject == "etcdops: approval needed: ReplaceMember on cluster prod-etcd"
    assert attributes == {"cluster": "prod-etcd", "execution": "replace-prod-1", "runbook": "ReplaceMember",
                          "kind": "approval"}
    assert "What will happen: Replace failed member etcd-2 (id 8e9e05c52164694d) of etcd cluster prod-etcd" in message
    assert "Why: member etcd-2 failed 3 probes over 95 s" in message
    assert f"Expires: {EXPIRES.isoformat()}" in message
    # the message is a mail: it carries signed, single-use links, never the raw task token
    assert "TOKEN-abc" not in message and "etcdops approval show replace-prod-1" in message
    approve_url = next(line.split(" ", 1)[1] for line in message.splitlines() if line.startswith("Approve:"))
    parts = urlsplit(approve_url)
    assert parts.path == "/approve"
    link = verify_link(SECRET, dict(parse_qsl(parts.query)), T0)
    stored = store.load_approval("replace-prod-1")
    assert stored is not None and stored.task_token == "TOKEN-abc/+=" and stored.request_id == link.request_id


def test_the_same_token_gives_the_same_request_and_a_new_token_a_new_one() -> None:
    store, notifier = InMemoryStateStore(), MemoryNotifier()
    request = ApprovalRequest.from_event(event(), T0, 3600)
    kwargs: dict[str, Any] = {"store": store, "notifier": notifier, "signer": LinkSigner(SECRET), "base_url": BASE,
                              "now": T0}
    first = request_approval(request, "T1", **kwargs)
    again = request_approval(request, "T1", **kwargs)
    other = request_approval(request, "T2", **kwargs)
    assert first["request_id"] == again["request_id"] != other["request_id"]


def test_summary_for_a_restore_and_for_an_explicit_summary() -> None:
    restore = ApprovalRequest.from_event(event(runbook="RestoreCluster", backup_id="20261125T2000Z"), T0, 60)
    assert restore.summary.startswith("Restore etcd cluster prod-etcd from backup 20261125T2000Z")
    assert ApprovalRequest.from_event(event(summary="Do X"), T0, 60).summary == "Do X"
    assert ApprovalRequest.from_event(event(expires_in_seconds=90), T0, 60).expires_at == T0 + timedelta(seconds=90)


def test_settings_name_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="TOPIC_ARN, APPROVAL_SECRET_ARN, APPROVAL_BASE_URL"):
        RequestApprovalSettings.from_env({"TABLE_NAME": "t"})
    with pytest.raises(ConfigError, match="APPROVAL_BASE_URL: must start with https://"):
        RequestApprovalSettings.from_env(
            {"TABLE_NAME": "t", "TOPIC_ARN": "a", "APPROVAL_SECRET_ARN": "s", "APPROVAL_BASE_URL": "http://x"}
        )


# ---- deciding -----------------------------------------------------------------------------


class FakeSfn:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.error = error

    def send_task_success(self, **kwargs: Any) -> None:
        self.calls.append(("success", kwargs))
        if self.error:
            raise self.error

    def send_task_failure(self, **kwargs: Any) -> None:
        self.calls.append(("failure", kwargs))
        if self.error:
            raise self.error


def pending() -> InMemoryStateStore:
    store = InMemoryStateStore()
    request_approval(
        ApprovalRequest.from_event(event(), T0, 3600), "TOKEN", store=store, notifier=MemoryNotifier(),
        signer=LinkSigner(SECRET), base_url=BASE, now=T0,
    )
    return store


def test_approve_sends_success_once() -> None:
    store, sfn = pending(), FakeSfn()
    result = decide_approval("replace-prod-1", "approve", None, store=store, sfn=sfn, now=T0, by="alice")
    assert result["decision"] == "approved"
    [(kind, kwargs)] = sfn.calls
    assert kind == "success" and kwargs["taskToken"] == "TOKEN"
    assert json.loads(kwargs["output"])["approved"] is True and json.loads(kwargs["output"])["by"] == "alice"
    with pytest.raises(AlreadyDecidedError, match="already approved by alice"):
        decide_approval("replace-prod-1", "reject", "no", store=store, sfn=sfn, now=T0, by="bob")
    assert len(sfn.calls) == 1


def test_reject_sends_failure_with_the_reason() -> None:
    store, sfn = pending(), FakeSfn()
    decide_approval("replace-prod-1", "reject", "release freeze", store=store, sfn=sfn, now=T0, by="alice")
    assert sfn.calls == [("failure", {"taskToken": "TOKEN", "error": "ApprovalRejected", "cause": "release freeze"})]


def test_expired_unknown_and_stale_requests_call_nothing() -> None:
    store, sfn = pending(), FakeSfn()
    with pytest.raises(ApprovalExpiredError):
        decide_approval("replace-prod-1", "approve", None, store=store, sfn=sfn, now=EXPIRES, by="alice")
    with pytest.raises(ApprovalNotFoundError):
        decide_approval("replace-prod-9", "approve", None, store=store, sfn=sfn, now=T0, by="alice")
    with pytest.raises(InvalidLinkError):
        decide_approval("replace-prod-1", "approve", None, store=store, sfn=sfn, now=T0, by="a", request_id="f" * 32)
    assert sfn.calls == []


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}}, "SendTaskSuccess")


def test_token_gone_is_named_and_the_decision_stays_spent() -> None:
    store = pending()
    with pytest.raises(TaskTokenRejectedError):
        decide_approval("replace-prod-1", "approve", None, store=store, sfn=FakeSfn(client_error("TaskTimedOut")),
                        now=T0, by="alice")
    with pytest.raises(AlreadyDecidedError):
        decide_approval("replace-prod-1", "approve", None, store=store, sfn=FakeSfn(), now=T0, by="alice")


@pytest.mark.parametrize("error", [client_error("ThrottlingException"), EndpointConnectionError(endpoint_url="x")])
def test_transient_failure_releases_the_decision_for_a_retry(error: Exception) -> None:
    store = pending()
    with pytest.raises(AwsError) as failure:
        decide_approval("replace-prod-1", "approve", None, store=store, sfn=FakeSfn(error), now=T0, by="alice")
    assert failure.value.retryable
    sfn = FakeSfn()
    decide_approval("replace-prod-1", "approve", None, store=store, sfn=sfn, now=T0, by="alice")
    assert len(sfn.calls) == 1


def test_http_status_mapping() -> None:
    store = pending()
    approval = store.load_approval("replace-prod-1")
    assert approval is not None
    decided = replace(approval, decision="approve", decided_by="x", decided_at=T0)
    assert [
        http_status(e)
        for e in (
            InvalidLinkError("x"),
            ExpiredLinkError("x"),
            ApprovalExpiredError("x"),
            ApprovalNotFoundError("x"),
            AlreadyDecidedError(decided),
            TaskTokenRejectedError("x"),
            AwsError("x"),
            ConfigError("x"),
        )
    ] == [403, 403, 403, 404, 409, 410, 503, 500]


def test_sample_events_parse() -> None:
    from pathlib import Path

    from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model

    events = Path(__file__).resolve().parents[2] / "events"
    request = parse_event(json.loads((events / "approval_request.json").read_text()), ApprovalRequestEvent)
    assert request.details() == {"member_id": 10276657743932975437, "member_name": "etcd-2"}
    for name in ("approval_get.json", "approval_post.json"):
        api = parse_event(json.loads((events / name).read_text()), APIGatewayProxyEventV2Model)
        # the samples carry a placeholder signature: verifying them is refused, as it should be
        with pytest.raises(InvalidLinkError):
            verify_link(SECRET, link_params(api.rawQueryString), T0)


@pytest.mark.parametrize(
    ("body", "reason"),
    [("", None), ("reason=", None), ("reason=not+now", "not now"), ("reason=%C3%A9t%C3%A9", "été"),
     ("reason=" + "x" * 2000, "x" * 1000)],
)  # fmt: skip
def test_a_well_formed_form_gives_its_reason(body: str, reason: str | None) -> None:
    from etcdops.app.approval import form_reason

    assert form_reason(body) == reason


@pytest.mark.parametrize("body", ["reason=a&b=1&c=2&d=3&e=4", "reason=a&reason=b", "x=1", "reason", "reason=%FF"])
def test_a_malformed_form_is_a_named_error(body: str) -> None:
    from etcdops.app.approval import form_reason, http_status
    from etcdops.entrypoints.events import InvalidEventError

    with pytest.raises(InvalidEventError) as refused:
        form_reason(body)
    assert http_status(refused.value) == 400
