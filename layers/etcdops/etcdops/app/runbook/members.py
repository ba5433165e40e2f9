"""Changing the membership one member at a time: the steps ReplaceMember and ScaleCluster share.

A new member joins the same way in both: its host is launched, it is added as a learner (never a second
one: at most one learner at a time), started, promoted once etcd says it caught up, and the cluster is
waited for until every voter is healthy; then the load balancer sends clients to it and the stored
configuration names the live members (invariant 10). A member leaves by removal (only while invariant 1
holds without it) and its host is retired. The documents these steps read and extend name the member
being added ``new_member`` and the member leaving ``old_member``.

Every step converges when retried (invariant 7): it reads the current membership and hosts before it
changes anything, so a retry after a timeout or a crash never adds twice or removes twice.
"""

from __future__ import annotations

import time
from typing import Any

from etcdops.adapters.etcd.client import Member
from etcdops.adapters.etcd.membership import merge_endpoints, record_membership
from etcdops.app.runbook import ClusterNotReadyError, Document, RunbookContext, RunbookError, probe, timed
from etcdops.domain.compute.base import Host
from etcdops.domain.errors import Backoff
from etcdops.domain.health import ClusterHealth
from etcdops.domain.policy import change_safety
from etcdops.domain.wording import count


class UnsafeChangeError(RunbookError):
    """Invariant 1 does not hold on a fresh probe: no membership change is made."""


class LearnerNotCaughtUpError(RunbookError):
    """The new learner did not catch up in time; it was removed again (invariant 6)."""


class SecondLearnerError(RunbookError):
    """Another learner is in the cluster: etcdops adds one member at a time and never a second learner."""


CATCH_UP = Backoff(interval_seconds=2, max_attempts=45, rate=1.0)
"""How long a promotion waits for the learner to catch up (etcd refuses it until then): about 90 s."""
HEALTHY = Backoff(interval_seconds=2, max_attempts=30, rate=1.0)
"""How long the cluster is given to report every voter healthy after a change: about 60 s."""


def members(ctx: RunbookContext) -> list[Member]:
    with ctx.client() as client:
        return client.member_list(linearizable=True)


def check_safe(ctx: RunbookContext, target: int | None, what: str) -> ClusterHealth:
    """Invariant 1 on a fresh probe for a change of ``target`` (None: an addition), else UnsafeChangeError."""
    health = probe(ctx)
    safety = change_safety(health, target)
    if not safety.safe:
        raise UnsafeChangeError(
            f"{what} is not safe now: {safety.others_healthy} healthy voters besides the target, "
            f"{safety.needed} needed" + ("" if safety.leader_ok else ", and no healthy leader")
        )
    return health


def host_doc(host: Host) -> dict[str, Any]:
    return {"name": host.name, "host_id": host.host_id, "peer_url": host.peer_url, "client_url": host.client_url}


def new_host(ctx: RunbookContext, doc: Document) -> Host:
    name = doc["new_member"]["name"]
    host = ctx.compute.find(name)
    if host is None:
        raise ClusterNotReadyError(f"new host {name} is not there (yet)")
    return host


def launch_member(ctx: RunbookContext, doc: Document, name: str) -> Document:
    """The host of the new member ``name`` with its certificates (the existing one when retried)."""
    ctx.compute.issue_certificates(name)
    host = ctx.compute.launch(name)
    return {**doc, "new_member": host_doc(host)}


def add_learner(ctx: RunbookContext, doc: Document) -> Document:
    """The new host joins as a learner, unless it already did; refused while another learner is in the
    cluster (at most one learner at a time)."""
    started = time.monotonic()
    host = new_host(ctx, doc)
    check_safe(ctx, None, f"adding {host.name}")
    current = members(ctx)
    existing = next((m for m in current if host.peer_url in m.peer_urls), None)
    if existing is None:
        others = [m for m in current if m.is_learner]
        if others:
            named = ", ".join(m.name or f"{m.id:x} ({', '.join(m.peer_urls)})" for m in others)
            raise SecondLearnerError(
                f"not adding {host.name}: learner {named} is in the cluster already and etcdops never adds a "
                "second one; promote or remove it first"
            )
        with ctx.client() as client:
            existing = client.member_add([host.peer_url], learner=True)
        current = members(ctx)
    initial = ",".join(f"{host.name if m.id == existing.id else m.name}={u}" for m in current for u in m.peer_urls[:1])
    new = {**doc["new_member"], "id": f"{existing.id:x}", "initial_cluster": initial}
    return timed({**doc, "new_member": new}, "add_learner", started)


def start_new_member(ctx: RunbookContext, doc: Document) -> Document:
    started = time.monotonic()
    ctx.compute.start_etcd(new_host(ctx, doc), doc["new_member"]["initial_cluster"], "existing")
    return timed(doc, "start_new_member", started)


def promote_learner(ctx: RunbookContext, doc: Document) -> Document:
    """Promote once caught up; etcd refuses (LearnerNotReady) until then and the machine retries."""
    started = time.monotonic()
    new_id = int(doc["new_member"]["id"], 16)
    check_safe(ctx, None, f"promoting {doc['new_member']['name']}")
    member = next((m for m in members(ctx) if m.id == new_id), None)
    if member is None:
        raise ClusterNotReadyError(f"member {doc['new_member']['id']} is not in the cluster")
    if member.is_learner:
        with ctx.client() as client:
            client.member_promote(new_id)
    return timed(doc, "promote_learner", started)


def remove_learner(ctx: RunbookContext, doc: Document) -> Document:
    """Invariant 6: a learner that could not catch up is removed, and the runbook fails safe."""
    new = doc.get("new_member") or {}
    if new.get("id"):
        new_id = int(new["id"], 16)
        member = next((m for m in members(ctx) if m.id == new_id), None)
        if member is not None and member.is_learner:
            with ctx.client() as client:
                client.member_remove(new_id)
    host = ctx.compute.find(new["name"]) if new.get("name") else None
    if host is not None:
        ctx.compute.terminate(host)
    raise LearnerNotCaughtUpError(
        f"the new member {new.get('name')} did not catch up in time; it was removed and its host retired"
    )


def wait_for_voters(ctx: RunbookContext, doc: Document, want: int) -> Document:
    """Quorum, at least ``want`` voters all healthy, no learner left; else ClusterNotReadyError (retried)."""
    started = time.monotonic()
    health = probe(ctx)
    healthy = len(health.healthy_voters)
    if not health.has_quorum or healthy < want or len(health.voters) < want or health.learners:
        raise ClusterNotReadyError(
            f"cluster not healthy yet: {healthy}/{len(health.voters)} voters healthy (want {want}), "
            f"{count(len(health.learners), 'learner')}, leader {'yes' if health.leader else 'no'}"
        )
    return timed({**doc, "healthy_voters": healthy}, "wait_until_healthy", started)


def record_membership_in_config(ctx: RunbookContext) -> list[str]:
    """Invariant 10: the stored configuration's endpoints become the live members' client URLs,
    wherever the configuration lives. Converges when retried (a store that says so already is not
    written). Returns the endpoints now stored."""
    live = merge_endpoints(*(m.client_urls for m in members(ctx) if m.started))
    return record_membership(ctx.config_stores, live).endpoints


def old_host(ctx: RunbookContext, doc: Document) -> Host | None:
    name = (doc.get("old_member") or {}).get("name")
    return ctx.compute.find(name) if name else None


def repoint_clients(ctx: RunbookContext, doc: Document) -> Document:
    """The load balancer sends clients to the new member and no longer to the old one (if any), and the
    stored configuration names the live members (the seeds every later run starts from)."""
    started = time.monotonic()
    ctx.compute.register_target(new_host(ctx, doc))
    old = old_host(ctx, doc)
    if old is not None:
        ctx.compute.deregister_target(old)
    endpoints = record_membership_in_config(ctx)
    return timed({**doc, "stored_endpoints": endpoints}, "repoint_clients", started)


def retire_old_host(ctx: RunbookContext, doc: Document) -> Document:
    """The old member's host leaves the load balancer (if it is still there) and is terminated."""
    started = time.monotonic()
    old = old_host(ctx, doc)
    if old is not None:
        ctx.compute.deregister_target(old)
        ctx.compute.terminate(old)
    return timed({**doc, "retired": (doc.get("old_member") or {}).get("name")}, "retire_old_host", started)
