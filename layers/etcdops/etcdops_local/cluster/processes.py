"""A local cluster's members as records (``local.json``) and as processes: free ports, and whether a
member's process runs, is paused or is gone."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from etcdops.domain.errors import ConfigError

ProcessState = Literal["running", "paused", "stopped"]


@dataclass
class LocalMember:
    name: str
    client_port: int
    peer_port: int
    pid: int | None = None
    online_at: float | None = None  # a launched host takes commands from this time on (epoch seconds)
    bin_dir: str | None = None  # this member's etcd when it differs from the cluster's (a mixed cluster)

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"


@dataclass
class LocalState:
    token: str
    bin_dir: str
    version: str
    members: list[LocalMember]
    extra_args: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)  # the "load balancer": client URLs clients are sent to
    # other etcd versions the members may be switched to (an upgrade's binaries): version -> bin_dir
    binaries: dict[str, str] = field(default_factory=dict)
    # etcd's --quota-backend-bytes for every member (None: etcd's default, 2 GiB)
    quota_backend_bytes: int | None = None

    @classmethod
    def load(cls, path: Path) -> LocalState:
        try:
            data = json.loads(path.read_text())
            data["members"] = [LocalMember(**m) for m in data["members"]]
            data.setdefault("targets", [m.client_url for m in data["members"]])  # written before targets existed
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ConfigError(
                f"{path}: not a local stack state file ({type(exc).__name__}); fix or remove it "
                "(members it started may still run)"
            ) from None

    def save(self, path: Path) -> None:
        # a temporary file of this writer's own, so that two writers never rename each other's file
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


_THREAD_LOCKS: dict[Path, threading.RLock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
_HELD = threading.local()


@contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """Hold the state file ``path`` for one read-modify-write: the health rounds, the runbook steps and the
    CLI change it from several threads and processes, and an unlocked one loses another's change (a member
    record or pid put back as it was). Re-entrant in one thread; ``flock`` on ``<path>.lock`` across processes."""
    key = path.resolve()
    with _THREAD_LOCKS_GUARD:
        lock = _THREAD_LOCKS.setdefault(key, threading.RLock())
    with lock:
        held: dict[Path, int] = _HELD.__dict__.setdefault("depth", {})
        if held.get(key):
            held[key] += 1
            try:
                yield
            finally:
                held[key] -= 1
            return
        key.parent.mkdir(parents=True, exist_ok=True)
        with open(key.with_name(key.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            held[key] = 1
            try:
                yield
            finally:
                held[key] = 0
                fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class MemberProcess:
    name: str
    pid: int | None
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    data_dir: str
    state: ProcessState


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def process_state(pid: int | None, marker: str, proc: Path = Path("/proc")) -> ProcessState:
    """running / paused (SIGSTOP) / stopped, for a pid whose command line must contain ``marker``.

    A process caught in the middle of its exec has an empty command line for a moment (the kernel is
    swapping its memory): it counts as running when its name is etcd's, so a member just spawned is
    waited for rather than taken for dead (or for absent, which once let ``up`` return before etcd
    listened)."""
    if not pid:
        return "stopped"
    try:
        stat = (proc / str(pid) / "stat").read_text()
        cmdline = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "stopped"
    name, _, rest = stat.partition(" (")[2].rpartition(")")
    if not cmdline.strip():
        if not name.startswith("etcd"):
            return "stopped"
    elif marker not in cmdline:
        return "stopped"  # the pid was reused by another process
    state = rest.split()[0]
    if state in ("Z", "X"):
        return "stopped"
    return "paused" if state in ("T", "t") else "running"
