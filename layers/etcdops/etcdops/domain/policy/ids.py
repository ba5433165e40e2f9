"""Incident and notification ids: deterministic, and valid in an execution name with an attempt suffix."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from etcdops.domain.decisions import MAX_INCIDENT_ID_LENGTH, NotificationKind

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def utc(when: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _slug(text: str) -> str:
    return _UNSAFE_ID_CHARS.sub("-", text).strip("-_") or "x"


def _make_id(parts: Iterable[str], identity: str) -> str:
    """Join slugged ``parts`` and a digest of ``identity`` into an id that, with an attempt suffix,
    is a valid execution name (<= 76 characters)."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    head = "-".join(_slug(p) for p in parts)
    head = head[: MAX_INCIDENT_ID_LENGTH - len(digest) - 1].rstrip("-_")
    return f"{head}-{digest}" if head else digest


def incident_id(cluster: str, kind: str, first_failed_at: datetime, member_id: int | None = None) -> str:
    """The deterministic id of one incident: the same cluster, kind, member and streak start give
    the same id (so duplicate triggers start one execution per attempt); at most 76 chars of
    ``[A-Za-z0-9_-]``, so ``<id>-a<N>`` is a valid execution name.
    """
    start = utc(first_failed_at)
    subject = f"{member_id:x}" if member_id is not None else "cluster"
    identity = f"{cluster}|{kind}|{member_id}|{start.isoformat()}"
    return _make_id([cluster[:24], kind, subject, start.strftime("%Y%m%dT%H%M%SZ")], identity)


def notification_key(cluster: str, kind: NotificationKind, subject: str) -> str:
    return _make_id([cluster[:24], str(kind), subject[:20]], f"{cluster}|{kind}|{subject}")
