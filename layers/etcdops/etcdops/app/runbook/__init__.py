"""The runbooks' steps (``replace``, ``restore``, ``upgrade``, ``maintain``, ``drill``) and what they
share: their errors, the input checks, the step timings, handing leadership on, execution tails, staging a
plain snapshot and how a caught error reads in a message. Adding and removing members one at a time is
:mod:`etcdops.app.runbook.members`."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from etcdops.app.probe import probe_cluster
from etcdops.domain.errors import EtcdopsError
from etcdops.domain.findings import Finding, describe_findings
from etcdops.domain.health import quorum_of
from etcdops.domain.runbook_documents import RunbookDocument, document_problem

if TYPE_CHECKING:
    from etcdops.adapters.aws import Notifier
    from etcdops.adapters.backup.crypto import KeyProvider
    from etcdops.adapters.backup.store import BackupStore
    from etcdops.adapters.etcd.client import EtcdClient
    from etcdops.adapters.etcd.membership import ConfigStore
    from etcdops.adapters.state import IncidentStore, LockStore, StateStore
    from etcdops.domain.backup.manifest import Manifest
    from etcdops.domain.compute.base import ComputeProvider, Host
    from etcdops.domain.config import ClusterConfig
    from etcdops.domain.health import ClusterHealth, MemberHealth

Document = dict[str, Any]


@dataclass
class RunbookContext:
    """What a runbook's steps need, passed in by the handler (AWS) or the local stack."""

    config: ClusterConfig
    client: Callable[[], EtcdClient]  # a client on the live membership (connect.live_client)
    compute: ComputeProvider
    state: StateStore
    notifier: Notifier
    ensure_backup: Callable[[timedelta], Manifest]  # a verified backup younger than the age, or a new one
    backup_target: Callable[[], tuple[BackupStore, KeyProvider]]  # where backups are, and their key
    config_stores: Sequence[ConfigStore]  # where the configuration lives: updated after the change
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep


class RunbookError(EtcdopsError):
    """Base of the runbooks' own named errors (state machines catch them by name)."""


class InvalidRunbookInputError(RunbookError):
    """The execution input lacks a field or has a wrong one; nothing was done."""


class ClusterNotReadyError(RunbookError):
    """The cluster is not (yet) in the state the step waits for; the state machine retries."""

    retryable = True


class PreflightFailedError(RunbookError):
    """The runbook would need something it cannot have (invariant 13); it changed nothing. Not transient:
    fix what the findings say, then start the runbook again. The message lists every finding, one a line."""

    def __init__(self, runbook: str, findings: Sequence[Finding]) -> None:
        self.findings = tuple(findings)
        count = f"{len(self.findings)} problem{'s' if len(self.findings) != 1 else ''}"
        super().__init__(
            f"{runbook} stopped before its first change, so nothing was changed; the preflight found {count}:\n"
            + describe_findings(self.findings)
        )


def require_configured_cluster(config: ClusterConfig, doc: Document) -> None:
    """The input's ``cluster`` must be the cluster this stack runs (before any lock is taken)."""
    if doc.get("cluster") != config.name:
        raise InvalidRunbookInputError(
            f"runbook input: cluster {doc.get('cluster')!r} is not {config.name!r}, the cluster this stack runs"
        )


def timed(doc: Document, step: str, started: float) -> Document:
    """``doc`` with how long ``step`` took since ``started`` (``time.monotonic()``) in its ``timings``."""
    timings = dict(doc.get("timings") or {})
    timings[step] = round(time.monotonic() - started, 3)
    return {**doc, "timings": timings}


def asks_a_human(ctx: RunbookContext, doc: Document) -> bool:
    """Whether a runbook started by hand waits for an approval: asked for at the start (``--approval``) or
    the cluster's policy is ``approval: always``."""
    return bool(doc.get("requires_approval")) or ctx.config.approval == "always"


def probe(ctx: RunbookContext) -> ClusterHealth:
    """A fresh probe round of the live membership (every step that decides re-probes)."""
    with ctx.client() as client:
        return probe_cluster(client, deadline=ctx.config.health.probe_deadline_seconds)


def hand_leadership_on(
    ctx: RunbookContext,
    health: ClusterHealth,
    member_id: int,
    preference: Callable[[MemberHealth], object] = lambda m: m.name,
) -> str | None:
    """When ``member_id`` leads, leadership moves to another healthy voter (the first by ``preference``), so
    the cluster elects once, on purpose, before that member stops or leaves. The new leader's name, or None
    when ``member_id`` does not lead (or is the only voter: it leads throughout)."""
    if health.leader != member_id:
        return None
    others = sorted((m for m in health.healthy_voters if m.id != member_id), key=preference)  # type: ignore[arg-type]
    if not others:
        return None
    with ctx.client() as client:
        client.move_leader(others[0].id)
    return others[0].name


def stop_for_restart(
    ctx: RunbookContext, host: Host, member_id: int, preference: Callable[[MemberHealth], object] = lambda m: m.name
) -> None:
    """Invariant 16: etcd on ``host`` (member ``member_id``) is stopped only while every other member is
    healthy and a quorum remains without it, and after leadership moved away (the next try stops it)."""
    health = probe(ctx)
    others = [m for m in health.members if m.id != member_id]
    sick = [m.label for m in others if not m.healthy]
    healthy_voters = [m for m in health.healthy_voters if m.id != member_id]
    if sick or (len(healthy_voters) < quorum_of(len(health.voters)) and len(health.voters) > 1):
        raise ClusterNotReadyError(f"not stopping {host.name}: {', '.join(sick) or 'no quorum'} without it")
    if hand_leadership_on(ctx, health, member_id, preference):
        raise ClusterNotReadyError(f"member {host.name} led again; leadership moved away, stopping next try")
    ctx.compute.stop_etcd(host)


def start_again(ctx: RunbookContext, host: Host, *, alone: bool = False) -> None:
    """Start etcd on ``host`` again after :func:`stop_for_restart` (its data directory decides the membership;
    the list is for the check). The list comes from the other members; the only member of a one-member
    cluster (``alone``) is the one stopped, so its list is the host alone."""
    if alone:
        initial = f"{host.name}={host.peer_url}"
    else:
        with ctx.client() as client:
            members = client.member_list()
        initial = ",".join(
            f"{host.name if m.peer_urls[0] == host.peer_url else m.name}={m.peer_urls[0]}"
            for m in members
            if m.peer_urls
        )
    ctx.compute.start_etcd(host, initial, "existing")


def ensure_backup(ctx: RunbookContext, doc: Document) -> Document:
    """Invariant 5: a verified backup younger than the configured age, else a fresh one."""
    started = time.monotonic()
    max_age = timedelta(minutes=ctx.config.backup.max_age_minutes if ctx.config.backup else 120)
    manifest = ctx.ensure_backup(max_age)
    return timed({**doc, "backup_id": manifest.id, "backup_revision": manifest.revision}, "ensure_backup", started)


class Locking(Protocol):
    """Any runbook's context, as far as its lock goes."""

    @property
    def state(self) -> LockStore: ...


def locked(ctx: RunbookContext, doc: Document, lease_seconds: float) -> Document:
    """Invariant 2: the runbook's AcquireLock once its input is checked: the cluster's operation lock, the
    same for every runbook, taken for ``lease_seconds``; ``doc`` with its owner and the start time."""
    started = time.monotonic()
    lock = ctx.state.acquire_lock(doc["cluster"], doc["execution"], lease_seconds, ctx.now())
    return timed({**doc, "lock_owner": lock.owner, "started_at": ctx.now().isoformat()}, "acquire_lock", started)


def release_lock(ctx: Locking, doc: Document) -> Document:
    if doc.get("cluster") and doc.get("execution"):
        ctx.state.release_lock(doc["cluster"], doc["execution"])
    return doc


class Announcing(Protocol):
    """Any runbook's context, as far as telling things once goes."""

    @property
    def state(self) -> IncidentStore: ...

    @property
    def now(self) -> Callable[[], datetime]: ...


def first_time(ctx: Announcing, doc: Document, kind: str) -> bool:
    """Notifications are sent once per execution, however often the step is retried."""
    return ctx.state.record_incident(str(doc.get("cluster")), f"{doc.get('execution')}-{kind}", kind, ctx.now())


class Publishing(Announcing, Protocol):
    """Any runbook's context, as far as sending a message once goes."""

    @property
    def notifier(self) -> Notifier: ...


def publish_failure_once(ctx: Publishing, doc: Document, kind: str, subject: str, body: str) -> Document:
    """The Catch path's message: ``subject`` and ``body`` published once per execution (``kind``, e.g.
    ``upgrade-failed``, names it in the message's attributes and in the once-only record); ``doc`` unchanged."""
    if first_time(ctx, doc, kind):
        ctx.notifier.publish(subject, body, {"cluster": str(doc.get("cluster")), "kind": kind})
    return doc


def publish_success_once(ctx: Publishing, doc: Document, kind: str, subject: str, body: str) -> Document:
    """The success message: ``subject`` and ``body`` published once per execution (``kind``, e.g.
    ``upgrade-succeeded``); ``doc`` with the time it finished when sent now, else unchanged."""
    if not first_time(ctx, doc, kind):
        return doc
    ctx.notifier.publish(subject, body, {"cluster": str(doc.get("cluster")), "kind": kind})
    return {**doc, "finished_at": ctx.now().isoformat()}


def durations(doc: Document) -> str:
    """The steps' durations in ``doc``'s ``timings``, for a message: ``preflight 0.8s, ...``."""
    return ", ".join(f"{k} {v}s" for k, v in (doc.get("timings") or {}).items())


def caught_and_released(ctx: Locking, doc: Document) -> Mapping[str, Any]:
    """The Catch path's start in every runbook: the caught error, with our lock released unless the
    error is that another operation holds it (then it is not ours to release)."""
    error: Mapping[str, Any] = doc.get("error") or {}
    if error.get("Error") != "LockHeldError":
        release_lock(ctx, doc)
    return error


CLEAN_UP_STEPS = frozenset({"NotifyFailure", "RemoveStagedSnapshot", "TearDown", "RecordResult"})
"""Steps that must run whatever the document holds: the failure paths and the drill's clean-up (they
read it defensively, and a malformed input is what they may have to report)."""


def dispatch(
    steps: Mapping[str, Callable[[Any, Document], Document]],
    ctx: Any,
    step: str,
    doc: Document,
    model: type[RunbookDocument] | None = None,
) -> Document:
    """Run the step the state machine named (an unknown name is bad input, said in one line), on a
    document checked against the runbook's ``model`` first (except in the clean-up steps): a field of the
    wrong type, or one the step needs missing (``model.STEP_NEEDS``), is refused by name, before the step
    does anything. The step gets the document as it came."""
    try:
        function = steps[step]
    except KeyError:
        raise InvalidRunbookInputError(f"unknown runbook step {step!r}") from None
    if model is not None and step not in CLEAN_UP_STEPS:
        problem = document_problem(model.for_step(step), doc)
        if problem is not None:
            raise InvalidRunbookInputError(f"runbook input: {problem}")
    return function(ctx, doc)


_CAUSE_LIMIT = 1000
_MESSAGE_LIMIT = 8000  # our own error messages: a failed preflight lists every finding, one a line


def caught_error(error: Mapping[str, Any] | None) -> str:
    """``Error: message`` of a Catch's ``{"Error", "Cause"}``, for people.

    A Lambda task's Cause is the function's error document (``errorMessage``, ``errorType``,
    ``stackTrace``); only the message is kept: stack traces belong in the function's log, not in mail.
    """
    return f"{(error or {}).get('Error')}: {caught_message(error)}"


def caught_message(error: Mapping[str, Any] | None) -> str:
    """The message of a Catch's ``{"Error", "Cause"}`` (see :func:`caught_error`)."""
    error = error or {}
    cause = error.get("Cause")
    text = "" if cause is None else str(cause)
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    limit = _CAUSE_LIMIT
    if isinstance(document, dict) and "errorMessage" in document:
        text, limit = str(document["errorMessage"]), _MESSAGE_LIMIT
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def execution_tail(doc: Document) -> str:
    """A short, name-safe id of this execution (tokens, suffixes, host names, staging keys)."""
    cleaned = re.sub(r"[^A-Za-z0-9]", "", str(doc["execution"])).lower()
    digest = hashlib.sha256(str(doc["execution"]).encode()).hexdigest()[:6]
    return f"{cleaned[-10:]}{digest}"


def stage_plaintext(staging: BackupStore, key: str, chunks: Iterable[bytes]) -> dict[str, str]:
    """Upload a checked plain snapshot stream to ``key`` for hosts to download: its key, URI and sha256.
    A check failing at the stream's end aborts the upload, so nothing unverified is staged."""
    sha = hashlib.sha256()

    def hashed() -> Iterator[bytes]:
        for chunk in chunks:
            sha.update(chunk)
            yield chunk

    staging.put_stream(key, hashed())
    return {"key": key, "uri": staging.uri_for(key), "sha256": sha.hexdigest()}
