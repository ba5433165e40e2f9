"""RotateCertificates' CA mode (``{"mode": "ca"}``): a new cluster CA in three phases, each rolled over the
members one at a time with the cluster healthy after each (invariant 23).

etcd never reloads its trusted CA file, so a trust change needs a restart; leaf certificates it reads on
every new connection. Phase 1: a new CA beside the old one, both trusted (a bundle) on every member, each
restarted in turn. Phase 2: the new CA issues; every member gets a new leaf certificate (no restart) and the
operator's client certificate is reissued. Phase 3 (approval first when the policy asks for it: clients
still holding certificates of the old CA are cut off): only the new CA trusted, each member restarted in
turn. The phase begun and finished is recorded beside the CA (``ComputeProvider.ca_rotation``), so a new
start continues from the recorded phase; every step converges when retried (invariant 7).
"""

from __future__ import annotations

from typing import Any

from etcdops.app.runbook import (
    ClusterNotReadyError,
    Document,
    PreflightFailedError,
    RunbookContext,
    RunbookError,
    asks_a_human,
    probe,
    start_again,
    stop_for_restart,
)
from etcdops.domain.compute.base import PreflightPlan
from etcdops.domain.upgrade import refusals

PHASES = {
    1: "create a new CA beside the old one and trust both on every member (a rolling restart)",
    2: "issue every member and the operator new certificates from the new CA (no restart)",
    3: "trust only the new CA on every member (a rolling restart): certificates of the old CA are refused",
}


class CaRotationRefusedError(RunbookError):
    """The cluster is in no state for a CA rotation phase; nothing was changed."""


def check_ca(ctx: RunbookContext, doc: Document) -> Document:
    """Every member healthy and no alarm, the preflight passed; the phase recorded beside the CA, from which
    this start goes on."""
    reasons = refusals(probe(ctx))
    if reasons:
        raise CaRotationRefusedError("not rotating the CA while " + "; ".join(reasons) + "; nothing was changed")
    recorded = ctx.compute.ca_rotation()
    # invariant 13: the host commands of the phases and every member host, before the first change
    members = tuple(sorted(h.name for h in ctx.compute.hosts()))
    plan = PreflightPlan(documents=("RenewCertificates", "StopEtcd", "StartEtcd"), commanded=members)
    findings = ctx.compute.preflight(plan)
    if findings:
        raise PreflightFailedError("RotateCertificates", findings)
    return {
        **doc,
        "ca_recorded": recorded,
        "ca_finished": recorded["finished"],
        "ca_phases": doc.get("ca_phases") or [],
    }


def next_phase(ctx: RunbookContext, doc: Document) -> Document:
    """The next phase, whether it waits for an approval first (phases 1 and 3, when the policy asks), or done."""
    phase = int(doc.get("ca_finished") or 0) + 1
    if phase > 3:
        return {**doc, "done": True, "ca_phase": None}
    ask = asks_a_human(ctx, doc)
    summary = f"CA rotation of etcd cluster {doc['cluster']}, phase {phase} of 3: {PHASES[phase]}." + (
        " Every client must trust the new CA and use a certificate of it before this." if phase == 3 else ""
    )
    return {
        **doc,
        "done": False,
        "ca_phase": phase,
        "phase_requires_approval": ask and phase in (1, 3),
        "approval_summary": summary,
    }


def begin_phase(ctx: RunbookContext, doc: Document) -> Document:
    """The phase's files (new CA, bundle, issuing CA, trust) prepared and recorded; its members in order."""
    ctx.compute.begin_ca_phase(int(doc["ca_phase"]))
    names = sorted(h.name for h in ctx.compute.hosts())
    return {**doc, "to_roll": names, "rolled": [], "rotated": [], "current": None}


def next_member(ctx: RunbookContext, doc: Document) -> Document:
    """The next member of this phase, once every member is healthy (the one just rolled included), or done."""
    left = [name for name in doc.get("to_roll") or [] if name not in set(doc.get("rolled") or [])]
    if not left:
        return {**doc, "members_done": True, "current": None}
    health = probe(ctx)
    reasons = refusals(health)
    if reasons:
        raise ClusterNotReadyError("not rolling the next member while " + "; ".join(reasons))
    member = next((m for m in health.members if m.name == left[0]), None)
    if member is None:
        raise RunbookError(f"member {left[0]} is not in the cluster any more; nothing further was changed")
    return {**doc, "members_done": False, "current": {"name": left[0], "id": f"{member.id:x}"}}


def roll_member(ctx: RunbookContext, doc: Document) -> Document:
    """Phases 1 and 3: a restart (invariant 16: only while the others are healthy); phase 2: a new leaf."""
    current = dict(doc["current"])
    host = ctx.compute.find(current["name"])
    if host is None:
        raise RunbookError(f"member {current['name']} has no host any more; nothing further was changed")
    if doc["ca_phase"] == 2:
        current["serial_after"] = ctx.compute.renew_certificates(host)
        current["started_at"] = ctx.now().isoformat()
    else:
        ctx.compute.fetch_certificates(host)  # the new trust in place before the restart loads it
        stop_for_restart(ctx, host, int(current["id"], 16))
        start_again(ctx, host, alone=len(doc.get("to_roll") or []) == 1)
    return {**doc, "current": current}


def confirm_member(ctx: RunbookContext, doc: Document) -> Document:
    """The member is healthy again (phase 2: and serves the new serial on both ports); next."""
    from etcdops.app.runbook.rotate import confirm_served, healthy_member

    if not doc.get("current"):
        return doc
    name = doc["current"]["name"]
    if doc["ca_phase"] == 2:
        doc = confirm_served(ctx, doc)
    else:
        healthy_member(probe(ctx), name)
    return {**doc, "current": None, "rolled": [*(doc.get("rolled") or []), name]}


def finish_phase(ctx: RunbookContext, doc: Document) -> Document:
    phase = int(doc["ca_phase"])
    ctx.compute.finish_ca_phase(phase)
    entry = {"phase": phase, "members": doc.get("rolled") or [], "at": ctx.now().isoformat()}
    return {**doc, "ca_finished": phase, "ca_phases": [*(doc.get("ca_phases") or []), entry]}


def report(doc: Document) -> str:
    lines = [
        f"  phase {p['phase']} ({PHASES[p['phase']]}): {', '.join(p['members'])}" for p in doc.get("ca_phases") or []
    ]
    return "\n".join(lines)


STEPS: dict[str, Any] = {
    "CheckCa": check_ca,
    "NextCaPhase": next_phase,
    "BeginCaPhase": begin_phase,
    "NextCaMember": next_member,
    "RollMember": roll_member,
    "ConfirmRolled": confirm_member,
    "FinishCaPhase": finish_phase,
}
