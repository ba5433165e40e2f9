"""The files of a local cluster's state directory: where each thing lives, the members' records, the
PKI and configuration a new cluster is given, and the housekeeping of what members and restores leave.

Every other part of :class:`etcdops_local.cluster.LocalCluster` builds on :class:`ClusterFiles`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from etcdops.adapters import pki
from etcdops.adapters.etcd.client import TlsFiles
from etcdops.domain.config import LOCAL_CONFIG_FILE, ClusterConfig, dump_config, parse_config
from etcdops.domain.errors import EtcdopsError, NotFoundError
from etcdops_local.cluster.binaries import EtcdBinaries
from etcdops_local.cluster.processes import LocalMember, LocalState, ProcessState, process_state

DEFAULT_STATE_DIR = Path(".etcdops")
CLUSTER_NAME = "local"
FLEET_DIR = "clusters"  # the local fleet's clusters (local up --clusters N), one state directory each
SCRATCH_DIR = "drill"  # the scratch stack of restore drills, inside the state directory
OLD_DATA_PREFIX = "data.before-restore-"  # old data a restore set aside (``data.<old_data_suffix>``)


class LocalClusterError(EtcdopsError):
    """The local cluster could not be started or driven."""


class ClusterFiles:
    """The state directory of a local cluster rooted at ``state_dir``."""

    # what only a local stack's state directory holds: --purge empties no other directory
    MARKERS = ("local.json", LOCAL_CONFIG_FILE, "pki", "aws.json")

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        self.state_dir = state_dir.absolute()
        self.state_file = self.state_dir / "local.json"
        self.config_file = self.state_dir / LOCAL_CONFIG_FILE
        self.pki_dir = self.state_dir / "pki"
        self.backup_dir = self.state_dir / "backups"

    # ---- paths ---------------------------------------------------------------------------

    def member_dir(self, name: str) -> Path:
        return self.state_dir / "members" / name

    def data_dir(self, name: str) -> Path:
        return self.member_dir(name) / "data"

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(ca=self.trusted_ca, cert=self.pki_dir / "client.crt", key=self.pki_dir / "client.key")

    @property
    def trusted_ca(self) -> Path:
        """The CA file members and clients trust: ``pki/trusted-ca.crt`` (the CA, or during a CA rotation the
        old and the new CA in one bundle); ``pki/ca.crt`` in a stack made before CA rotation existed."""
        bundle = self.pki_dir / "trusted-ca.crt"
        return bundle if bundle.exists() else self.pki_dir / "ca.crt"

    def exists(self) -> bool:
        return self.state_file.exists()

    def state(self) -> LocalState:
        if not self.exists():
            raise NotFoundError(f"no local cluster in {self.state_dir} (run: etcdops local up)")
        return LocalState.load(self.state_file)

    def binaries(self) -> EtcdBinaries:
        return EtcdBinaries.locate(self.state().bin_dir)

    def _write_pki(self, members: Sequence[LocalMember]) -> None:
        ca = pki.create_ca("etcdops local CA")
        pki.write_pem(ca, self.pki_dir / "ca.crt", self.pki_dir / "ca.key")
        pki.write_trusted(self.pki_dir / "trusted-ca.crt", [ca.cert_pem])
        for member in members:
            self.issue_member_certificate(member.name, ca)
        client = pki.issue_certificate(ca, "etcdops", kind="client")
        pki.write_pem(client, self.pki_dir / "client.crt", self.pki_dir / "client.key")

    def issue_member_certificate(self, name: str, ca: pki.KeyPair | None = None) -> None:
        ca = ca or pki.load_pem(self.pki_dir / "ca.crt", self.pki_dir / "ca.key")
        cert = pki.issue_certificate(ca, name, kind="peer", dns_names=["localhost", name], ip_addresses=["127.0.0.1"])
        pki.write_pem(cert, self.pki_dir / f"{name}.crt", self.pki_dir / f"{name}.key")

    def _write_config(self, state: LocalState) -> None:
        config = parse_config(
            {
                "name": CLUSTER_NAME,
                "endpoints": [m.client_url for m in state.members],
                "tls": {k: str(v) for k, v in asdict(self.tls).items()},
                "backup": {
                    "destination": self.backup_dir.as_uri(),
                    "encryption_key": (self.state_dir / "backup.key").as_uri(),
                },
                "compute": {"provider": "local", "state_dir": str(self.state_dir)},
                # the local stack reacts faster than the AWS defaults (K=3 probes over 60 s)
                "health": {"failure_threshold": 3, "failure_window_seconds": 20}
                | ({"quota_backend_bytes": state.quota_backend_bytes} if state.quota_backend_bytes else {}),
            },
            str(self.config_file),
        )
        self.config_file.write_text(dump_config(config))

    def config(self) -> ClusterConfig:
        from etcdops.domain.config import load_config

        return load_config(self.config_file)

    def _state_of(self, member: LocalMember) -> ProcessState:
        return process_state(member.pid, str(self.data_dir(member.name)))

    def member(self, name: str) -> LocalMember:
        state = self.state()
        for member in state.members:
            if member.name == name:
                return member
        known = ", ".join(m.name for m in state.members)
        raise NotFoundError(f"no local member named {name!r} (members: {known})")

    def remove_member_files(self, name: str) -> None:
        """Delete what a retired member left: its data, log and markers. Old data a restore set aside
        (``data.before-restore-*``) stays, as the restore promises, until :meth:`collect_garbage`."""
        folder = self.member_dir(name)
        if not folder.is_dir():
            return
        for entry in folder.iterdir():
            if entry.name.startswith(OLD_DATA_PREFIX):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()

    def collect_garbage(self, older_than: float, now: float | None = None) -> list[Path]:
        """Delete the old data restores set aside more than ``older_than`` seconds ago, and the folders
        of retired members that leaves empty; returns what was deleted."""
        now = time.time() if now is None else now
        live = {m.name for m in self.state().members}
        root = self.state_dir / "members"
        removed: list[Path] = []
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            for aside in sorted(folder.glob(f"{OLD_DATA_PREFIX}*")):
                if now - aside.stat().st_mtime >= older_than:
                    shutil.rmtree(aside)
                    removed.append(aside)
            if folder.name not in live and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                removed.append(folder)
        return removed

    def disk_usage(self) -> int:
        """Bytes the state directory takes on disk (allocated blocks, as ``du`` counts them)."""
        total = 0
        for folder, _, files in os.walk(self.state_dir):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
                except OSError:
                    continue  # deleted while we walked
        return total

    def _purge(self) -> None:
        for entry in self.state_dir.iterdir():
            if entry == self.backup_dir or entry.name == "backup.key":
                continue  # backups outlive the cluster, and are useless without their key
            if entry.name == FLEET_DIR:
                continue  # the fleet's clusters purge themselves, keeping their own backups
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def env(self) -> dict[str, str]:
        """The variables that point etcdctl at this cluster."""
        state = self.state()
        return {
            "ETCDCTL_API": "3",
            "ETCDCTL_ENDPOINTS": ",".join(m.client_url for m in state.members),
            "ETCDCTL_CACERT": str(self.tls.ca),
            "ETCDCTL_CERT": str(self.tls.cert),
            "ETCDCTL_KEY": str(self.tls.key),
        }
