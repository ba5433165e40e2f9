"""Human approvals for runbooks: ask over SNS with signed, expiring links; decide exactly once.

A runbook's approval step is a Lambda task invoked with ``lambda:invoke.waitForTaskToken``.
:func:`request_approval` stores the task token under the execution's name and publishes one SNS
message saying what will happen, why, until when, with an approve link, a reject link and the
``etcdops approve``/``reject`` commands as a fallback; never the task token itself (``etcdops approval
show`` prints the ``aws stepfunctions send-task-success`` commands with it, for those with credentials).

A link is ``<base>/<action>?execution=..&action=..&expires=..&request=..&sig=..`` where ``sig`` is
HMAC-SHA256 (secret from Secrets Manager) over a canonical string of the four other values, checked
with :func:`hmac.compare_digest`. ``request`` names one approval request: when a retried approval
step asks again (new task token), links of the earlier request stop working.

:func:`decide_approval` records the decision with a conditional write first (the first use wins;
every later use raises :class:`AlreadyDecidedError` and calls Step Functions no more), then calls
``SendTaskSuccess`` / ``SendTaskFailure(error="ApprovalRejected")``.

The approval API (:func:`handle_api_request`): ``GET`` on a link verifies it and shows what will happen with
a confirm button, changing nothing (mail scanners and chat unfurlers fetch links on their own);
``POST`` to the same link decides. Errors map to HTTP status codes in :data:`HTTP_STATUS`, the one
place that does so.

Clients and the clock are arguments; nothing here reads the environment, except the two settings
classes that handlers call at the start of an invocation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Final, Literal, NamedTuple, cast
from urllib.parse import parse_qsl, quote, urlencode

from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from etcdops.adapters.aws import Notifier
from etcdops.adapters.awserrors import AwsError, AwsUnavailableError, aws_error, aws_error_code
from etcdops.adapters.state import Approval, ApprovalStore
from etcdops.domain.errors import APPROVAL_REJECTED, ConfigError, EtcdopsError, InvalidEventError, NotFoundError

__all__ = [
    "ACTIONS",
    "HTTP_STATUS",
    "AlreadyDecidedError",
    "ApprovalError",
    "ApprovalExpiredError",
    "ApprovalNotFoundError",
    "ApprovalRequest",
    "ApprovalRequestEvent",
    "ExpiredLinkError",
    "HttpResponse",
    "InvalidLinkError",
    "LinkSigner",
    "SigningSecretCache",
    "TaskTokenRejectedError",
    "VerifiedLink",
    "decide_approval",
    "execution_name",
    "handle_api_request",
    "http_status",
    "link_params",
    "request_approval",
    "send_task_commands",
    "sign_link",
    "verify_link",
]

Action = Literal["approve", "reject"]
ACTIONS: Final[tuple[Action, ...]] = ("approve", "reject")
REJECTED_ERROR: Final = APPROVAL_REJECTED
"""The ``error`` of SendTaskFailure on a rejection: the runbooks ``Catch`` it by this name."""
MIN_SECRET_BYTES: Final = 32
_LINK_FIELDS: Final = ("execution", "action", "expires", "request", "sig")
_CANONICAL_PREFIX: Final = "etcdops-approval-link-v1"
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
_SIG = re.compile(r"[A-Za-z0-9_-]{43}")
_TOKEN_GONE: Final = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})
_MAX_CAUSE: Final = 32768


# ---- errors -------------------------------------------------------------------------------


class ApprovalError(EtcdopsError):
    """An approval could not be requested or decided; the subclass says why."""


class InvalidLinkError(ApprovalError):
    """The link is malformed, altered, signed with another secret, or replaced by a newer request."""


class ExpiredLinkError(ApprovalError):
    """The link is genuine but its expiry has passed."""


class ApprovalExpiredError(ApprovalError):
    """The approval request has expired; the runbook will time out (nothing was sent)."""


class ApprovalNotFoundError(ApprovalError, NotFoundError):
    """No approval request is stored for this execution."""


class AlreadyDecidedError(ApprovalError):
    """The request was decided before; this use had no effect."""

    def __init__(self, approval: Approval) -> None:
        when = approval.decided_at.isoformat() if approval.decided_at else "earlier"
        super().__init__(
            f"execution {approval.execution} was already {_past(approval.decision)} by {approval.decided_by} at {when}"
        )
        self.approval = approval


class TaskTokenRejectedError(ApprovalError):
    """Step Functions no longer accepts the task token (timed out, finished, or unknown)."""


# ---- settings -----------------------------------------------------------------------------


class SigningSecretCache:
    """The link-signing secret, read from Secrets Manager on first use and kept for the life of
    the container (one instance per handler module; nothing is read at import)."""

    def __init__(self) -> None:
        self._secrets: dict[str, bytes] = {}

    def get(self, secrets_client: Any, secret_arn: str) -> bytes:
        if secret_arn not in self._secrets:
            try:
                value = secrets_client.get_secret_value(SecretId=secret_arn)["SecretString"]
            except (ClientError, BotoCoreError) as exc:
                if aws_error_code(exc) == "ResourceNotFoundException":
                    raise ConfigError(f"APPROVAL_SECRET_ARN: secret {secret_arn} does not exist") from None
                raise aws_error("reading the approval secret", exc) from None
            secret = value.encode()
            if len(secret) < MIN_SECRET_BYTES:
                raise ConfigError(f"APPROVAL_SECRET_ARN: the secret must be at least {MIN_SECRET_BYTES} bytes")
            self._secrets[secret_arn] = secret
        return self._secrets[secret_arn]


# ---- signed links -------------------------------------------------------------------------


class VerifiedLink(NamedTuple):
    execution: str
    action: Action
    request_id: str
    expires_at: datetime
    query: str
    """The link's query string, re-encoded (the confirm form posts back to it)."""


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _epoch(when: datetime) -> int:
    return int(_utc(when).timestamp())


def _signature(secret: bytes, execution: str, action: str, expires: str, request_id: str) -> str:
    canonical = "\n".join((_CANONICAL_PREFIX, execution, action, expires, request_id)).encode()
    digest = hmac.new(secret, canonical, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"approval secret: must be at least {MIN_SECRET_BYTES} bytes")


def _check_execution(execution: str) -> None:
    if not execution or len(execution) > 256 or any(ord(c) < 0x20 or c == "\x7f" for c in execution):
        raise InvalidLinkError("the link does not name a valid execution")


def sign_link(secret: bytes, execution: str, action: str, expires_at: datetime, request_id: str) -> str:
    """The query string of a link that ``action``\\ s request ``request_id`` of ``execution``
    until ``expires_at`` (to the second)."""
    _check_secret(secret)
    _check_execution(execution)
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    if not _REQUEST_ID.fullmatch(request_id):
        raise ValueError("request_id must be 32 lowercase hex digits")
    expires = str(_epoch(expires_at))
    sig = _signature(secret, execution, action, expires, request_id)
    values = (execution, action, expires, request_id, sig)
    return urlencode(list(zip(_LINK_FIELDS, values, strict=True)), quote_via=quote)


def verify_link(secret: bytes, params: Mapping[str, str], now: datetime) -> VerifiedLink:
    """Check a link's decoded query parameters: exactly the five fields, a signature that matches
    (compared in constant time), then the expiry. Altered or foreign → :class:`InvalidLinkError`;
    genuine but late → :class:`ExpiredLinkError`."""
    _check_secret(secret)
    if set(params) != set(_LINK_FIELDS):
        raise InvalidLinkError("the link is incomplete or has unexpected parameters")
    execution, action, expires, request_id, sig = (params[name] for name in _LINK_FIELDS)
    _check_execution(execution)
    if action not in ACTIONS or not _EXPIRES.fullmatch(expires) or not _REQUEST_ID.fullmatch(request_id):
        raise InvalidLinkError("the link is malformed")
    expected = _signature(secret, execution, action, expires, request_id)
    if not hmac.compare_digest(expected.encode(), sig.encode()) or not _SIG.fullmatch(sig):
        raise InvalidLinkError("the link's signature does not match: it was altered or not made by etcdops")
    expires_at = datetime.fromtimestamp(int(expires), tz=UTC)
    if _utc(now) >= expires_at:
        raise ExpiredLinkError(f"the link expired at {expires_at.isoformat()}")
    query = urlencode([(name, params[name]) for name in _LINK_FIELDS], quote_via=quote)
    return VerifiedLink(execution, cast(Action, action), request_id, expires_at, query)


@dataclass(frozen=True)
class LinkSigner:
    """Makes approve/reject URLs under ``base_url`` with one secret."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_secret(self.secret)

    def url(self, base_url: str, execution: str, action: Action, expires_at: datetime, request_id: str) -> str:
        return f"{base_url.rstrip('/')}/{action}?{sign_link(self.secret, execution, action, expires_at, request_id)}"

    def verify(self, params: Mapping[str, str], now: datetime) -> VerifiedLink:
        return verify_link(self.secret, params, now)


# ---- requesting ---------------------------------------------------------------------------


def execution_name(value: str) -> str:
    """An execution's name from its name or its ARN (``arn:aws:states:…:execution:MACHINE:NAME``)."""
    value = value.strip()
    if value.startswith("arn:") and ":execution:" in value:
        return value.rsplit(":", 1)[-1]
    return value


class ApprovalRequestEvent(BaseModel):
    """The Payload of a runbook's ``waitForTaskToken`` approval task. Fields beyond these are the
    runbook's details (``member_id``, ``backup_id``, …) and go into the summary."""

    model_config = ConfigDict(extra="allow")

    task_token: str = Field(min_length=1)
    execution: str = Field(min_length=1, max_length=256)
    execution_arn: str | None = None
    runbook: str = Field(min_length=1)
    cluster: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    summary: str | None = None
    expires_in_seconds: int | None = Field(default=None, gt=0, le=7 * 24 * 3600)

    def details(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


@dataclass(frozen=True)
class ApprovalRequest:
    """What a human is asked to approve: the change (``summary``), the policy's ``reason``, until when."""

    cluster: str
    execution: str
    runbook: str
    summary: str
    reason: str
    expires_at: datetime
    execution_arn: str | None = None

    @classmethod
    def from_event(cls, event: ApprovalRequestEvent, now: datetime, default_ttl_seconds: int) -> ApprovalRequest:
        ttl = event.expires_in_seconds or default_ttl_seconds
        return cls(
            cluster=event.cluster,
            execution=execution_name(event.execution),
            runbook=event.runbook,
            summary=event.summary or describe_change(event.runbook, event.cluster, event.details()),
            reason=event.reason,
            # links carry whole seconds: round down so the stored expiry never outlives a link
            expires_at=_utc(now + timedelta(seconds=ttl)).replace(microsecond=0),
            execution_arn=event.execution_arn,
        )


def describe_change(runbook: str, cluster: str, details: Mapping[str, Any]) -> str:
    """One sentence on what the runbook will do, from its details."""
    if runbook == "ReplaceMember":
        member = details.get("member_name") or "?"
        member_id = details.get("member_id")
        ident = f" (id {member_id:x})" if isinstance(member_id, int) else f" (id {member_id})" if member_id else ""
        return (
            f"Replace failed member {member}{ident} of etcd cluster {cluster}: remove it from the membership, "
            "start a new host that joins as a learner, promote it once caught up, and repoint clients."
        )
    if runbook == "RestoreCluster":
        backup = details.get("backup_id") or "the latest verified backup"
        return (
            f"Restore etcd cluster {cluster} from backup {backup}: stop the API servers, restore every member "
            "from the snapshot, start the cluster and the API servers again. Writes since the backup are lost."
        )
    extra = ", ".join(f"{k}={v}" for k, v in sorted(details.items()))
    return f"Run {runbook} on etcd cluster {cluster}" + (f" ({extra})" if extra else "") + "."


def _request_id(task_token: str) -> str:
    return hashlib.sha256(task_token.encode()).hexdigest()[:32]


def send_task_commands(task_token: str, by: str = "aws-cli") -> tuple[str, str]:
    """The exact AWS CLI commands that approve and reject with ``task_token``."""
    output = json.dumps({"approved": True, "by": by})
    approve = (
        f"aws stepfunctions send-task-success --task-token {shlex.quote(task_token)} "
        f"--task-output {shlex.quote(output)}"
    )
    reject = (
        f"aws stepfunctions send-task-failure --task-token {shlex.quote(task_token)} "
        f"--error {REJECTED_ERROR} --cause 'REASON'"
    )
    return approve, reject


def _past(decision: str | None) -> str:
    return {"approve": "approved", "reject": "rejected"}.get(decision or "", "decided")


def request_approval(
    request: ApprovalRequest,
    task_token: str,
    *,
    store: ApprovalStore,
    notifier: Notifier,
    signer: LinkSigner,
    base_url: str,
    now: datetime,
) -> dict[str, Any]:
    """Store the token for ``request.execution`` and publish one message asking for a decision.

    The same task token always gives the same request id, so a re-delivered invocation re-sends
    the same working links. The result carries no token and no link (it may be logged)."""
    if not request.expires_at > now:
        raise ApprovalExpiredError(f"approval for {request.execution} would expire before it is asked for")
    request_id = _request_id(task_token)
    store.save_approval(
        Approval(
            execution=request.execution,
            cluster=request.cluster,
            runbook=request.runbook,
            request_id=request_id,
            task_token=task_token,
            summary=request.summary,
            reason=request.reason,
            requested_at=now,
            expires_at=request.expires_at,
            execution_arn=request.execution_arn,
        )
    )
    approve_url = signer.url(base_url, request.execution, "approve", request.expires_at, request_id)
    reject_url = signer.url(base_url, request.execution, "reject", request.expires_at, request_id)
    minutes = max(1, round((request.expires_at - now).total_seconds() / 60))
    message = "\n".join(
        [
            f"etcdops asks for your approval: {request.runbook} on etcd cluster {request.cluster}.",
            "",
            f"What will happen: {request.summary}",
            f"Why: {request.reason}",
            f"Execution: {request.execution}" + (f" ({request.execution_arn})" if request.execution_arn else ""),
            f"Expires: {request.expires_at.isoformat()} (in about {minutes} min); after that the links stop "
            "working and the runbook fails safe when its wait times out.",
            "",
            f"Approve: {approve_url}",
            f"Reject:  {reject_url}",
            "",
            "Each link opens a page with a confirm button; the first decision counts, later ones have no effect.",
            "",
            "Or with AWS credentials, from a shell:",
            f"  etcdops approve {shlex.quote(request.execution)}",
            f"  etcdops reject {shlex.quote(request.execution)} --reason 'WHY'",
            f"or with Step Functions directly: `etcdops approval show {shlex.quote(request.execution)}` prints "
            "the send-task-success and send-task-failure commands (the task token is in the execution's history, "
            "in the input of the \"Wait for approval\" step; this message never carries it).",
        ]
    )
    notifier.publish(
        f"etcdops: approval needed: {request.runbook} on cluster {request.cluster}",
        message,
        {"cluster": request.cluster, "execution": request.execution, "runbook": request.runbook, "kind": "approval"},
    )
    return {
        "execution": request.execution,
        "cluster": request.cluster,
        "runbook": request.runbook,
        "request_id": request_id,
        "expires_at": request.expires_at.isoformat(),
        "published": True,
    }


# ---- deciding -----------------------------------------------------------------------------


def decide_approval(
    execution: str,
    action: Action,
    reason: str | None,
    *,
    store: ApprovalStore,
    sfn: Any,
    now: datetime,
    by: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Approve or reject ``execution``'s pending request, once.

    ``request_id`` (from a link) must be the current request's. The decision is recorded with a
    conditional write before Step Functions is called, so two clicks make one call. When the call
    fails in a way worth retrying the record is released again (:class:`AwsUnavailableError`);
    when Step Functions no longer knows the token, the decision stays recorded and
    :class:`TaskTokenRejectedError` is raised."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    name = execution_name(execution)
    approval = store.load_approval(name)
    if approval is None:
        raise ApprovalNotFoundError(f"no approval request for execution {name}")
    if request_id is not None and approval.request_id != request_id:
        raise InvalidLinkError(f"the link belongs to an earlier approval request of execution {name}")
    if approval.decision is not None:
        raise AlreadyDecidedError(approval)
    if approval.is_expired(now):
        raise ApprovalExpiredError(
            f"the approval request of execution {name} expired at {approval.expires_at.isoformat()}"
        )
    if action == "reject":
        reason = (reason or "").strip() or f"rejected by {by}"
    if not store.consume_approval(name, approval.request_id, action, by, reason, now):
        current = store.load_approval(name)
        if current is not None and current.request_id == approval.request_id and current.decision is not None:
            raise AlreadyDecidedError(current)
        raise InvalidLinkError(f"the approval request of execution {name} was replaced while deciding")
    decided_at = _utc(now)
    try:
        if action == "approve":
            output = {"approved": True, "by": by, "decided_at": decided_at.isoformat()}
            sfn.send_task_success(taskToken=approval.task_token, output=json.dumps(output))
        else:
            cause = (reason or "")[:_MAX_CAUSE]
            sfn.send_task_failure(taskToken=approval.task_token, error=REJECTED_ERROR, cause=cause)
    except (ClientError, BotoCoreError) as exc:
        code = aws_error_code(exc)
        if code in _TOKEN_GONE:
            raise TaskTokenRejectedError(
                f"Step Functions no longer waits for execution {name}'s approval ({code}); nothing changed"
            ) from None
        # the record is released again, so sending the decision once more is safe whatever the cause
        store.release_approval(name, approval.request_id, decided_at)
        raise AwsUnavailableError(f"sending the decision to Step Functions: {code or type(exc).__name__}") from None
    return {
        "execution": name,
        "cluster": approval.cluster,
        "runbook": approval.runbook,
        "decision": _past(action),
        "by": by,
        "decided_at": decided_at.isoformat(),
        "reason": reason,
    }


# ---- the approval API ---------------------------------------------------------------------

HTTP_STATUS: Final[tuple[tuple[type[EtcdopsError], int], ...]] = (
    (InvalidLinkError, 403),
    (ExpiredLinkError, 403),
    (ApprovalExpiredError, 403),
    (ApprovalNotFoundError, 404),
    (AlreadyDecidedError, 409),
    (TaskTokenRejectedError, 410),
    (InvalidEventError, 400),
    (AwsError, 503),
)
"""The one mapping from named errors to HTTP status codes; anything else is a 500."""


def http_status(exc: EtcdopsError) -> int:
    for error, status in HTTP_STATUS:
        if isinstance(exc, error):
            return status
    return 500


@dataclass(frozen=True)
class HttpResponse:
    status: int
    title: str
    body_html: str = ""

    def to_api_gateway(self) -> dict[str, Any]:
        page = (
            "<!doctype html><html><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\">"
            f"<title>etcdops: {html.escape(self.title)}</title></head>"
            f"<body style=\"font-family:sans-serif;max-width:40em;margin:2em auto\"><h1>{html.escape(self.title)}</h1>"
            f"{self.body_html}</body></html>"
        )
        return {
            "statusCode": self.status,
            "headers": {
                "Content-Type": "text/html; charset=utf-8",
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            },
            "body": page,
        }


_ERROR_TITLES: Final = {403: "Link not valid", 404: "Not found", 409: "Already decided", 410: "No longer waiting",
                        400: "Bad request", 503: "Try again", 500: "Something went wrong"}


def _error_response(exc: EtcdopsError) -> HttpResponse:
    status = http_status(exc)
    # named errors carry safe, human messages (no tokens, no secrets); anything unnamed says nothing
    text = str(exc) if status != 500 else "The decision could not be handled; nothing was changed."
    return HttpResponse(status, _ERROR_TITLES.get(status, "Error"), f"<p>{html.escape(text)}</p>")


def _p(label: str, value: str) -> str:
    return f"<p><b>{html.escape(label)}:</b> {html.escape(value)}</p>"


def link_params(raw_query: str) -> dict[str, str]:
    """A link's query string decoded, each field once (a repeated field makes it invalid)."""
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query), max_num_fields=8)
    except ValueError:
        raise InvalidLinkError("the link is malformed") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        raise InvalidLinkError("the link repeats a parameter")
    return params


FORM_FIELDS: Final = frozenset({"reason"})
"""What the confirm form posts (a reject form's reason; an approve form posts nothing)."""
_MAX_FORM_FIELDS: Final = 8


def form_reason(body: str) -> str | None:
    """The ``reason`` of a posted form, checked like a link: known fields only, each once, valid
    percent-encoded UTF-8. Anything else is refused (400), never half-read."""
    try:
        pairs = parse_qsl(
            body, keep_blank_values=True, strict_parsing=bool(body), max_num_fields=_MAX_FORM_FIELDS, errors="strict"
        )
    except ValueError:  # too many fields, a field without '=', bad percent-encoding or UTF-8
        raise InvalidEventError("the form is malformed (expected at most a 'reason' field)") from None
    names = [name for name, _ in pairs]
    unknown = sorted(set(names) - FORM_FIELDS)
    if unknown:
        raise InvalidEventError(f"the form has unknown field(s): {', '.join(unknown[:3])} (only 'reason' is accepted)")
    if len(names) != len(set(names)):
        raise InvalidEventError("the form repeats a field")
    return (dict(pairs).get("reason") or "").strip()[:1000] or None


def _form_body(request: APIGatewayProxyEventV2Model) -> str:
    body = request.body if isinstance(request.body, str) else ""
    if request.isBase64Encoded and body:
        try:
            return base64.b64decode(body, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise InvalidEventError("the form body is not valid base64 UTF-8") from None
    return body


def _client_ip(source: object) -> str:
    return str(source.network_address) if isinstance(source, IPv4Network | IPv6Network) else str(source)


def handle_api_request(
    request: APIGatewayProxyEventV2Model,
    *,
    signer: LinkSigner,
    store: ApprovalStore,
    sfn: Any,
    now: datetime,
) -> HttpResponse:
    """One request to the approval API (HTTP API, payload 2.0), named errors mapped to a status
    by :func:`http_status`, never a stack trace.

    ``GET /approve|/reject?<link>`` shows what will happen and a confirm button and changes
    nothing; ``POST`` to the same URL decides (a reject form may carry ``reason``)."""
    http = request.requestContext.http
    path_action = request.rawPath.rstrip("/").rsplit("/", 1)[-1]
    try:
        if path_action not in ACTIONS:
            raise ApprovalNotFoundError(f"no such page: /{path_action}")
        link = signer.verify(link_params(request.rawQueryString), now)
        if link.action != path_action:
            raise InvalidLinkError("the link's action does not match its path")
        if http.method == "GET":
            return _confirm_page(link, store=store, now=now)
        if http.method != "POST":
            raise InvalidEventError(f"method {http.method} is not allowed")
        reason = form_reason(_form_body(request))
        result = decide_approval(
            link.execution,
            link.action,
            reason,
            store=store,
            sfn=sfn,
            now=now,
            by=f"signed link from {_client_ip(http.sourceIp)}",
            request_id=link.request_id,
        )
    except EtcdopsError as exc:
        return _error_response(exc)
    return HttpResponse(
        200,
        f"Execution {result['decision']}",
        _p("Execution", result["execution"]) + _p("Cluster", result["cluster"]) + _p("By", result["by"])
        + (_p("Reason", result["reason"]) if result["reason"] else ""),
    )


def _confirm_page(link: VerifiedLink, *, store: ApprovalStore, now: datetime) -> HttpResponse:
    approval = store.load_approval(link.execution)
    if approval is None:
        raise ApprovalNotFoundError(f"no approval request for execution {link.execution}")
    if approval.request_id != link.request_id:
        raise InvalidLinkError(f"the link belongs to an earlier approval request of execution {link.execution}")
    if approval.decision is not None:
        raise AlreadyDecidedError(approval)
    if approval.is_expired(now):
        raise ApprovalExpiredError(f"the approval request expired at {approval.expires_at.isoformat()}")
    query = html.escape(link.query, quote=True)
    reason_field = (
        '<p><label>Reason (sent to the runbook):<br><textarea name="reason" rows="3" cols="50" maxlength="1000">'
        "</textarea></label></p>"
        if link.action == "reject"
        else ""
    )
    verb = "Approve" if link.action == "approve" else "Reject"
    body = (
        _p("What will happen", approval.summary)
        + _p("Why", approval.reason)
        + _p("Cluster", approval.cluster)
        + _p("Execution", f"{approval.execution} ({approval.runbook})")
        + _p("Expires", approval.expires_at.isoformat())
        + f'<form method="post" action="?{query}">{reason_field}<button type="submit">{verb}</button></form>'
    )
    return HttpResponse(200, f"{verb} {approval.runbook} on {approval.cluster}?", body)
