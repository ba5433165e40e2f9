"""The named errors of etcdops.

Every error a caller may want to handle has its own class ending in ``Error``. The state machines
retry or catch these by class name (``Retry``/``Catch`` ``ErrorEquals``), the CLI prints their
message as one line, and the approval API maps them to HTTP status codes in one place. The
``retryable`` flag says whether trying the same call again later can succeed.
"""

from __future__ import annotations


class EtcdopsError(Exception):
    """Base of every error etcdops raises on purpose."""

    retryable: bool = False


class ConfigError(EtcdopsError):
    """A configuration document or setting is missing or invalid; the message names the field."""


class UsageError(EtcdopsError):
    """A command was called with arguments that do not make sense together."""


class NotFoundError(EtcdopsError):
    """A named thing (member, backup, execution) does not exist."""


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


# ---- snapshots and backups ----------------------------------------------------------------


class SnapshotError(EtcdopsError):
    """A snapshot could not be taken or read."""


class SnapshotIntegrityError(SnapshotError):
    """A snapshot is truncated, corrupt or does not match its checksum."""


class SnapshotStreamError(SnapshotError):
    """The snapshot stream from a member broke off; another member may serve it."""

    retryable = True


# ---- certificates -------------------------------------------------------------------------


class PkiError(EtcdopsError):
    """A certificate or key could not be created, read, written or checked; the message says which."""
