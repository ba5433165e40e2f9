"""The named errors of etcdops.

Every error a caller may want to handle has its own class ending in ``Error``. The state machines
retry or catch these by class name (``Retry``/``Catch`` ``ErrorEquals``), the CLI prints their
message as one line, and the approval API maps them to HTTP status codes in one place.

The retry contract is declared here, on the classes, and nowhere else: ``retryable`` says the
error is transient (the same call, tried again in a moment, can succeed) and ``backoff`` how
patiently a state machine retries it in place. Both are class attributes, never set per instance:
Step Functions matches errors by class name only, so an error whose transience depends on the case
is two classes (``AwsError`` and ``AwsUnavailableError``). :mod:`etcdops_local.retry_contract` collects them and
generates every state machine's ``Retry`` lists from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Backoff:
    """How a state machine retries a transient error in place: ASL ``IntervalSeconds``,
    ``MaxAttempts`` and ``BackoffRate``."""

    interval_seconds: int
    max_attempts: int
    rate: float

    @property
    def budget_seconds(self) -> float:
        """The longest the retries wait in total (what the step gives the cause to go away)."""
        return sum(self.interval_seconds * self.rate**i for i in range(self.max_attempts))


DEFAULT_BACKOFF = Backoff(interval_seconds=2, max_attempts=5, rate=1.5)
"""About 26 s over five tries: a network blip, an election, a throttled API."""


APPROVAL_REJECTED = "ApprovalRejected"
"""The error a rejected approval fails its execution with (sent with SendTaskFailure; not a class)."""


class EtcdopsError(Exception):
    """Base of every error etcdops raises on purpose."""

    retryable: ClassVar[bool] = False
    backoff: ClassVar[Backoff] = DEFAULT_BACKOFF


class ConfigError(EtcdopsError):
    """A configuration document or setting is missing or invalid; the message names the field."""


class UsageError(EtcdopsError):
    """A command was called with arguments that do not make sense together."""


class NotFoundError(EtcdopsError):
    """A named thing (member, backup, execution) does not exist."""


class UpgradeRefusedError(EtcdopsError):
    """The asked etcd upgrade is not a path etcdops takes (etcdops.domain.upgrade); nothing was changed.
    The message gives every reason at once."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("upgrade refused: " + "; ".join(reasons))
        self.reasons = tuple(reasons)


class ScaleRefusedError(EtcdopsError):
    """The asked size is not one etcdops scales to, or the cluster cannot change its size now
    (etcdops.domain.scale); nothing was changed. The message gives every reason at once, on one line."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("scale refused: " + "; ".join(reasons))
        self.reasons = tuple(reasons)


# ---- etcd ---------------------------------------------------------------------------------


class EtcdError(EtcdopsError):
    """An etcd call failed. ``endpoint`` names the member that answered (or did not)."""

    def __init__(self, message: str, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class EtcdUnavailableError(EtcdError):
    """The endpoint could not be reached, or the cluster cannot serve the call right now."""

    retryable = True


class EtcdTimeoutError(EtcdError):
    """The call did not finish before its deadline."""

    retryable = True


class EtcdAuthError(EtcdError):
    """The endpoint refused our identity (TLS handshake, client certificate, permissions)."""


class EtcdMemberNotFoundError(EtcdError, NotFoundError):
    """The member id is not in the cluster."""


class EtcdPreconditionError(EtcdError):
    """etcd refused the change in the cluster's current state (e.g. peer URL exists)."""


class EtcdLearnerNotReadyError(EtcdPreconditionError):
    """A learner cannot be promoted yet: it has not caught up with the leader."""

    retryable = True


class EtcdUnhealthyClusterError(EtcdUnavailableError):
    """etcd refused a membership change because it would leave the cluster unhealthy."""


class EtcdRequestError(EtcdError):
    """etcd rejected the request as invalid (too large, bad argument, compacted revision)."""


class EtcdNoSpaceError(EtcdError):
    """The cluster has a NOSPACE alarm and refuses writes."""


class MetricsFormatError(EtcdError):
    """A member's /metrics answer is not Prometheus' text format (or lacks what etcd always exposes)."""


class EtcdCompactedError(EtcdRequestError):
    """The revision asked for was compacted away: its history is gone (``compact_revision`` is the oldest kept)."""

    def __init__(self, message: str, endpoint: str | None = None, compact_revision: int = 0) -> None:
        super().__init__(message, endpoint)
        self.compact_revision = compact_revision


# ---- snapshots and backups ----------------------------------------------------------------


class SnapshotError(EtcdopsError):
    """A snapshot could not be taken or read."""


class SnapshotIntegrityError(SnapshotError):
    """A snapshot is truncated, corrupt or does not match its checksum."""


class SnapshotIncompleteError(SnapshotIntegrityError):
    """A second pass over a snapshot ended before the pages the first pass said it holds."""


class SnapshotStreamError(SnapshotError):
    """The snapshot stream from a member broke off; another member may serve it."""

    retryable = True


# ---- certificates -------------------------------------------------------------------------


class PkiError(EtcdopsError):
    """A certificate or key could not be created, read, written or checked; the message says which."""


class InvalidEventError(EtcdopsError):
    """The event (or request) does not have the shape this function accepts; nothing was done."""
