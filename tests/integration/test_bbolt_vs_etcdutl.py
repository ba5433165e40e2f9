"""etcdops.adapters.bbolt against etcd's own ``snapshot status`` on snapshots from real etcd 3.4, 3.5.1 and 3.5.30.

One plaintext single-member etcd per version; snapshots are taken as the data grows: empty, many
small keys (enough for multi-level branch pages), after deletes and a compaction, with large
values, and after deleting most large values (free pages holding stale multi-page spans).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from etcd_versions import ETCD_VERSIONS, etcd_flavour

from etcdops.adapters.bbolt import SnapshotSummarizer, inspect_file
from etcdops.adapters.etcd.client import EtcdClient

pytestmark = pytest.mark.integration

SCENARIOS = ["empty", "small-keys", "compacted", "large-values", "large-deleted"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Etcd:
    """A single-member plaintext etcd that this test started (and stops)."""

    bin_dir: Path
    has_etcdutl: bool
    endpoint: str
    process: subprocess.Popen[bytes]

    def ctl(self, *args: str, stdin: bytes | None = None) -> str:
        env = {**os.environ, "ETCDCTL_API": "3"}
        result = subprocess.run(
            [str(self.bin_dir / "etcdctl"), f"--endpoints={self.endpoint}", *args],
            input=stdin,
            capture_output=True,
            env=env,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed: {result.stderr.decode()}")
        return result.stdout.decode()

    def reference_status(self, snapshot: Path) -> dict[str, int]:
        """``etcdutl snapshot status -w json`` (3.5) or ``etcdctl snapshot status -w json`` (3.4)."""
        tool = "etcdutl" if self.has_etcdutl else "etcdctl"
        env = {**os.environ, "ETCDCTL_API": "3"}
        result = subprocess.run(
            [str(self.bin_dir / tool), "snapshot", "status", "-w", "json", str(snapshot)],
            capture_output=True,
            env=env,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr.decode()
        data: dict[str, int] = json.loads(result.stdout)
        return data


@pytest.fixture(scope="module")
def _etcd_procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def _start_etcd(bin_dir: Path, workdir: Path, procs: list[subprocess.Popen[bytes]]) -> _Etcd:
    client_port, peer_port = _free_port(), _free_port()
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "etcd.log").open("wb")
    cmd = [
        str(bin_dir / "etcd"),
        "--name=n1",
        f"--data-dir={workdir / 'data'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=n1={peer}",
        "--max-request-bytes=2000000",
        "--max-txn-ops=10000",
        "--quota-backend-bytes=4294967296",
    ]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    procs.append(process)
    etcd = _Etcd(bin_dir, (bin_dir / "etcdutl").exists(), client, process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"etcd exited: {(workdir / 'etcd.log').read_text()[-2000:]}")
        try:
            etcd.ctl("endpoint", "health")
            return etcd
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _put_many(etcd: _Etcd, prefix: str, count: int, batch: int = 1000) -> None:
    for start in range(0, count, batch):
        keys = range(start, min(count, start + batch))
        ops = "".join(f"put {prefix}{i:06d} value-{i}-{'x' * (i % 50)}\n" for i in keys)
        etcd.ctl("txn", stdin=("\n" + ops + "\n\n").encode())


def _build_snapshots(etcd: _Etcd, out: Path) -> dict[str, Path]:
    snaps: dict[str, Path] = {}

    def save(name: str) -> None:
        path = out / f"{name}.snap"
        etcd.ctl("snapshot", "save", str(path))
        snaps[name] = path

    save("empty")
    _put_many(etcd, "/small/a/", 12000)
    _put_many(etcd, "/small/b/", 8000)
    save("small-keys")
    with EtcdClient([etcd.endpoint], plaintext=True) as client:
        client.delete("/small/a/", prefix=True)
        for i in range(0, 8000, 3):
            client.delete(f"/small/b/{i:06d}")
        rev = client.put("/after-delete", "1")
        client.compact(rev)
        save("compacted")
        blob = os.urandom(1 << 20)
        for i in range(100):
            rev = client.put(f"/large/{i:03d}", blob[i:] + blob[:i])
        save("large-values")
        for i in range(0, 100, 4):
            client.delete(f"/large/{i:03d}")
        client.delete("/large/099")
        rev = client.put("/large/new", blob[:300000])
        client.compact(rev)
        save("large-deleted")
    return snaps


@pytest.fixture(scope="module", params=sorted(ETCD_VERSIONS))
def snapshots(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _etcd_procs: list[subprocess.Popen[bytes]],
) -> tuple[_Etcd, dict[str, Path]]:
    bin_dir = etcd_flavour(request.param).bin_dir
    work = tmp_path_factory.mktemp(request.param)
    etcd = _start_etcd(bin_dir, work / "member", _etcd_procs)
    try:
        snaps = _build_snapshots(etcd, work)
    finally:
        etcd.process.terminate()
        etcd.process.wait(10)
        shutil.rmtree(work / "member", ignore_errors=True)
    return etcd, snaps


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_matches_reference_status(snapshots: tuple[_Etcd, dict[str, Path]], scenario: str) -> None:
    etcd, snaps = snapshots
    path = snaps[scenario]
    expected = etcd.reference_status(path)
    info = inspect_file(path)
    got = info.summary
    assert info.has_sha256_trailer and info.sha256_ok
    assert {
        "hash": got.hash,
        "revision": got.revision,
        "totalKey": got.total_keys,
        "totalSize": got.total_size,
    } == {k: expected[k] for k in ("hash", "revision", "totalKey", "totalSize")}
    assert got.db_bytes == info.file_size - 32 == got.total_size


def test_multilevel_branches(snapshots: tuple[_Etcd, dict[str, Path]]) -> None:
    """The small-keys snapshot has a tree of at least three levels (branch, branch, leaf)."""
    _, snaps = snapshots
    data = snaps["small-keys"].read_bytes()[:-32]
    s = SnapshotSummarizer()
    for i in range(0, len(data), 65536):
        s.update(data[i : i + 65536])
    s.finish()
    assert s.stats["depth"] >= 3


def test_odd_chunks_large(snapshots: tuple[_Etcd, dict[str, Path]]) -> None:
    """Multi-page leaves split across odd-sized chunks give the same result as whole-file reads."""
    _, snaps = snapshots
    path = snaps["large-deleted"]
    whole = inspect_file(path, chunk_size=1 << 24).summary
    assert inspect_file(path, chunk_size=12345).summary == whole
