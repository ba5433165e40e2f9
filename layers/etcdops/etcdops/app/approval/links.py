"""Signed, expiring approve/reject links (HMAC-SHA256 over a canonical string) and the secret they are
signed with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, cast
from urllib.parse import quote, urlencode

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error, aws_error_code
from etcdops.adapters.state import utc
from etcdops.app.approval.errors import ACTIONS, Action, ExpiredLinkError, InvalidLinkError
from etcdops.domain.errors import ConfigError

MIN_SECRET_BYTES: Final = 32
_LINK_FIELDS: Final = ("execution", "action", "expires", "request", "sig")
_CANONICAL_PREFIX: Final = "etcdops-approval-link-v1"
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
_SIG = re.compile(r"[A-Za-z0-9_-]{43}")


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


class VerifiedLink(NamedTuple):
    execution: str
    action: Action
    request_id: str
    expires_at: datetime
    query: str
    """The link's query string, re-encoded (the confirm form posts back to it)."""


def _epoch(when: datetime) -> int:
    return int(utc(when).timestamp())


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
    if utc(now) >= expires_at:
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
