"""The host commands, described once: each one's SSM document key, its parameters with the patterns
their values must match, and its deadline (:data:`DOCUMENTS`); the named host actions (:data:`ACTIONS`);
and the etcd flags one start may add (:data:`START_FLAGS`). The EC2 provider sends them as SSM Run
Command documents; the local provider runs the same operations on its processes; docs/host-bootstrap.md
is their contract, tested against this table."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from etcdops.domain.compute.errors import ActionParameterError, UnknownActionError

HostGroup = Literal["etcd", "control-plane"]

_MEMBER = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_URL = r"https://[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}"
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


# the parameters more than one host command takes
_MEMBER_NAME = Parameter(
    "member_name", "MemberName", PATTERNS["member"], required=True,
    description="must equal ETCDOPS_MEMBER of the host (guards against the wrong host)",
)
_INITIAL_CLUSTER = Parameter("initial_cluster", "InitialCluster", PATTERNS["initial_cluster"], required=True)
_CLUSTER_TOKEN = Parameter("initial_cluster_token", "InitialClusterToken", PATTERNS["token"], default="etcd-cluster")
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
                _MEMBER_NAME,
                Parameter("peer_url", "PeerUrl", PATTERNS["url"], required=True),
                Parameter("client_url", "ClientUrl", PATTERNS["url"], required=True),
                _INITIAL_CLUSTER,
                Parameter("initial_state", "InitialClusterState", PATTERNS["initial_state"], required=True),
                _CLUSTER_TOKEN,
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
            (_MEMBER_NAME,),
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
                _INITIAL_CLUSTER,
                _CLUSTER_TOKEN,
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


def action_spec(action: str) -> DocumentSpec:
    """The document behind a named action, or UnknownActionError naming the known ones."""
    try:
        return DOCUMENTS[ACTIONS[action]]
    except KeyError:
        raise UnknownActionError(
            f"unknown host action {action!r} (known: {', '.join(sorted(ACTIONS))})"
        ) from None


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
