"""The steps of the RotateCertificates runbook: new member certificates, one member at a time.

etcd loads its certificate and key files on every new TLS connection (since 3.2), so a member's leaf
certificate is renewed without a restart: the compute provider issues a new one from the cluster CA and
puts it on the host (``renew_certificates``: the local stack's ``pki/<name>.crt``, the EC2 host's files
through the RenewCertificates document), then this runbook opens a fresh TLS handshake to the member's
client and peer URLs until both serve the new serial, and waits until the member is healthy before the
next one. Connections open before the change keep their session; the cluster never loses a member.

Started by hand (``etcdops runbook start rotate-certs``: every member) and by HealthCheck when a certificate
a member serves expires in fewer than ``certificates.renew_days`` days (``only_expiring``: those members).

Every step converges when retried (invariant 7): the members still to do come from the document, a member
renewed twice serves the second certificate and the check compares with the serial last issued.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from etcdops.app.runbook import (
    ClusterNotReadyError,
    Document,
    RunbookContext,
    RunbookError,
    asks_a_human,
    caught_and_released,
    caught_error,
    dispatch,
    locked,
    probe,
    publish_failure_once,
    publish_success_once,
    release_lock,
    require_configured_cluster,
    rotate_ca,
    timed,
)
from etcdops.app.runbook import preflight as checks
from etcdops.domain.compute.base import Host, PreflightPlan
from etcdops.domain.errors import Backoff, EtcdopsError
from etcdops.domain.health import ClusterHealth, MemberHealth
from etcdops.domain.runbook_documents import RotateDocument
from etcdops.domain.upgrade import refusals
from etcdops.domain.wording import count

LOCK_LEASE_SECONDS = 3600


class RotationRefusedError(RunbookError):
    """The cluster is in no state for a certificate rotation (a member unhealthy, an alarm); nothing was changed."""


_WAIT = Backoff(interval_seconds=2, max_attempts=30, rate=1.0)
STEP_RETRY: dict[str, dict[type[EtcdopsError], Backoff]] = {
    "ConfirmServed": {ClusterNotReadyError: _WAIT},
    "NextCaMember": {ClusterNotReadyError: _WAIT},
    "RollMember": {ClusterNotReadyError: _WAIT},
    "ConfirmRolled": {ClusterNotReadyError: _WAIT},
    "NextMember": {ClusterNotReadyError: _WAIT},
}
"""A member may take a moment to serve its new certificate, and to be healthy again."""


def _host(ctx: RunbookContext, name: str) -> Host:
    host = ctx.compute.find(name)
    if host is None:
        raise RunbookError(f"member {name} has no host any more; nothing further was changed")
    return host


def served_serial(ctx: RunbookContext, url: str) -> tuple[str, datetime]:
    """The serial (hex) and end of validity of the certificate ``url`` presents in a fresh TLS handshake."""
    from etcdops.adapters.pki import served_certificate

    tls = ctx.config.tls
    cert = served_certificate(
        url,
        timeout=ctx.config.health.probe_deadline_seconds,
        cert=tls.cert if tls and tls.cert else None,  # type: ignore[arg-type]
        key=tls.key if tls and tls.key else None,  # type: ignore[arg-type]
    )
    return f"{cert.serial_number:x}", cert.not_valid_after_utc


def _days_left(not_after: datetime, now: datetime) -> float:
    return round((not_after - now).total_seconds() / 86400, 2)


# ---- before the first change ------------------------------------------------------------------


def acquire_lock(ctx: RunbookContext, doc: Document) -> Document:
    """Invariant 2: one operation at a time, the same lock as every other runbook."""
    require_configured_cluster(ctx.config, doc)
    return locked(ctx, doc, LOCK_LEASE_SECONDS)


def _before(ctx: RunbookContext, member: MemberHealth) -> dict[str, Any]:
    serial, not_after = served_serial(ctx, member.client_urls[0])
    return {
        "id": f"{member.id:x}",
        "serial_before": serial,
        "not_after_before": not_after.isoformat(),
        "days_left_before": _days_left(not_after, ctx.now().astimezone(UTC)),
    }


def check_certificates(ctx: RunbookContext, doc: Document) -> Document:
    """Every member healthy and no alarm; the certificate each member serves now; which members to renew
    (every one, or with ``only_expiring`` those within ``certificates.renew_days`` of their expiry)."""
    started = time.monotonic()
    health = probe(ctx)
    reasons = refusals(health)
    if reasons:
        raise RotationRefusedError("not rotating certificates while " + "; ".join(reasons) + "; nothing was changed")
    members = {m.name: _before(ctx, m) for m in health.members if m.client_urls}
    renew_days = ctx.config.certificates.renew_days
    if doc.get("only_expiring"):
        chosen = sorted(name for name, m in members.items() if m["days_left_before"] < renew_days)
    else:
        chosen = sorted(members)
    listed = ", ".join(f"{name} ({members[name]['days_left_before']} days left)" for name in chosen)
    summary = (
        f"Renew the certificates of {count(len(chosen), 'member')} of etcd cluster {doc['cluster']} from its CA, one "
        f"member at a time: {listed or 'none'}. No member is restarted (etcd reads its certificate on every new "
        "connection)."
    )
    return timed(
        {
            **doc,
            "members": members,
            "to_rotate": chosen,
            "nothing_to_do": not chosen,
            "requires_approval": asks_a_human(ctx, doc),
            "approval_summary": summary,
            "rotated": doc.get("rotated") or [],
        },
        "check_certificates",
        started,
    )


def preflight(ctx: RunbookContext, doc: Document) -> Document:
    """Invariant 13: the host command and every member host to renew, before the first certificate changes."""
    started = time.monotonic()
    plan = PreflightPlan(documents=("RenewCertificates",), commanded=tuple(doc.get("to_rotate") or ()))
    findings = ctx.compute.preflight(plan)
    return checks.passed(ctx, doc, "RotateCertificates", findings, started)


# ---- member by member -------------------------------------------------------------------------


def healthy_member(health: ClusterHealth, name: str) -> MemberHealth:
    member = next((m for m in health.members if m.name == name), None)
    if member is None or not member.healthy or not health.leader:
        raise ClusterNotReadyError(f"member {name} is not healthy ({member.error if member else 'not listed'})")
    return member


def next_member(ctx: RunbookContext, doc: Document) -> Document:
    """The next member to renew, once every member is healthy (the one just renewed included), or done."""
    done = {r["name"] for r in doc.get("rotated") or []}
    left = [name for name in doc.get("to_rotate") or [] if name not in done]
    if not left:
        return {**doc, "done": True, "current": None}
    reasons = refusals(probe(ctx))
    if reasons:
        raise ClusterNotReadyError("not renewing the next member while " + "; ".join(reasons))
    return {**doc, "done": False, "current": {"name": left[0], "started_at": ctx.now().isoformat()}}


def renew_member(ctx: RunbookContext, doc: Document) -> Document:
    """A new certificate from the CA, written on the member's host; the serial it must serve."""
    current = dict(doc["current"])
    current["serial_after"] = ctx.compute.renew_certificates(_host(ctx, current["name"]))
    return {**doc, "current": current}


def confirm_served(ctx: RunbookContext, doc: Document) -> Document:
    """The member serves the new serial on its client and peer URLs (fresh handshakes), and is healthy."""
    if not doc.get("current"):
        return doc  # a retry after this step finished
    current = dict(doc["current"])
    name, serial = current["name"], current["serial_after"]
    member = healthy_member(probe(ctx), name)
    not_after = None
    for url in (*member.client_urls[:1], *member.peer_urls[:1]):
        try:
            served, not_after = served_serial(ctx, url)
        except EtcdopsError as exc:
            raise ClusterNotReadyError(f"member {name}: no TLS handshake with {url}: {exc}") from None
        if served != serial:
            raise ClusterNotReadyError(f"member {name} still serves certificate {served} on {url}, not {serial}")
    before = (doc.get("members") or {}).get(name, {})
    entry = {
        "name": name,
        "serial_before": before.get("serial_before"),
        "serial_after": serial,
        "not_after": not_after.isoformat() if not_after else None,
        "seconds": round((ctx.now() - datetime.fromisoformat(current["started_at"])).total_seconds(), 1),
    }
    rotated = [r for r in doc.get("rotated") or [] if r["name"] != name] + [entry]
    return {**doc, "rotated": rotated, "current": None}


# ---- the end ----------------------------------------------------------------------------------


def report(doc: Document) -> str:
    lines = [
        f"  {r['name']}: certificate {r['serial_before']} -> {r['serial_after']} (until {str(r['not_after'])[:10]})"
        for r in doc.get("rotated") or []
    ]
    done = {r["name"] for r in doc.get("rotated") or []}
    lines += [f"  {name}: not renewed" for name in doc.get("to_rotate") or [] if name not in done]
    return "\n".join(lines)


def notify_success(ctx: RunbookContext, doc: Document) -> Document:
    if doc.get("mode") == "ca":
        subject = f"etcdops: rotated the CA of {doc['cluster']}"
        body = f"Runbook {doc['execution']} rotated the cluster CA, phase by phase:\n{rotate_ca.report(doc)}"
    elif doc.get("nothing_to_do"):
        subject = f"etcdops: no certificate of {doc['cluster']} needed renewing"
        body = f"Runbook {doc['execution']} found no member certificate to renew and changed nothing."
    else:
        rotated = count(len(doc.get("rotated") or []), "member")
        subject = f"etcdops: renewed the certificates of {rotated} of {doc['cluster']}"
        body = f"Runbook {doc['execution']} renewed them one member at a time, none restarted:\n{report(doc)}"
    return publish_success_once(ctx, doc, "rotate-succeeded", subject, body)


def notify_failure(ctx: RunbookContext, doc: Document) -> Document:
    """The Catch path: what failed and which members serve a new certificate already; releases our lock."""
    error = caught_and_released(ctx, doc)
    return publish_failure_once(
        ctx,
        doc,
        "rotate-failed",
        f"etcdops: RotateCertificates FAILED for {doc.get('cluster')}",
        f"Runbook {doc.get('execution')} stopped: {caught_error(error)}\n"
        "Members renewed before it stopped (the others keep their certificates, all of the same CA):\n"
        f"{report(doc) or '  none'}"
        + (
            f"\nCA rotation phases finished (a new start continues after them):\n{rotate_ca.report(doc)}"
            if doc.get("mode") == "ca"
            else ""
        ),
    )


STEPS: dict[str, Any] = {
    "AcquireLock": acquire_lock,
    "CheckCertificates": check_certificates,
    "Preflight": preflight,
    "NextMember": next_member,
    "RenewMember": renew_member,
    "ConfirmServed": confirm_served,
    "ReleaseLock": release_lock,
    "NotifySuccess": notify_success,
    "NotifyFailure": notify_failure,
    **rotate_ca.STEPS,
}


def run_step(ctx: RunbookContext, step: str, doc: Document) -> Document:
    return dispatch(STEPS, ctx, step, doc, RotateDocument)
