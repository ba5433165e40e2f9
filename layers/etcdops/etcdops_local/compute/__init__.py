"""The local compute provider: hosts are etcd processes of a :class:`~etcdops_local.cluster.LocalCluster`.

- a host is a member record in ``local.json``; ``launch`` reserves its ports and issues its
  certificate (``pki/<name>.crt``/``.key``) without starting etcd;
- the "load balancer" is the ``targets`` list in ``local.json``: ``register_target`` adds the host's
  client URL, ``deregister_target`` removes it (the configuration's endpoints are etcdops's own seeds,
  kept up to date by the runbooks, as in AWS);
- ``boot_seconds`` makes a launched host come online late: until then ``start_etcd``, ``stop_etcd`` and
  host actions on it raise ``HostNotReadyError``, as a fresh EC2 instance does until its SSM agent is
  online;
- ``terminate`` stops the process, forgets the record and deletes the data directory (its log stays);
- host actions: ``restore-data-dir`` restores a snapshot file (``file:///...``) with etcdutl/etcdctl;
  ``swap-etcd-binary`` switches a stopped member to another etcd version the stack has (``local.json``'s
  ``binaries``, added with ``LocalCluster.add_binaries``, as an AMI carries ``/opt/etcd/<version>/``);
  the Kubernetes hooks run the commands given in ``hooks`` (there is no control plane locally), and
  succeed doing nothing without one;
- ``snapshot_volume``: a copy of the member's database file taken while its process is SIGSTOPped
  (:func:`paused_copy`: SIGCONT always, and a watchdog process resumes it should this process die);
- ``preflight``: the CA files sign (``pki/ca.crt`` and ``ca.key``), the etcd binaries run
  (``etcd --version``), the state directory and ``cluster.yaml`` can be written, the commanded
  members exist and the hooks' programs are there.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from etcdops.adapters import pki
from etcdops.adapters.compute.factory import register_provider
from etcdops.domain.compute.base import (
    ActionResult,
    ActionStatus,
    ComputeProvider,
    Host,
    HostActionResult,
    InitialState,
    PreflightPlan,
    VolumeCopy,
    action_spec,
    check_host_name,
    check_initial_cluster,
    start_flags,
)
from etcdops.domain.compute.errors import (
    ActionParameterError,
    ComputeConfigError,
    HostCommandFailedError,
    HostDataNotEmptyError,
    HostNotFoundError,
    HostNotReadyError,
)
from etcdops.domain.config import ClusterConfig, LocalCompute
from etcdops.domain.errors import EtcdopsError, PkiError
from etcdops.domain.findings import Finding
from etcdops_local import ca_rotation
from etcdops_local.cluster import LocalCluster, LocalMember
from etcdops_local.compute.volume_copy import COPY_COMMAND, MAX_PAUSE_SECONDS, _wait_stopped, paused_copy

LOCAL_HOST_ID_PREFIX = "local:"
_HOOK_TIMEOUT = 300.0

__all__ = ["COPY_COMMAND", "MAX_PAUSE_SECONDS", "_wait_stopped", "paused_copy"]  # in volume_copy, importable here


class LocalComputeProvider(ComputeProvider):
    """Hosts as processes on 127.0.0.1, managed through ``cluster`` (a LocalCluster)."""

    def __init__(
        self, cluster: LocalCluster, *, hooks: Mapping[str, Sequence[str]] | None = None, boot_seconds: float = 0.0
    ) -> None:
        self.cluster = cluster
        self.boot_seconds = boot_seconds
        self.copy_command: Sequence[str] = COPY_COMMAND  # tests put a copy they can kill halfway here
        self.max_pause = MAX_PAUSE_SECONDS
        self.hooks = {action: list(argv) for action, argv in (hooks or {}).items()}
        for action in self.hooks:
            if action_spec(action).group != "control-plane":
                raise ComputeConfigError(f"hooks: {action} is not a control-plane action")

    # ---- hosts ---------------------------------------------------------------------------

    def _host(self, member: LocalMember) -> Host:
        process = next(p for p in self.cluster.ps() if p.name == member.name)
        return Host(
            host_id=f"{LOCAL_HOST_ID_PREFIX}{member.name}",
            name=member.name,
            address="127.0.0.1",
            peer_url=member.peer_url,
            client_url=member.client_url,
            state=process.state,
        )

    def find(self, name: str) -> Host | None:
        member = next((m for m in self.cluster.state().members if m.name == name), None)
        return self._host(member) if member else None

    def hosts(self) -> list[Host]:
        return sorted((self._host(m) for m in self.cluster.state().members), key=lambda h: h.name)

    def _require(self, host: Host) -> Host:
        """The host as it is now; HostNotReadyError while it has not come online yet."""
        member = next((m for m in self.cluster.state().members if m.name == host.name), None)
        if member is None:
            raise HostNotFoundError(f"no local host named {host.name!r}")
        if member.online_at is not None and time.time() < member.online_at:
            raise HostNotReadyError(
                f"host {host.name} is not online yet (it comes online in {member.online_at - time.time():.1f} s)"
            )
        return self._host(member)

    # ---- lifecycle -----------------------------------------------------------------------

    def issue_certificates(self, name: str, address_sans: Sequence[str] = ()) -> str:
        """``pki/<name>.crt`` (and ``.key``); kept when it is still valid and signed by our CA.

        Local hosts all live on 127.0.0.1, which the certificate always covers, so other
        ``address_sans`` are refused rather than silently left out.
        """
        check_host_name(name)
        extra = [a for a in address_sans if a not in ("127.0.0.1", "localhost", name)]
        if extra:
            raise ActionParameterError(f"address_sans: local hosts are 127.0.0.1 only, not {', '.join(extra)}")
        pki_dir = self.cluster.pki_dir
        cert, key = pki_dir / f"{name}.crt", pki_dir / f"{name}.key"
        try:
            pki.verify_chain(pki.load_pem(pki_dir / "ca.crt", pki_dir / "ca.key"), pki.load_pem(cert, key))
        except PkiError:
            self.cluster.issue_member_certificate(name)
        return str(cert)

    def renew_certificates(self, host: Host) -> str:
        """A new ``pki/<name>.crt``/``.key``, written where the member reads them (the host's files)."""
        current = self._require(host)
        self.cluster.issue_member_certificate(current.name)
        return f"{pki.certificate_serial(self.cluster.pki_dir / f'{current.name}.crt'):x}"

    def ca_rotation(self) -> dict[str, int]:
        return ca_rotation.recorded(self.cluster.pki_dir)

    def begin_ca_phase(self, phase: int) -> None:
        ca_rotation.begin(self.cluster.pki_dir, phase)

    def finish_ca_phase(self, phase: int) -> None:
        ca_rotation.finish(self.cluster.pki_dir, phase)

    def launch(self, name: str) -> Host:
        check_host_name(name)
        online_at = time.time() + self.boot_seconds if self.boot_seconds else None
        member = self.cluster.reserve_member(name, online_at=online_at)
        return self._host(member)

    def start_etcd(
        self, host: Host, initial_cluster: str, initial_state: InitialState, flags: Mapping[str, int] | None = None
    ) -> None:
        current = self._require(host)
        extra = start_flags(flags)  # after the stack's own flags: these win, for this start only
        check_initial_cluster(current, initial_cluster, initial_state)
        data = self.cluster.data_dir(current.name)
        if initial_state == "existing" and self.cluster.member(current.name).pid is None and (data / "member").exists():
            raise HostDataNotEmptyError(
                f"host {current.name} joins as a new member, but its data directory {data} already holds etcd data "
                "it never wrote (a copy of another member's, or an older one): a new member starts empty and gets "
                "its data from the leader (invariant 20); nothing was started"
            )
        self.cluster.spawn_member(host.name, initial_cluster=initial_cluster, initial_state=initial_state, extra=extra)

    def stop_etcd(self, host: Host) -> None:
        self.cluster.stop_member(self._require(host).name)

    def terminate(self, host: Host) -> None:
        if self.find(host.name) is None:
            return
        self.cluster.stop_member(host.name)
        self.cluster.remove_member_record(host.name)
        self.cluster.remove_member_files(host.name)

    # ---- the "load balancer": targets in local.json -----------------------------------------

    def targets(self) -> list[str]:
        return list(self.cluster.state().targets)

    def register_target(self, host: Host) -> None:
        endpoints = self.targets()
        if host.client_url not in endpoints:
            self.cluster.set_targets([*endpoints, host.client_url])

    def deregister_target(self, host: Host) -> None:
        endpoints = self.targets()
        if host.client_url in endpoints:
            self.cluster.set_targets([e for e in endpoints if e != host.client_url])

    # ---- volume snapshots ----------------------------------------------------------------

    def snapshot_volume(self, host: Host, tags: Mapping[str, str], workdir: str) -> VolumeCopy:
        """The member's database file copied below ``workdir`` while its process is paused (no tags
        are kept locally: the catalogue's manifest says the same)."""
        current = self._require(host)
        member = self.cluster.member(current.name)
        if current.state != "running" or member.pid is None:
            raise HostNotReadyError(f"member {current.name} is {current.state}, not running: no volume copy of it")
        source = self.cluster.data_dir(member.name) / "member" / "snap" / "db"
        target = Path(workdir) / "db"
        paused = paused_copy(member.pid, source, target, command=self.copy_command, max_pause=self.max_pause)
        return VolumeCopy(db_file=str(target), paused_seconds=paused)

    # ---- preflight -----------------------------------------------------------------------

    def preflight(self, plan: PreflightPlan) -> list[Finding]:
        from etcdops_local.compute.preflight import local_preflight

        return local_preflight(self, plan)

    # ---- host actions --------------------------------------------------------------------

    def run_action(
        self, action: str, hosts: Sequence[Host] | None = None, parameters: Mapping[str, str] | None = None
    ) -> ActionResult:
        spec = action_spec(action)
        values = dict(parameters or {})
        spec.ssm_parameters(values)  # the same checks as in AWS
        if action in ("restore-data-dir", "swap-etcd-binary", "renew-certificates"):
            targets = [self._require(h) for h in (hosts if hosts is not None else self.hosts())]
            run = {"restore-data-dir": self._restore, "swap-etcd-binary": self._swap}.get(action, self._in_place)
            results = [run(host, values) for host in targets]
        else:
            targets = list(hosts) if hosts is not None else [Host("local", "localhost", "127.0.0.1", "", "", "running")]
            results = [self._hook(action, host, values) for host in targets]
        result = ActionResult(action, None, tuple(results))
        if not result.ok:
            failed = "; ".join(f"{h.name}: {h.last_line(h.status)}" for h in result.failed)
            raise HostCommandFailedError(f"{action} failed on {failed}", result)
        return result

    def _restore(self, host: Host, values: Mapping[str, str]) -> HostActionResult:
        uri = urlsplit(values["snapshot_uri"])
        if uri.scheme != "file":
            raise ActionParameterError(f"snapshot_uri: the local stack reads file:/// URIs only, not {uri.scheme}://")
        snapshot = Path(unquote(uri.path))
        if not snapshot.is_file():
            return HostActionResult(host.host_id, host.name, "Failed", f"snapshot {snapshot} does not exist")
        expected = values.get("sha256")
        if expected:
            digest = hashlib.sha256()
            with snapshot.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != expected:
                return HostActionResult(host.host_id, host.name, "Failed", f"{snapshot}: sha256 does not match")
        try:
            aside = self.cluster.restore_member_data(
                host.name,
                snapshot,
                initial_cluster=values["initial_cluster"],
                token=values.get("initial_cluster_token"),
                bump_revision=int(values.get("bump_revision") or 0),
                old_data_suffix=values.get("old_data_suffix") or None,
            )
        except EtcdopsError as exc:
            return HostActionResult(host.host_id, host.name, "Failed", str(exc))
        return HostActionResult(host.host_id, host.name, "Success", f"restored {snapshot}; old data in {aside}")

    def _swap(self, host: Host, values: Mapping[str, str]) -> HostActionResult:
        """SwapEtcdBinary: the member runs etcd ``version`` from its next start (``check_only``: only check
        the stack has that version's binaries), as /usr/local/bin's links are switched on a host."""
        version = values["version"]
        try:
            binaries = self.cluster.binaries_for(version)
            if values.get("check_only") == "true":
                return HostActionResult(host.host_id, host.name, "Success", f"etcd {version} is in {binaries.bin_dir}")
            self.cluster.swap_member_binaries(host.name, binaries)
        except EtcdopsError as exc:
            return HostActionResult(host.host_id, host.name, "Failed", str(exc))
        done = f"{host.name} runs etcd {version} from its next start"
        return HostActionResult(host.host_id, host.name, "Success", done)

    def _in_place(self, host: Host, values: Mapping[str, str]) -> HostActionResult:
        """RenewCertificates: a local member reads ``pki/<name>.crt``/``.key`` itself, where they are issued;
        this checks they are there and signed by the CA."""
        if values.get("member_name") != host.name:
            return HostActionResult(host.host_id, host.name, "Failed", f"this host is {host.name}, not {values}")
        pki_dir = self.cluster.pki_dir
        try:
            pki.verify_chain(
                pki.load_pem(pki_dir / "ca.crt", pki_dir / "ca.key"),
                pki.load_pem(pki_dir / f"{host.name}.crt", pki_dir / f"{host.name}.key"),
            )
        except PkiError as exc:
            return HostActionResult(host.host_id, host.name, "Failed", str(exc))
        return HostActionResult(host.host_id, host.name, "Success", f"{host.name}'s certificate is in {pki_dir}")

    def _hook(self, action: str, host: Host, values: Mapping[str, str]) -> HostActionResult:
        argv = self.hooks.get(action)
        if not argv:
            return HostActionResult(
                host.host_id, host.name, "Success", "no Kubernetes control plane in the local stack: nothing to do"
            )
        env = {
            **os.environ,
            "ETCDOPS_ACTION": action,
            "ETCDOPS_HOST": host.name,
            **{f"ETCDOPS_{k.upper()}": v for k, v in values.items()},
        }
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=_HOOK_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return HostActionResult(host.host_id, host.name, "TimedOut", f"{argv[0]} ran over {_HOOK_TIMEOUT:.0f}s")
        except OSError as exc:
            return HostActionResult(host.host_id, host.name, "Failed", f"{argv[0]}: {exc.strerror or exc}")
        status: ActionStatus = "Success" if done.returncode == 0 else "Failed"
        return HostActionResult(host.host_id, host.name, status, (done.stdout + done.stderr).strip())


def open_local_compute(config: ClusterConfig, hooks: Mapping[str, Sequence[str]] | None) -> LocalComputeProvider:
    """The local provider for a ``compute: {provider: local}`` configuration (the factory's opener)."""
    compute = config.compute
    if not isinstance(compute, LocalCompute):
        raise ComputeConfigError("compute: the local provider needs compute.provider: local")
    return LocalComputeProvider(LocalCluster(Path(compute.state_dir)), hooks=hooks, boot_seconds=compute.boot_seconds)


def open_local_scratch(config: ClusterConfig) -> LocalComputeProvider:
    """The local scratch pool: processes of the scratch stack ``drill/`` beside the cluster's (restore drills)."""
    compute = config.compute
    if not isinstance(compute, LocalCompute):
        raise ComputeConfigError("compute: the local provider needs compute.provider: local")
    return LocalComputeProvider(LocalCluster(Path(compute.state_dir)).scratch())


def register_local_provider() -> None:
    """Let ``open_compute`` open ``compute.provider: local`` in this process (the local stack calls it)."""
    register_provider("local", open_local_compute, open_local_scratch)
