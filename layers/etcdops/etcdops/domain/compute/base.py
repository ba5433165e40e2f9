"""One interface for the machines etcd members run on: EC2 instances in AWS, processes locally.

The runbooks only talk to :class:`ComputeProvider`. Every method converges when it is called again
after a timeout or a crash: it looks the host up by name before it creates anything, and treats
"already there" / "already gone" as success.

The host actions (``run_action``) and the two etcd service commands (``start_etcd``/``stop_etcd``)
are described once here, in :data:`DOCUMENTS`: their SSM document key, the parameters with the
patterns their values must match, and their deadline. The EC2 provider sends them as SSM Run Command
documents; the local provider runs the same operations on its processes.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from etcdops.domain.compute.errors import (
    ActionParameterError,
    ComputeConfigError,
    InvalidHostNameError,
    UnknownActionError,
)
from etcdops.domain.findings import Finding

InitialState = Literal["new", "existing"]
ActionStatus = Literal["Success", "Failed", "Cancelled", "TimedOut"]
HostGroup = Literal["etcd", "control-plane"]

# Member names end up in EC2 tags, Secrets Manager ids, the user data, certificates and shell
# scripts; this keeps them safe in all of those.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_URL = r"https://[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}"
_MEMBER = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
#: etcd flags one start of a member may add to its configured ones (whole numbers): the limits a
#: point-in-time restore's replay may need raised (one revision is one transaction). Nothing else, so
#: a start can never change where the data is, the URLs or the TLS settings.
START_FLAGS = ("max-txn-ops", "max-request-bytes")
_START_FLAG = rf"--(?:{'|'.join(START_FLAGS)})=[1-9][0-9]{{0,9}}"
PATTERNS = {
    "member": f"^{_MEMBER}$",
    "url": f"^{_URL}$",
    "initial_cluster": f"^{_MEMBER}={_URL}(?:,{_MEMBER}={_URL})*$",
    "initial_state": "^(new|existing)$",
    "token": "^[A-Za-z0-9._-]{1,64}$",
    "snapshot_uri": "^((s3://|https://|file:///)[A-Za-z0-9._~:/?#@!*+,;=%-]+|ebs://vol-[0-9a-f]{8,17})$",
    "sha256": "^([0-9a-f]{64})?$",
    "path": "^/[A-Za-z0-9._/-]*$",
    "components": "^[a-z0-9-]+(,[a-z0-9-]+)*$",
    "bool": "^(true|false)$",
    "version": "^[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}$",
    "etcd_flags": f"^$|^{_START_FLAG}(?: {_START_FLAG})*$",
}


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


@dataclass(frozen=True)
class ActionResult:
    """What one action did on each host; ``command_id`` is the SSM command (None locally)."""

    action: str
    command_id: str | None
    hosts: tuple[HostActionResult, ...]

    @property
    def ok(self) -> bool:
        return all(h.status == "Success" for h in self.hosts)


@dataclass(frozen=True)
class Parameter:
    """One parameter of a host command: its key in Python, its SSM name, and what values are allowed."""

    key: str
    ssm_name: str
    pattern: str
    required: bool = False
    default: str | None = None
    description: str = ""


@dataclass(frozen=True)
class DocumentSpec:
    """A host command: an SSM document in AWS (``<stack>-<key>`` unless configured otherwise)."""

    key: str
    description: str
    group: HostGroup
    timeout_seconds: int
    parameters: tuple[Parameter, ...] = field(default=())

    def default_name(self, stack_name: str) -> str:
        """The document's name in the stack ``stack_name`` (template.yaml names it so)."""
        return f"{stack_name}-{self.key}"

    def ssm_parameters(self, values: Mapping[str, str]) -> dict[str, str]:
        """Check ``values`` (Python keys) and return them by SSM name; names the bad parameter."""
        known = {p.key: p for p in self.parameters}
        unknown = sorted(set(values) - set(known))
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise ActionParameterError(f"{self.key}: unknown parameter {unknown[0]!r} (allowed: {allowed})")
        out: dict[str, str] = {}
        for parameter in self.parameters:
            value = values.get(parameter.key)
            if value is None:
                if parameter.required:
                    raise ActionParameterError(f"{self.key}: parameter {parameter.key!r} is required")
                continue
            if not isinstance(value, str) or not re.fullmatch(parameter.pattern, value):
                raise ActionParameterError(
                    f"{self.key}: parameter {parameter.key!r}={value!r} does not match {parameter.pattern}"
                )
            out[parameter.ssm_name] = value
        return out


_MANIFESTS = Parameter(
    "manifest_dir", "ManifestDir", PATTERNS["path"], default="/etc/kubernetes/manifests",
    description="kubelet's static pod directory",
)
_PARKED = Parameter(
    "parked_dir", "ParkedDir", PATTERNS["path"], default="/etc/kubernetes/etcdops-parked",
    description="where manifests wait while their component is stopped (outside the kubelet's directory)",
)

DOCUMENTS: dict[str, DocumentSpec] = {
    spec.key: spec
    for spec in (
        DocumentSpec(
            "StartEtcd",
            "Fetch this member's certificates, write /etc/etcdops/etcd.env and start etcd.service.",
            "etcd",
            300,
            (
                Parameter("member_name", "MemberName", PATTERNS["member"], required=True,
                          description="must equal ETCDOPS_MEMBER of the host (guards against the wrong host)"),
                Parameter("peer_url", "PeerUrl", PATTERNS["url"], required=True),
                Parameter("client_url", "ClientUrl", PATTERNS["url"], required=True),
                Parameter("initial_cluster", "InitialCluster", PATTERNS["initial_cluster"], required=True),
                Parameter("initial_state", "InitialClusterState", PATTERNS["initial_state"], required=True),
                Parameter("initial_cluster_token", "InitialClusterToken", PATTERNS["token"],
                          default="etcd-cluster"),
                Parameter("extra_flags", "ExtraFlags", PATTERNS["etcd_flags"], default="",
                          description="etcd flags for this start only (--max-txn-ops=N, --max-request-bytes=N), "
                          "written to etcd.env as ETCD_* variables"),
            ),
        ),
        DocumentSpec("StopEtcd", "Stop etcd.service (its data stays).", "etcd", 120),
        DocumentSpec(
            "RenewCertificates",
            "Fetch this member's certificate, key and CA again and replace the files in place (etcd loads its "
            "certificate and key on every new TLS connection: no restart).",
            "etcd",
            120,
            (
                Parameter("member_name", "MemberName", PATTERNS["member"], required=True,
                          description="must equal ETCDOPS_MEMBER of the host (guards against the wrong host)"),
            ),
        ),
        DocumentSpec(
            "RestoreDataDir",
            "With etcd stopped: download a snapshot (or copy the database off an attached EBS volume), check its "
            "sha256, move the data dir aside and restore the snapshot into a fresh one.",
            "etcd",
            1800,
            (
                Parameter("snapshot_uri", "SnapshotUri", PATTERNS["snapshot_uri"], required=True,
                          description="s3:// object or presigned https:// URL of the plain snapshot file, or "
                          "ebs://<volume id> of an attached volume holding a member's data (restored without its "
                          "hash check)"),
                Parameter("sha256", "SnapshotSha256", PATTERNS["sha256"], default="",
                          description="the snapshot file's sha256 (hex); empty skips the check"),
                Parameter("initial_cluster", "InitialCluster", PATTERNS["initial_cluster"], required=True),
                Parameter("initial_cluster_token", "InitialClusterToken", PATTERNS["token"],
                          default="etcd-cluster"),
                Parameter("bump_revision", "BumpRevision", "^[0-9]{1,12}$", default="0",
                          description="add --bump-revision N --mark-compacted where the host's tool has both"),
                Parameter("old_data_suffix", "OldDataSuffix", "^([A-Za-z0-9._-]{1,64})?$", default="",
                          description="keep the old data dir as <data-dir>.<suffix> (empty means a time-stamped name)"),
            ),
        ),
        DocumentSpec(
            "SwapEtcdBinary",
            "With etcd stopped: point /usr/local/bin/etcd, etcdctl and etcdutl at the binaries of one etcd "
            "version in /opt/etcd/<version>/ (CheckOnly: only check that they are there and are that version).",
            "etcd",
            120,
            (
                Parameter("version", "Version", PATTERNS["version"], required=True,
                          description="the etcd version to run, e.g. 3.5.30 (its binaries in /opt/etcd/3.5.30/)"),
                Parameter("check_only", "CheckOnly", PATTERNS["bool"], default="false",
                          description="true: change nothing, only check the version's binaries"),
            ),
        ),
        DocumentSpec(
            "StopApiServer",
            "Move the kube-apiserver static pod manifest aside and wait until the container is gone.",
            "control-plane",
            300,
            (_MANIFESTS, _PARKED),
        ),
        DocumentSpec(
            "StartApiServer",
            "Move the kube-apiserver manifest back and wait until the container runs.",
            "control-plane",
            300,
            (_MANIFESTS, _PARKED),
        ),
        DocumentSpec(
            "RestartControlPlane",
            "Restart kube-scheduler and kube-controller-manager (manifests out and back) and kubelet.",
            "control-plane",
            600,
            (
                Parameter("components", "Components", PATTERNS["components"],
                          default="kube-scheduler,kube-controller-manager"),
                Parameter("restart_kubelet", "RestartKubelet", PATTERNS["bool"], default="true"),
                _MANIFESTS,
                _PARKED,
            ),
        ),
    )
}

# The actions run_action knows, by name, and the document each one runs.
ACTIONS: dict[str, str] = {
    "stop-apiserver": "StopApiServer",
    "start-apiserver": "StartApiServer",
    "restart-control-plane": "RestartControlPlane",
    "restore-data-dir": "RestoreDataDir",
    "swap-etcd-binary": "SwapEtcdBinary",
    "renew-certificates": "RenewCertificates",
}


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


def action_spec(action: str) -> DocumentSpec:
    """The document behind a named action, or UnknownActionError naming the known ones."""
    try:
        return DOCUMENTS[ACTIONS[action]]
    except KeyError:
        raise UnknownActionError(
            f"unknown host action {action!r} (known: {', '.join(sorted(ACTIONS))})"
        ) from None


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


def start_flags(flags: Mapping[str, int] | None) -> list[str]:
    """``flags`` (``{"max-txn-ops": 512}``) as etcd command-line flags, in a fixed order; a one-line
    :class:`ActionParameterError` for a flag not in :data:`START_FLAGS` or a value that is not a
    positive whole number."""
    out = []
    for name, value in sorted((flags or {}).items()):
        if name not in START_FLAGS:
            raise ActionParameterError(f"start flag {name!r}: only {', '.join(START_FLAGS)} may be given for one start")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10**10:
            raise ActionParameterError(f"start flag {name}: {value!r} is not a whole number from 1 to 9999999999")
        out.append(f"--{name}={value}")
    return out


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
