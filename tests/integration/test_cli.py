"""The ``etcdops`` command as an operator runs it: local stack, status, errors."""

from __future__ import annotations

import errno
import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from builders import write_until_nospace
from etcd_versions import E2E_VERSIONS, etcd_flavour

from etcdops.adapters import pki
from etcdops_local.cli import main as cli
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.integration


class Cli:
    """Runs ``etcdops`` in this process (``main``, what ``python -m etcdops_local.cli.main`` calls) in a
    folder, with its output captured: the same answer as a subprocess without starting an interpreter and
    importing the package each time (seconds per command on a busy machine). ``local up`` and the
    one-line errors run as real processes in their own tests."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self._monkeypatch = monkeypatch
        self._capsys = capsys

    def __call__(
        self, cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True, disk_full: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run one command; ``disk_full``: the disk is full when a file is flushed (fsync: ENOSPC)."""
        self._capsys.readouterr()
        with self._monkeypatch.context() as patch:
            patch.chdir(cwd)
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            if disk_full:
                patch.setattr(os, "fsync", _no_space)
            code = cli.main(list(args))
        out, err = self._capsys.readouterr()
        if check:
            assert code == 0, err
        return subprocess.CompletedProcess(["etcdops", *args], code, out, err)

    def on_a_full_disk(self, cwd: Path, *args: str) -> tuple[int, str]:
        """Run a command that writes a file on a full disk: it fails in one last line, no traceback."""
        result = self(cwd, *args, check=False, disk_full=True)
        # progress notes ("streaming snapshot from m2 ...") may come first; the error is the one last line
        *notes, last = result.stderr.splitlines()
        assert result.stdout == "" and last.startswith("etcdops: ") and "Traceback" not in result.stderr
        assert not any(note.startswith("etcdops") for note in notes)
        return result.returncode, last


def _no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capsys)


def etcdops(
    cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``etcdops`` as a process of its own."""
    result = subprocess.run(
        [sys.executable, "-m", "etcdops_local.cli.main", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


@pytest.fixture
def stack(tmp_path: Path, etcd_binaries: EtcdBinaries, run: Cli):  # type: ignore[no-untyped-def]
    """A folder for a local stack of this etcd version, stopped afterwards. Only the test of ``local up``
    itself starts the autopilot: the commands the other tests run never use it, and its start-up
    (the emulated AWS stack) is most of a ``local up``'s time."""
    env = {"ETCD_BIN_DIR": str(etcd_binaries.bin_dir)}
    yield tmp_path, env
    run(tmp_path, "local", "down", check=False)


def test_local_up_is_idempotent_and_status_reports_failures(
    stack: tuple[Path, dict[str, str]], etcd_binaries: EtcdBinaries, run: Cli
) -> None:
    cwd, env = stack
    # Given a local stack started twice
    first = as_json(etcdops(cwd, "local", "up", "--json", env=env))
    # (the second time also given another etcd its members may be upgraded to: here its own directory)
    other = str(etcd_binaries.bin_dir)
    second = as_json(etcdops(cwd, "local", "up", "--json", "--also-etcd", other, env=env))
    assert first["started"] == ["m1", "m2", "m3"] and first["created"] is True
    assert second["started"] == [] and second["created"] is False
    assert first["other_versions"] == {} and second["other_versions"] == {etcd_binaries.version: other}
    assert [m["pid"] for m in first["members"]] == [m["pid"] for m in second["members"]]
    assert (cwd / ".etcdops" / "cluster.yaml").exists()

    ps = as_json(run(cwd, "local", "ps", "--json"))
    assert [(p["name"], p["state"]) for p in ps] == [("m1", "running"), ("m2", "running"), ("m3", "running")]
    assert all(p["client_urls"][0].startswith("https://127.0.0.1:") for p in ps)
    assert run(cwd, "local", "ps").stdout.splitlines()[-1].startswith(f"state folder {cwd / '.etcdops'}: ")
    gc = as_json(run(cwd, "local", "gc", "--json"))
    assert gc["removed"] == [] and gc["state_dir_bytes"] > 0  # no restore ran: nothing set aside

    if etcd_binaries.version == etcd_flavour(E2E_VERSIONS[-1]).version:  # the wiring is the same on every version
        # delta runs by hand, the chain head in the local stack's state table (the autopilot's own runs may store
        # a range first: then a run by hand stores nothing and says so); a write, then a run: a delta holds it
        first = as_json(run(cwd, "backup", "run", "--kind", "delta", "--json"))
        assert first["action"] in ("new-chain", "delta", "none", "lost-race") and first["broken"] is None, first
        with LocalCluster(cwd / ".etcdops").client() as client:
            written = client.put("/by-hand", "1")
        again = as_json(run(cwd, "backup", "run", "--kind", "delta", "--json"))
        assert again["action"] in ("delta", "none", "lost-race") and again["broken"] is None, again
        listed = as_json(run(cwd, "backup", "list", "--json"))
        (chain,) = listed["chains"]
        assert chain["cluster_id"] == listed["cluster_id"] and not chain["problems"] and chain["to_revision"] >= written
        # a new chain by hand (the remedy for a break inside the chain): from a fresh full backup, nothing broken
        asked = as_json(run(cwd, "backup", "run", "--kind", "delta", "--new-chain", "--json"))
        assert asked["action"] in ("new-chain", "lost-race") and asked["broken"] is None and asked["backup_id"], asked
        assert asked["action"] == "lost-race" or "asked for by hand" in asked["reason"]

        # a registered cluster of the local fleet: `--cluster c1` runs its delta, on its chain in its own store
        run(cwd, "local", "up", "--clusters", "1", env=env)
        ran = as_json(run(cwd, "backup", "run", "--kind", "delta", "--cluster", "c1", "--json"))
        assert ran["action"] in ("new-chain", "delta", "none", "lost-race") and ran["broken"] is None, ran
        with LocalCluster(cwd / ".etcdops" / "clusters" / "c1").client() as client:
            in_c1 = client.put("/c1-by-hand", "1")
        ran = as_json(run(cwd, "backup", "run", "--kind", "delta", "--cluster", "c1", "--json"))
        assert ran["action"] in ("delta", "none", "lost-race") and ran["broken"] is None, ran
        c1 = as_json(run(cwd, "backup", "list", "--cluster", "c1", "--json"))
        (c1_chain,) = c1["chains"]
        assert c1_chain["cluster_id"] == c1["cluster_id"] != listed["cluster_id"] and not c1_chain["problems"]
        assert c1_chain["to_revision"] >= in_c1
        # the stack's own cluster: its chain alone in its store, none of c1's
        assert [c["chain"] for c in as_json(run(cwd, "backup", "list", "--json"))["chains"]] == [chain["chain"]]

    status = as_json(run(cwd, "status", "--json"))
    assert status["has_quorum"] and status["leader"]
    assert {"cluster_id", "leader", "has_quorum", "members", "alarms"} <= status.keys()
    major, minor = etcd_binaries.version.split(".")[:2]
    assert status["cluster_version"] == f"{major}.{minor}.0"  # etcd's own, from a member's /version
    assert {m["version"] for m in status["members"]} == {etcd_binaries.version}
    member_fields = {
        "id",
        "name",
        "client_urls",
        "peer_urls",
        "is_learner",
        "healthy",
        "error",
        "db_size",
        "db_size_in_use",
        "raft_index",
        "raft_term",
        "version",
        "fragmentation",
        "quota_used",
    }
    assert all(member_fields <= m.keys() for m in status["members"])
    for m in status["members"]:  # the shares of the file: free pages, and of the quota the config states
        assert m["fragmentation"] == round(1 - m["db_size_in_use"] / m["db_size"], 4)
        assert m["quota_used"] == round(m["db_size"] / status["quota_backend_bytes"], 4)
    shown = run(cwd, "status").stdout
    assert "FRAGMENTED" in shown and "QUOTA" in shown
    assert f"{100 * status['members'][0]['quota_used']:.0f} %" in shown.splitlines()[3]
    follower = next(m["name"] for m in status["members"] if m["id"] != status["leader"])
    other = next(m["name"] for m in status["members"] if m["id"] != status["leader"] and m["name"] != follower)

    # When one follower is killed
    run(cwd, "local", "kill", follower)
    killed = run(cwd, "status", "--json")

    # Then only it is reported unhealthy, with an error, and the cluster keeps quorum
    report = as_json(killed)
    assert [(m["name"], bool(m["error"])) for m in report["members"] if not m["healthy"]] == [(follower, True)]
    assert report["has_quorum"] and report["quorum_margin"] == 0

    # When another is paused as well (quorum lost: the survivor cannot serve linearizable reads)
    run(cwd, "local", "pause", other)
    try:
        paused = run(cwd, "status", "--json", check=False)
    finally:
        run(cwd, "local", "resume", other)

    # Then the status says so and exits 1; the paused member was cut off by the probe deadline
    # (how long the answer takes is measured by bench/bench_probe.py, not asserted here)
    report = as_json(paused)
    by_name = {m["name"]: m for m in report["members"]}
    assert not by_name[other]["healthy"] and "deadline" in by_name[other]["error"]
    assert paused.returncode == 1 and not report["has_quorum"]

    states = {p["name"]: p["state"] for p in as_json(run(cwd, "local", "ps", "--json"))}
    assert states[follower] == "stopped" and states[other] == "running"

    # When `local up` runs on the partly stopped stack, Then it starts the stopped member again and says so
    again = run(cwd, "local", "up", env=env).stdout
    assert again.startswith(f"local cluster: started {follower} again (3 members in all), etcd "), again
    assert "autopilot (emulated AWS) already running" in again
    states = {p["name"]: p["state"] for p in as_json(run(cwd, "local", "ps", "--json"))}
    assert set(states.values()) == {"running"}, states


def test_local_env_prints_etcdctl_exports(
    stack: tuple[Path, dict[str, str]], run: Cli, etcd_binaries: EtcdBinaries
) -> None:
    cwd, env = stack
    run(cwd, "local", "up", "--no-autopilot", env=env)

    text = run(cwd, "local", "env").stdout
    exported = as_json(run(cwd, "local", "env", "--json"))

    assert exported["ETCDCTL_API"] == "3"
    for name in ("ETCDCTL_ENDPOINTS", "ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY"):
        assert f"export {name}={exported[name]}" in text
    # etcdctl snapshot save refuses several endpoints: the text says how to run it
    first = exported["ETCDCTL_ENDPOINTS"].split(",")[0]
    assert f"etcdctl --endpoints={first} snapshot save FILE" in text

    # and etcdops itself understands the exports, with no configuration in sight
    elsewhere = cwd / "elsewhere"
    elsewhere.mkdir()
    status = as_json(run(elsewhere, "status", "-w", "json", env={**exported, "ETCDOPS_CONFIG": ""}))
    assert status["has_quorum"] and len(status["members"]) == 3

    # and the PATH it sets finds this etcdops and the stack's own etcdctl first, whatever else is installed
    assert f'export PATH={etcd_binaries.bin_dir}:{Path(sys.executable).parent}:"$PATH"' in text
    shell = subprocess.run(["bash", "-c", 'eval "$(etcdops local env)" && etcdctl version && command -v etcdops'],
                           cwd=cwd, env={**os.environ, "PATH": exported["PATH"]}, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert f"etcdctl version: {etcd_binaries.version}" in shell.stdout, shell.stderr
    assert shell.stdout.splitlines()[-1] == str(Path(sys.executable).parent / "etcdops")


def test_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    no_config = etcdops(tmp_path, "status", check=False, env={"ETCDOPS_CONFIG": ""})
    assert no_config.returncode == 1
    assert no_config.stderr.count("\n") == 1 and "etcdops local up" in no_config.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nendpoints: ['http://127.0.0.1:1']\n")
    invalid = etcdops(tmp_path, "status", "--config", str(bad), check=False)
    assert invalid.returncode == 1
    assert (
        invalid.stderr.strip()
        == f"etcdops: ConfigError: {bad}: endpoints: http:// endpoints need plaintext: true (TLS is the default)"
    )

    unknown = etcdops(tmp_path, "local", "kill", "m9", check=False)
    assert unknown.returncode == 1 and "no local cluster" in unknown.stderr


def test_local_up_quota_backend_bytes_starts_members_with_that_quota(
    stack: tuple[Path, dict[str, str]], run: Cli
) -> None:
    from etcdops_local.cluster import LocalCluster

    cwd, env = stack
    quota = 256 * 1024
    # Given a one-member local stack made with a 256 KiB backend quota
    up = as_json(
        run(
            cwd,
            "local",
            "up",
            "--members",
            "1",
            "--no-autopilot",
            "--quota-backend-bytes",
            str(quota),
            "--json",
            env=env,
        )
    )
    assert up["quota_backend_bytes"] == quota
    cluster = LocalCluster(cwd / ".etcdops")
    assert cluster.config().health.quota_backend_bytes == quota  # HealthCheck and maintenance judge by it
    # When it is filled with 16 KiB values, etcd refuses a write with NOSPACE (builders.write_until_nospace:
    # once the quota's worth is written and etcd sees its size over the quota, the next write must be refused)
    write_until_nospace(cluster, ((f"fill/{i}".encode(), b"x" * 16384) for i in itertools.count()), quota)
    with cluster.client() as client:
        assert [a.alarm for a in client.alarms()] == ["NOSPACE"]
    # Asking the existing cluster for another quota is refused in one line, and nothing is restarted
    pids = [m["pid"] for m in as_json(run(cwd, "local", "ps", "--json"))]
    other = run(cwd, "local", "up", "--quota-backend-bytes", str(2 * quota), check=False, env=env)
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and "was made with 262144" in other.stderr
    assert [m["pid"] for m in as_json(run(cwd, "local", "ps", "--json"))] == pids
    same = as_json(run(cwd, "local", "up", "--no-autopilot", "--quota-backend-bytes", str(quota), "--json", env=env))
    assert same["started"] == []
    # A quota etcd cannot work with is a usage error
    tiny = run(cwd, "local", "up", "--quota-backend-bytes", "1000", check=False, env=env)
    assert tiny.returncode != 0 and "64 KiB" in tiny.stderr and "Traceback" not in tiny.stderr


def test_snapshot_save_and_inspect_agree_with_etcds_tool(
    stack: tuple[Path, dict[str, str]],
    etcd_binaries: EtcdBinaries,
    run: Cli,
) -> None:
    cwd, env = stack
    run(cwd, "local", "up", "--no-autopilot", env=env)
    saved = as_json(run(cwd, "snapshot", "save", "snap.db", "--json"))
    assert saved["size"] == (cwd / "snap.db").stat().st_size and not list(cwd.glob(".snap.db*"))

    ours = as_json(run(cwd, "snapshot", "inspect", "snap.db", "--json"))
    tool = [str(etcd_binaries.etcdutl)] if etcd_binaries.etcdutl else [str(etcd_binaries.etcdctl)]
    theirs = json.loads(
        subprocess.run(
            [*tool, "snapshot", "status", "snap.db", "-w", "json"],
            cwd=cwd,
            check=True,
            capture_output=True,
            text=True,
            env={"ETCDCTL_API": "3"},
        ).stdout
    )
    assert (ours["hash"], ours["revision"], ours["total_keys"], ours["total_size"]) == (
        theirs["hash"],
        theirs["revision"],
        theirs["totalKey"],
        theirs["totalSize"],
    )

    # a truncated copy gets one clear line and a non-zero exit
    data = (cwd / "snap.db").read_bytes()
    (cwd / "cut.db").write_bytes(data[: len(data) // 2])
    cut = run(cwd, "snapshot", "inspect", "cut.db", check=False)
    assert cut.returncode == 1 and cut.stderr.count("\n") == 1 and "SnapshotIntegrityError" in cut.stderr

    # a full disk: one line, and neither the file nor its partial copy is left
    code, err = run.on_a_full_disk(cwd, "snapshot", "save", "full.db")
    assert code == 1 and "No space left on device" in err
    assert not list(cwd.glob("*full.db*"))


def test_backup_commands_round_trip(stack: tuple[Path, dict[str, str]], run: Cli) -> None:
    cwd, env = stack
    run(cwd, "local", "up", "--no-autopilot", env=env)
    made = as_json(run(cwd, "backup", "run", "--json"))
    listed = as_json(run(cwd, "backup", "list", "--json"))
    assert [b["id"] for b in listed["backups"]] == [made["id"]] and listed["backups"][0]["verified"] is True
    assert listed["backups"][0]["incarnation"] == "live" and listed["cluster_id"] == made["cluster_id"]
    assert (cwd / ".etcdops" / "backup.key").stat().st_mode & 0o777 == 0o600

    verified = as_json(run(cwd, "backup", "verify", made["id"], "--json"))
    assert verified["ok"] and verified["revision"] == made["revision"]
    # verify reports its progress up to the whole snapshot
    from etcdops.adapters.backup.target import open_backup_target
    from etcdops.app.backup.verify import verify_backup
    from etcdops.domain.config import load_config

    seen: list[tuple[int, int | None]] = []
    store, keyring = open_backup_target(load_config(cwd / ".etcdops" / "cluster.yaml"))
    verify_backup(store, keyring, made["id"], progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (made["size_plain"], made["size_plain"])
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    fetched = as_json(run(cwd, "backup", "fetch", made["id"], "f.db", "--json"))
    assert Path(fetched["path"]).stat().st_size == made["size_plain"]
    code, err = run.on_a_full_disk(cwd, "backup", "fetch", made["id"], "full.db")
    assert code == 1 and "No space left on device" in err and not list(cwd.glob("*full.db*"))

    no_table = run(cwd, "backup", "run", "--kind", "delta", check=False)  # no autopilot: no state table
    assert no_table.returncode == 1 and no_table.stderr.count("\n") == 1 and "ETCDOPS_TABLE" in no_table.stderr
    assert not (LocalCluster(cwd / ".etcdops").backup_dir / "deltas").exists()  # nothing was stored

    unknown = run(cwd, "backup", "verify", "20200101T000000Z-abcdef", check=False)
    assert unknown.returncode == 1 and "BackupNotFoundError" in unknown.stderr
    malformed = run(cwd, "backup", "verify", "nope", check=False)
    assert malformed.returncode == 2 and "not a backup id" in malformed.stderr

    # a backup of an earlier cluster with the same name is listed as another incarnation's; a corrupt manifest
    # and orphan objects (runs that failed before their manifest) are reported, never fatal
    store = cwd / ".etcdops" / "backups"
    (store / "20200102T000000Z-0c0c0c.snapshot.enc").write_bytes(b"ciphertext")
    (store / "20200102T000000Z-0c0c0c.manifest.json").write_text('{"id": "20200102T000000Z-0c0c0c", "cut sh')
    (store / "20200101T000000Z-0a0a0a.snapshot.enc").write_bytes(b"an old orphan")
    young = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-0b0b0b"
    (store / f"{young}.snapshot.enc").write_bytes(b"a young orphan")
    again = run(cwd, "backup", "run", "--json")
    assert "warning: manifest 20200102T000000Z-0c0c0c.manifest.json cannot be read" in again.stderr
    assert "20200101T000000Z-0a0a0a" in as_json(again)["pruned"]  # past the grace period
    earlier = {**made, "id": "20200103T000000Z-0d0d0d", "cluster_id": "abc"}
    outcome = ("attempts", "seconds", "command_seconds", "pruned", "warnings")  # the run's, not the manifest's
    earlier = {k: v for k, v in earlier.items() if k not in outcome}
    (store / "20200103T000000Z-0d0d0d.manifest.json").write_text(json.dumps(earlier))
    listed = as_json(run(cwd, "backup", "list", "--json"))
    incarnations = {b["id"]: b["incarnation"] for b in listed["backups"]}
    assert incarnations == {"20200103T000000Z-0d0d0d": "other", made["id"]: "live", as_json(again)["id"]: "live"}
    assert [c["id"] for c in listed["corrupt"]] == ["20200102T000000Z-0c0c0c"]
    assert [o["id"] for o in listed["orphans"]] == [young]
    text = run(cwd, "backup", "list")
    assert "abc (other incarnation)" in text.stdout and f"live cluster id: {made['cluster_id']}" in text.stdout
    assert "orphan" in text.stderr and "cannot be read" in text.stderr
    # newest first, as every listing; the member that served each backup by name beside its id
    assert [b["id"] for b in listed["backups"]] == [as_json(again)["id"], made["id"], "20200103T000000Z-0d0d0d"]
    assert made["member_name"] in ("m1", "m2", "m3")
    assert f"{made['member_name']} ({made['member_id']})" in text.stdout
    said = run(cwd, "backup", "run").stdout
    assert "; the backup took " in said
    assert " s (snapshot, encryption, upload, manifest, retention), the whole command " in said
    checked = run(cwd, "backup", "verify", made["id"])
    assert f"warning: {young}.snapshot.enc is an orphan" in checked.stderr and "cannot be read" in checked.stderr
    orphan = run(cwd, "backup", "verify", young, check=False)
    assert orphan.returncode == 1 and "orphan" in orphan.stderr and orphan.stderr.count("\n") == 1
    # a volume backup: a follower's data copied while it was paused, listed with its kind beside the full ones
    volume = as_json(run(cwd, "backup", "run", "--kind", "volume", "--json"))
    assert volume["kind"] == "volume" and volume["volume"]["provider"] == "local" and volume["verified"]
    assert volume["volume"]["revision_observed"] >= 1
    listed = as_json(run(cwd, "backup", "list", "--json"))
    assert {b["id"]: b["kind"] for b in listed["backups"]}[volume["id"]] == "volume"
    assert {b["kind"] for b in listed["backups"] if b["id"] != volume["id"]} == {"full"}
    rows = {line.split()[0]: line.split()[1] for line in run(cwd, "backup", "list").stdout.splitlines()[1:-1]}
    assert rows[volume["id"]] == "volume" and rows[made["id"]] == "full"
    bad = run(cwd, "backup", "run", "--kind", "disk", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid choice: 'disk'" in bad.stderr


def _etcdctl(cluster: LocalCluster, cert: Path, key: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl against the first member with the stack's CA and the given client certificate."""
    return subprocess.run(
        [str(cluster.binaries().etcdctl), f"--endpoints={cluster.state().members[0].client_url}",
         f"--cacert={cluster.pki_dir / 'ca.crt'}", f"--cert={cert}", f"--key={key}",
         "--dial-timeout=2s", "--command-timeout=4s", *args],
        env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("flavour", E2E_VERSIONS)  # the oldest and the newest etcd: client TLS is the same in all
def test_pki_issue_client_certificate_works_with_etcdctl_and_a_foreign_one_is_refused(
    flavour: str, start_cluster: Any, run: Cli, tmp_path: Path
) -> None:
    cluster: LocalCluster = start_cluster(etcd_flavour(flavour))
    where = ("--state-dir", str(cluster.state_dir))
    # Given a client certificate issued by `pki issue-client` (client-cert-auth is on for every member)
    issued = as_json(run(tmp_path, "pki", "issue-client", "kube-apiserver", "--days", "30", "--json", *where))
    cert, key = cluster.pki_dir / "clients" / "kube-apiserver.crt", cluster.pki_dir / "clients" / "kube-apiserver.key"
    assert issued["location"] == str(cert) and issued["subject"] == "CN=kube-apiserver"
    assert key.stat().st_mode & 0o777 == 0o600
    # Then etcdctl writes and reads with it
    assert _etcdctl(cluster, cert, key, "put", "/pki/k", "v").returncode == 0
    got = _etcdctl(cluster, cert, key, "get", "/pki/k", "--print-value-only")
    assert got.stdout.strip() == "v", got.stderr

    # When a client presents a certificate of another CA, Then every member refuses it
    foreign_ca = pki.create_ca("someone else's CA")
    foreign = pki.issue_certificate(foreign_ca, "kube-apiserver", kind="client")
    pki.write_pem(foreign, tmp_path / "foreign.crt", tmp_path / "foreign.key")
    refused = _etcdctl(cluster, tmp_path / "foreign.crt", tmp_path / "foreign.key", "put", "/pki/k", "stolen")
    assert refused.returncode != 0
    assert _etcdctl(cluster, cert, key, "get", "/pki/k", "--print-value-only").stdout.strip() == "v"
    log = (cluster.member_dir("m1") / "etcd.log").read_text()
    assert "unknown authority" in log  # refused for its issuer, not for anything else

    # And `pki list` shows every certificate with where it lives
    listed = as_json(run(tmp_path, "pki", "list", "--json", *where))
    assert [(c["role"], c["name"]) for c in listed] == [
        ("ca", "ca"), ("member", "m1"), ("member", "m2"), ("member", "m3"),
        ("operator", "etcdops"), ("client", "kube-apiserver"),
    ]  # fmt: skip
    client = listed[-1]
    assert (client["serial"], client["location"]) == (issued["serial"], str(cert))
    assert {"DNS:m1", "IP:127.0.0.1"} <= set(listed[1]["sans"]) and listed[0]["subject"] == "CN=etcdops local CA"

    # Bad input: one line, exit 2 (usage) or 1, nothing changed
    before = cert.read_bytes()
    for args, code, says in (
        (("kube-apiserver",), 2, "already has a certificate"),
        (("other", "--days", "0"), 2, "--days"),
        (("bad/name",), 2, "client name"),
    ):
        failed = run(tmp_path, "pki", "issue-client", *args, *where, check=False)
        assert (failed.returncode, failed.stdout) == (code, "") and says in failed.stderr, failed.stderr
        assert len(failed.stderr.splitlines()) == 1
    nowhere = run(tmp_path, "pki", "issue-client", "x", "--state-dir", str(tmp_path / "none"), check=False)
    assert nowhere.returncode == 1 and len(nowhere.stderr.splitlines()) == 1 and not (tmp_path / "none").exists()
    assert cert.read_bytes() == before and sorted(p.name for p in cert.parent.iterdir()) == [cert.name, key.name]
    # --force replaces it
    again = as_json(run(tmp_path, "pki", "issue-client", "kube-apiserver", "--force", "--json", *where))
    assert again["serial"] != issued["serial"] and cert.read_bytes() != before
