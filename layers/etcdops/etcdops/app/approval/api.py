"""The approval API (HTTP API, payload 2.0): a link shows a confirm page, a POST to it decides."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Final
from urllib.parse import parse_qsl

from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model

from etcdops.adapters.awserrors import AwsError
from etcdops.adapters.state import ApprovalStore
from etcdops.app.approval.decide import decide_approval
from etcdops.app.approval.errors import (
    ACTIONS,
    AlreadyDecidedError,
    ApprovalExpiredError,
    ApprovalNotFoundError,
    ExpiredLinkError,
    InvalidLinkError,
    TaskTokenRejectedError,
)
from etcdops.app.approval.links import LinkSigner, VerifiedLink
from etcdops.domain.errors import EtcdopsError, InvalidEventError

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
            '<!doctype html><html><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width"><meta name="robots" content="noindex">'
            f"<title>etcdops: {html.escape(self.title)}</title></head>"
            f'<body style="font-family:sans-serif;max-width:40em;margin:2em auto"><h1>{html.escape(self.title)}</h1>'
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


_ERROR_TITLES: Final = {
    403: "Link not valid",
    404: "Not found",
    409: "Already decided",
    410: "No longer waiting",
    400: "Bad request",
    503: "Try again",
    500: "Something went wrong",
}


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
        _p("Execution", result["execution"])
        + _p("Cluster", result["cluster"])
        + _p("By", result["by"])
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
