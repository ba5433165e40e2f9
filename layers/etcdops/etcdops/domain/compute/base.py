"""One interface for the machines etcd members run on: EC2 instances in AWS, processes locally.

The runbooks only talk to :class:`ComputeProvider`. Every method converges when it is called again
after a timeout or a crash: it looks the host up by name before it creates anything, and treats
"already there" / "already gone" as success.

The host actions (``run_action``) and the two etcd service commands (``start_etcd``/``stop_etcd``)
are described once, in :data:`DOCUMENTS` (domain/compute/documents.py): their SSM document key, the
parameters with the patterns their values must match, and their deadline. The EC2 provider sends them
as SSM Run Command documents; the local provider runs the same operations on its processes.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

# the host commands (domain/compute/documents.py), also importable from here as before
from etcdops.domain.compute.documents import ACTIONS as ACTIONS
from etcdops.domain.compute.documents import DOCUMENTS as DOCUMENTS
from etcdops.domain.compute.documents import PATTERNS as PATTERNS
from etcdops.domain.compute.documents import START_FLAGS as START_FLAGS
from etcdops.domain.compute.documents import DocumentSpec as DocumentSpec
from etcdops.domain.compute.documents import HostGroup as HostGroup
from etcdops.domain.compute.documents import Parameter as Parameter
from etcdops.domain.compute.documents import action_spec as action_spec
from etcdops.domain.compute.documents import start_flags as start_flags
from etcdops.domain.compute.errors import (
    ActionParameterError,
    ComputeConfigError,
    InvalidHostNameError,
)
from etcdops.domain.findings import Finding

InitialState = Literal["new", "existing"]
ActionStatus = Literal["Success", "Failed", "Cancelled", "TimedOut"]

# Member names end up in EC2 tags, Secrets Manager ids, the user data, certificates and shell
# scripts; this keeps them safe in all of those.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Host:
    """A machine that runs (or will run) one etcd member.

    ``state`` is the EC2 instance state (``pending``, ``running``, ``stopping``, ``stopped``) in AWS;
    locally a host is nothing but its etcd process, so it is the process state (``running``,
    ``paused``, ``stopped``; a launched host whose etcd was not started yet is ``stopped``).
    """

    host_id: str
    name: str
    address: str
    peer_url: str
    client_url: str
    state: str


@dataclass(frozen=True)
class VolumeCopy:
    """A crash-consistent copy of one member's data, as its provider took it (a volume backup).

    ``snapshot_ids``: the provider's own snapshots (EC2: one EBS snapshot per data volume of the
    instance, taken together). ``db_file``: where the provider put a copy of the member's database
    (``member/snap/db``) for the caller to store and then remove (the local provider).
    """

    snapshot_ids: tuple[str, ...] = ()
    db_file: str | None = None
    paused_seconds: float | None = None  # how long the member was held still for the copy


@dataclass(frozen=True)
class HostActionResult:
    host_id: str
    name: str
    status: ActionStatus
    output: str = ""

    def last_line(self, default: str) -> str:
        """The last line the host wrote (``default`` when it wrote none): on a failure, what went wrong."""
        return (self.output.strip().splitlines() or [default])[-1]


@dataclass(frozen=True)
class ActionResult:
    """What one action did on each host; ``command_id`` is the SSM command (None locally)."""

    action: str
    command_id: str | None
    hosts: tuple[HostActionResult, ...]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> tuple[HostActionResult, ...]:
        """The hosts on which the action did not succeed, in order."""
        return tuple(h for h in self.hosts if h.status != "Success")


@dataclass(frozen=True)
class PreflightPlan:
    """What a runbook will ask of its hosts after the preflight, so the preflight can check exactly that.

    ``documents`` are keys of :data:`DOCUMENTS` (the host commands the runbook's steps send);
    ``commanded`` and ``retire`` name existing member hosts; ``launch`` names hosts that do not exist yet.
    """

    launch: tuple[str, ...] = ()  # hosts it will launch (member names)
    documents: tuple[str, ...] = ()  # host commands it will send
    commanded: tuple[str, ...] = ()  # existing member hosts it will send them to
    control_plane: bool = False  # whether it runs the Kubernetes hooks on the control-plane hosts
    repoint: bool = False  # whether it registers and deregisters load balancer targets
    retire: tuple[str, ...] = ()  # existing hosts it will terminate

    def __post_init__(self) -> None:
        unknown = sorted(set(self.documents) - set(DOCUMENTS))
        if unknown:
            raise ActionParameterError(f"preflight: unknown host command {unknown[0]!r}")
        for name in (*self.launch, *self.commanded, *self.retire):
            check_host_name(name)


def is_host_name(name: object) -> bool:
    """Whether ``name`` can name a host (a member): 1-63 letters, digits, '.', '_' or '-'."""
    return isinstance(name, str) and _NAME.match(name) is not None


def check_host_name(name: str) -> str:
    if not is_host_name(name):
        raise InvalidHostNameError(
            f"member name {name!r}: use 1-63 letters, digits, '.', '_' or '-', starting and ending "
            "with a letter or digit"
        )
    return name


def check_initial_cluster(host: Host, initial_cluster: str, initial_state: str) -> None:
    """The checks etcd would make at start-up, made before anything is sent to the host."""
    if initial_state not in ("new", "existing"):
        raise ActionParameterError(f"initial_state: {initial_state!r} is not 'new' or 'existing'")
    if not isinstance(initial_cluster, str) or not re.fullmatch(PATTERNS["initial_cluster"], initial_cluster):
        raise ActionParameterError(
            f"initial_cluster: {initial_cluster!r} is not name=https://host:port[,name=https://host:port...]"
        )
    entries = [entry.split("=", 1) for entry in initial_cluster.split(",")]
    if [host.name, host.peer_url] not in entries:
        raise ActionParameterError(
            f"initial_cluster: has no entry {host.name}={host.peer_url} for the host being started"
        )


class ComputeProvider(ABC):
    """The hosts of one cluster. Every method converges when called again (look up by name first)."""

    @abstractmethod
    def find(self, name: str) -> Host | None:
        """The live host of member ``name``, or None (terminated hosts are not returned)."""

    @abstractmethod
    def hosts(self) -> list[Host]:
        """Every live host of the cluster, sorted by name."""

    @abstractmethod
    def issue_certificates(self, name: str, address_sans: Sequence[str] = ()) -> str:
        """Issue (or keep, if still good) member ``name``'s peer/server certificate from our CA.

        ``address_sans`` are extra IP addresses or DNS names for the certificate; the host's own
        address is added once the host exists. Returns where the host fetches them: a Secrets
        Manager secret id in AWS, the certificate's path locally (its key beside it, ``.key``).
        """

    @abstractmethod
    def renew_certificates(self, host: Host) -> str:
        """Issue member ``host.name`` a new certificate from the cluster CA, however long the old one is
        still valid, and put it on the host in place of the old one (the host action
        ``renew-certificates``); returns the new certificate's serial number (hex). etcd serves it from
        its next TLS handshake on, without a restart. Called again, it issues another one."""

    @abstractmethod
    def launch(self, name: str) -> Host:
        """A host ready to run etcd for member ``name`` (etcd not started); the existing one if any.

        Its ``peer_url`` is known on return, so the member can be added to the cluster right away.
        """

    @abstractmethod
    def start_etcd(
        self, host: Host, initial_cluster: str, initial_state: InitialState, flags: Mapping[str, int] | None = None
    ) -> None:
        """Start etcd on ``host`` with ``--initial-cluster`` and ``--initial-cluster-state``.

        A no-op when it already runs. ``initial_cluster`` must contain ``host.name=host.peer_url``.
        ``flags`` are etcd flags for this start only, on top of the configured ones (:func:`start_flags`:
        :data:`START_FLAGS` only); the next start without them runs on the configured flags again.
        """

    @abstractmethod
    def stop_etcd(self, host: Host) -> None:
        """Stop etcd on ``host``, keeping its data. A no-op when it is not running."""

    @abstractmethod
    def terminate(self, host: Host) -> None:
        """Retire ``host`` and its data. A no-op when it is already gone."""

    @abstractmethod
    def register_target(self, host: Host) -> None:
        """Send clients to ``host``'s client URL (load balancer target). A no-op when registered."""

    @abstractmethod
    def deregister_target(self, host: Host) -> None:
        """Stop sending clients to ``host``. A no-op when it is not registered."""

    def snapshot_volume(self, host: Host, tags: Mapping[str, str], workdir: str) -> VolumeCopy:
        """A crash-consistent copy of ``host``'s etcd data, tagged with ``tags`` where the provider keeps
        tags (EC2); a copy of the database file goes below ``workdir``. Providers that cannot say so."""
        raise ComputeConfigError(f"compute: {type(self).__name__} takes no volume snapshots")

    def delete_volume_snapshots(self, snapshot_ids: Sequence[str]) -> None:
        """Delete snapshots :meth:`snapshot_volume` took (retention); one already gone counts as deleted."""
        raise ComputeConfigError(f"compute: {type(self).__name__} keeps no volume snapshots")

    def volume_snapshot_problem(self, snapshot_id: str) -> str | None:
        """Why the snapshot ``snapshot_id`` cannot be restored from (missing, not completed, not this cluster's
        volume backup), or None. Providers that keep no snapshots say so."""
        raise ComputeConfigError(f"compute: {type(self).__name__} keeps no volume snapshots to restore from")

    def attach_snapshot_volume(self, host: Host, snapshot_id: str, owner: str) -> str:
        """A new volume made from ``snapshot_id`` where ``host`` is (its zone), tagged for ``owner`` (a
        restore's execution) and attached to it; found again on a retry. Returns the ``SnapshotUri`` the
        restore-data-dir action reads it by (``ebs://<volume id>``)."""
        raise ComputeConfigError(f"compute: {type(self).__name__} keeps no volume snapshots to restore from")

    def remove_snapshot_volumes(self, owner: str) -> list[str]:
        """Detach and delete every volume :meth:`attach_snapshot_volume` made for ``owner``; the ids removed."""
        return []  # providers that make none have none to remove

    def fetch_certificates(self, host: Host) -> None:
        """Have ``host`` write its certificates and trusted CAs again from where the provider keeps them
        (before a restart that must load a new trust); hosts that read them in place need nothing."""
        return  # the local stack's members read the trusted CA file in place

    def ca_rotation(self) -> dict[str, int]:
        """The CA rotation under way as recorded beside the CA: ``{"begun": n, "finished": m}`` (phases 1-3;
        both 0 when none is). Providers that cannot rotate their CA say so (before anything changes)."""
        raise ComputeConfigError(f"compute: {type(self).__name__} cannot rotate the cluster CA yet")

    def begin_ca_phase(self, phase: int) -> None:
        """Prepare CA rotation ``phase`` (1: a new CA beside the old, both trusted; 2: the new CA issues,
        the operator's client certificate reissued; 3: only the new CA trusted) and record it begun; members
        read the trust from their next start. Called again, it converges."""
        raise ComputeConfigError(f"compute: {type(self).__name__} cannot rotate the cluster CA yet")

    def finish_ca_phase(self, phase: int) -> None:
        """Record CA rotation ``phase`` done on every member (after phase 3: the rotation is over)."""
        raise ComputeConfigError(f"compute: {type(self).__name__} cannot rotate the cluster CA yet")

    @abstractmethod
    def preflight(self, plan: PreflightPlan) -> list[Finding]:
        """Everything ``plan`` will need that is missing or refused, as findings; [] when it can finish.

        Changes nothing (read-only calls, dry runs). Raises the provider's retryable error when a check
        could not be made for a passing reason (throttling, network), so the caller asks again.
        """

    @abstractmethod
    def run_action(
        self, action: str, hosts: Sequence[Host] | None = None, parameters: Mapping[str, str] | None = None
    ) -> ActionResult:
        """Run a named host action (see :data:`ACTIONS`) on ``hosts``, or on its default group.

        ``None`` means the cluster's etcd hosts for etcd actions and the control-plane hosts for the
        Kubernetes hooks. Raises UnknownActionError, ActionParameterError, HostCommandFailedError
        (some host failed; the error carries the result) or HostCommandTimeoutError.
        """
