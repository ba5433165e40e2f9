"""The ``etcdops`` command line, in process: global options wherever they stand, one line per failure."""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import builders
import pytest

from etcdops.adapters.backup.keys import open_key_provider
from etcdops.domain.config import parse_config
from etcdops.domain.errors import UsageError
from etcdops.domain.health import ClusterHealth
from etcdops_local.cli import main as cli
from etcdops_local.cli import status as cli_status
from etcdops_local.cli.options import CLUSTER_OPTIONS, GLOBAL_DEFAULTS, OUTPUT_OPTIONS, finish

DATA = Path(__file__).parent.parent / "data"
SNAPSHOT = DATA / "bbolt-etcd35.snap"


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable command of the parser, as the words that name it."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path
        return
    for name, sub in subparsers[0].choices.items():
        yield from leaf_commands(sub, (*path, name))


# what each command needs besides its name (a new command must be added here)
REQUIRED: dict[tuple[str, ...], list[str]] = {
    ("local", "up"): [],
    ("local", "ps"): [],
    ("local", "kill"): ["m1"],
    ("local", "pause"): ["m1"],
    ("local", "resume"): ["m1"],
    ("local", "down"): [],
    ("local", "env"): [],
    ("local", "gc"): [],
    ("local", "cluster", "add"): ["c7"],
    ("local", "cluster", "remove"): ["c7"],
    ("status",): [],
    ("snapshot", "save"): ["out.db"],
    ("snapshot", "inspect"): [str(SNAPSHOT)],
    ("backup", "run"): [],
    ("backup", "list"): [],
    ("backup", "verify"): ["20200101T000000Z-abcdef"],
    ("backup", "fetch"): ["20200101T000000Z-abcdef", "out.db"],
    ("backup", "import"): [str(SNAPSHOT)],
    ("approve",): ["exec-1"],
    ("reject",): ["exec-1", "--reason", "no"],
    ("approval", "show"): ["exec-1"],
    ("runbook", "list"): [],
    ("runbook", "show"): ["exec-1"],
    ("runbook", "start", "replace"): ["--member", "m1"],
    ("runbook", "start", "restore"): [],
    ("notifications",): [],
    ("runbook", "start", "upgrade"): ["--version", "3.5.30"],
    ("runbook", "start", "maintain"): [],
    ("runbook", "start", "drill"): [],
    ("runbook", "start", "scale"): ["--size", "5"],
    ("runbook", "start", "rotate-certs"): [],
    ("demo",): [],
    ("completion",): ["bash"],
    ("pki", "issue-client"): ["kube-apiserver"],
    ("pki", "list"): [],
    ("cluster", "add"): ["c1.yaml"],
    ("cluster", "list"): [],
    ("cluster", "show"): ["c1"],
    ("cluster", "remove"): ["c1"],
    ("cluster", "watch"): ["c1"],
    ("cluster", "check"): ["c1"],
}

# every global option: the words that give it, the attribute it sets, the value expected
GLOBALS: list[tuple[list[str], str, object]] = [
    (["--config", "elsewhere.yaml"], "config", "elsewhere.yaml"),
    (["--state-dir", "/elsewhere"], "state_dir", "/elsewhere"),
    (["--json"], "json", True),
    (["-w", "json"], "write_out", "json"),
    (["--endpoints", "https://10.0.0.1:2379"], "endpoints", "https://10.0.0.1:2379"),
    (["--cacert", "ca.pem"], "cacert", "ca.pem"),
    (["--cert", "c.pem"], "cert", "c.pem"),
    (["--key", "k.pem"], "key", "k.pem"),
    (["--debug"], "debug", True),
    (["--stack-name", "etcdops-prod"], "stack_name", "etcdops-prod"),
    (["--cluster", "c1"], "cluster", "c1"),
]


def parse(argv: list[str]) -> argparse.Namespace:
    return finish(cli.build_parser().parse_args(argv))


def test_the_tables_name_every_command_and_every_global_option() -> None:
    assert set(leaf_commands(cli.build_parser())) == set(REQUIRED)
    assert {attr for _, attr, _ in GLOBALS} == set(GLOBAL_DEFAULTS)


@pytest.mark.parametrize("command", sorted(REQUIRED), ids=" ".join)
@pytest.mark.parametrize(("words", "attr", "expected"), GLOBALS, ids=[w[0] for w, _, _ in GLOBALS])
def test_a_global_option_is_honoured_before_and_after_the_command_or_refused(
    command: tuple[str, ...], words: list[str], attr: str, expected: object, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    rest = REQUIRED[command]
    positions = {
        "before": [*words, *command, *rest],
        "between": [command[0], *words, *command[1:], *rest],
        "after": [*command, *rest, *words],
    }
    absent = parse([*command, *rest])
    assert getattr(absent, attr) == GLOBAL_DEFAULTS[attr]

    if attr in OUTPUT_OPTIONS or attr in getattr(absent, "uses", CLUSTER_OPTIONS):
        for argv in positions.values():
            assert getattr(parse(argv), attr) == expected, argv
    else:  # an option the command does not read is refused, wherever it stands, before anything runs
        for argv in positions.values():
            with pytest.raises(UsageError, match="not used by this command"):
                parse(argv)
            assert cli.main(argv) == 2 and "not used by this command" in capsys.readouterr().err


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_state_dir_before_the_command_is_the_one_purged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a state directory here and another one elsewhere
    monkeypatch.chdir(tmp_path)
    here = tmp_path / ".etcdops"
    elsewhere = tmp_path / "elsewhere"
    for folder in (here, elsewhere):
        (folder / "pki").mkdir(parents=True)
        (folder / "pki" / "ca.crt").write_text("x")

    # When the other one is purged with --state-dir before the command
    code, out, _ = run(["--state-dir", str(elsewhere), "--json", "local", "down", "--purge"], capsys)

    # Then that one is purged and the one here is untouched
    assert code == 0 and json.loads(out) == {"stopped": True, "purged": True}
    assert not (elsewhere / "pki").exists()
    assert (here / "pki" / "ca.crt").read_text() == "x"


def test_purge_empties_only_a_local_stacks_state_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    (home / "projects").mkdir(parents=True)
    (home / "notes.txt").write_text("keep")

    code, _, err = run(["--state-dir", str(home), "local", "down", "--purge"], capsys)

    assert code == 2 and err.count("\n") == 1 and "not a local stack's state directory" in err
    assert (home / "notes.txt").read_text() == "keep" and (home / "projects").is_dir()

    # a state directory purged before (only its backups are left) is purged again without a word
    purged = tmp_path / "purged"
    (purged / "backups").mkdir(parents=True)
    (purged / "backup.key").write_text("k")
    assert run(["--state-dir", str(purged), "local", "down", "--purge"], capsys)[0] == 0
    assert (purged / "backup.key").exists()


def test_an_option_given_twice_with_the_same_value_is_fine(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--json", "-w", "json", "snapshot", "inspect", str(SNAPSHOT), "-w=json", "--json"], capsys)
    assert code == 0 and json.loads(out)["revision"] > 0
    code, out, _ = run(["--state-dir", "x", "local", "down", "--state-dir", "x", "--json"], capsys)
    assert code == 0 and json.loads(out) == {"stopped": True, "purged": False}


def test_json_before_the_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--json", "snapshot", "inspect", str(SNAPSHOT)], capsys)
    table_code, table_out, _ = run(["-w", "table", "snapshot", "inspect", str(SNAPSHOT)], capsys)

    expected = json.loads((DATA / "bbolt-expected.json").read_text())
    assert code == 0 and json.loads(out)["total_keys"] == expected[SNAPSHOT.name]["totalKey"]
    assert table_code == 0 and table_out.startswith("hash ")


def test_config_before_the_command_is_the_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".etcdops").mkdir()
    (tmp_path / ".etcdops" / "cluster.yaml").write_text(GOOD)
    other = tmp_path / "other.yaml"
    other.write_text(GOOD.replace("good", "Other"))

    code, _, err = run(["--config", str(other), "backup", "list"], capsys)

    assert code == 1 and err.startswith(f"etcdops: ConfigError: {other}: name: must be")


def test_backup_list_reads_no_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a configuration whose backup key was never made (a fresh stack before its first backup)
    config = tmp_path / "fresh.yaml"
    config.write_text(GOOD + BACKUPS % (tmp_path, tmp_path))

    # When its backups are listed
    code, out, err = run(["--config", str(config), "backup", "list"], capsys)

    # Then the empty store is listed, and no key was needed or made
    assert (code, err) == (0, ""), err
    assert out.startswith("no backups in ")
    assert not (tmp_path / "backup.key").exists()


def test_backup_list_shows_volume_backups_the_provider_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from etcdops.adapters.backup.store import FileStore
    from etcdops.app.backup.catalogue import record_volume
    from etcdops.domain.backup.manifest import VolumeSnapshotRecord

    # Given a store holding the record of EBS snapshots of m2's volumes
    config = tmp_path / "c.yaml"
    config.write_text(GOOD + BACKUPS % (tmp_path, tmp_path))
    record = VolumeSnapshotRecord(
        id="20261207T210000Z-0a0b0c", cluster_name="good", cluster_id="c1", member_id="2", member_name="m2",
        etcd_version="3.5.30", created_at="2026-12-07T21:00:00Z",
        volume={"provider": "ec2", "revision_observed": 4242, "snapshot_ids": ["snap-1", "snap-2"]},
    )  # fmt: skip
    record_volume(FileStore(tmp_path / "store"), record)

    # When the backups are listed, Then it is a volume backup with its snapshots, its revision, never verified
    code, out, err = run(["--config", str(config), "backup", "list"], capsys)
    assert (code, err) == (0, ""), err
    row = next(line.split() for line in out.splitlines() if line.startswith(record.id))
    assert row[1:2] + row[4:5] + row[7:8] == ["volume", "4242", "snap-1,snap-2"]
    assert "m2 (2)" in out and "- (ec2)" in out
    code, out, _ = run(["--config", str(config), "backup", "list", "--json"], capsys)
    listed = json.loads(out)
    assert listed["backups"] == [] and [r["id"] for r in listed["provider_snapshots"]] == [record.id]
    assert listed["provider_snapshots"][0]["volume"]["snapshot_ids"] == ["snap-1", "snap-2"]


# ---- every bad input: one line on stderr, a non-zero exit, nothing changed ----------------------

GOOD = "name: good\nendpoints: ['http://127.0.0.1:1']\nplaintext: true\n"
BACKUPS = "backup: {destination: 'file://%s/store', encryption_key: 'file://%s/backup.key'}\n"
FILES: dict[str, Callable[[Path], object]] = {
    "good.yaml": lambda d: (d / "good.yaml").write_text(GOOD + BACKUPS % (d, d)),
    "backup.key": lambda d: open_key_provider(f"file://{d}/backup.key", create=True),
    "nested.yaml": lambda d: (d / "nested.yaml").write_text("name: " + "[" * 5000 + "]" * 5000 + "\n"),
    "nested.json": lambda d: (d / "nested.json").write_text('{"name": ' + "[" * 5000 + "]" * 5000 + "}"),
    "latin1.yaml": lambda d: (d / "latin1.yaml").write_bytes(b"name: caf\xe9\n"),
    "newline.yaml": lambda d: (d / "newline.yaml").write_text('name: "local\\n"\n' + GOOD.split("\n", 1)[1]),
    "rate0.yaml": lambda d: (d / "rate0.yaml").write_text(
        GOOD + "backup: {destination: 'file:///b', encryption_key: 'file:///k', schedule: 'rate(0 minutes)'}\n"
    ),
    "rate1s.yaml": lambda d: (d / "rate1s.yaml").write_text(GOOD + "health: {schedule: 'rate(1 minutes)'}\n"),
    "keydir.yaml": lambda d: (d / "keydir.yaml").write_text(
        f"name: k\nendpoints: ['https://127.0.0.1:1']\ntls: {{ca: '{SNAPSHOT}', cert: '{SNAPSHOT}', key: '{d}'}}\n"
    ),
    "list.yaml": lambda d: (d / "list.yaml").write_text("- name: x\n"),
    "truncated.db": lambda d: (d / "truncated.db").write_bytes(SNAPSHOT.read_bytes()[:-100]),
    "corrupt.db": lambda d: (d / "corrupt.db").write_bytes(builders.snapshot_file_damaged(SNAPSHOT, retrailer=False)),
    "tampered.db": lambda d: (d / "tampered.db").write_bytes(builders.snapshot_file_damaged(SNAPSHOT, retrailer=True)),
    "empty.yaml": lambda d: (d / "empty.yaml").write_text(""),
    "dir": lambda d: (d / "dir").mkdir(),
    ".etcdops/local.json": lambda d: ((d / ".etcdops").mkdir(), (d / ".etcdops" / "local.json").write_text("{")),
}

# (argv, exit status, what the one line says); {d} is the working directory
BAD_INPUTS: list[tuple[list[str], int, str]] = [
    (["status", "--config", "nested.yaml"], 1, "nested too deeply"),
    (["status", "--config", "nested.json"], 1, "nested too deeply"),
    (["status", "--config", "latin1.yaml"], 1, "not UTF-8"),
    (["status", "--config", "newline.yaml"], 1, "name: must be"),
    (["status", "--config", "rate0.yaml"], 1, "a rate must be at least 1"),
    (["status", "--config", "rate1s.yaml"], 1, "EventBridge wants rate(1 minute)"),
    (["status", "--config", "list.yaml"], 1, "expected a mapping"),
    (["status", "--config", "empty.yaml"], 1, "expected a mapping"),
    (["status", "--config", "missing.yaml"], 1, "cannot read"),
    (["status", "--config", "dir"], 1, "cannot read"),
    (["status", "--config", "keydir.yaml"], 1, "tls: cannot read"),
    (["backup", "fetch", "20200101T000000Z-abcdef", "missing/f.db", "--config", "good.yaml"], 2, "does not exist"),
    (["backup", "fetch", "20200101T000000Z-abcdef", "/", "--config", "good.yaml"], 2, "is a directory"),
    (["backup", "fetch", "20200101T000000Z-abcdef", "dir", "--config", "good.yaml"], 2, "is a directory"),
    (["backup", "fetch", "20200101T000000Z-abcdef", "dir/", "--config", "good.yaml"], 2, "is a directory"),
    (["backup", "fetch", "20200101T000000Z-abcdef", "", "--config", "good.yaml"], 2, "empty file name"),
    (["backup", "fetch", "20200101T000000Z-abcdef", "f.db", "--config", "good.yaml"], 1, "BackupNotFoundError"),
    (["backup", "verify", "nope", "--config", "good.yaml"], 2, "not a backup id"),
    (["backup", "run", "--new-chain", "--config", "good.yaml"], 2, "only with --kind delta"),
    (["backup", "import", "missing.db", "--config", "good.yaml"], 2, "no such file"),
    (["backup", "import", "dir", "--config", "good.yaml"], 2, "is a directory"),
    (["backup", "import", "good.yaml", "--config", "good.yaml"], 1, "leaves no sha256 trailer"),
    (["backup", "import", "truncated.db", "--config", "good.yaml"], 1, "leaves no sha256 trailer"),
    (["backup", "import", "corrupt.db", "--config", "good.yaml"], 1, "sha256 mismatch"),
    (["backup", "import", "tampered.db", "--config", "good.yaml"], 1, "not imported: "),
    (["backup", "import", str(SNAPSHOT), "--source-cluster-id", "xyz", "--config", "good.yaml"], 2,
     "not a cluster id"),
    (["snapshot", "save", "missing/f.db", "--config", "good.yaml"], 2, "does not exist"),
    (["snapshot", "save", "/", "--config", "good.yaml"], 2, "is a directory"),
    (["snapshot", "save", "dir", "--config", "good.yaml"], 2, "is a directory"),
    (["snapshot", "save", "/dev/null", "--config", "good.yaml"], 2, "not a regular file"),
    (["backup", "fetch", "20200101T000000Z-abcdef", "/dev/full", "--config", "good.yaml"], 2, "not a regular file"),
    (["snapshot", "inspect", "missing.db"], 2, "no such file"),
    (["snapshot", "inspect", "dir"], 2, "is a directory"),
    (["snapshot", "inspect", "good.yaml"], 1, "SnapshotIntegrityError"),
    (["status", "--deadline", "inf", "--config", "good.yaml"], 2, "above 0"),
    (["status", "--deadline", "-1", "--config", "good.yaml"], 2, "above 0"),
    (["status", "--deadline", "nan", "--config", "good.yaml"], 2, "above 0"),
    (["status", "--deadline", "0", "--config", "good.yaml"], 2, "above 0"),
    (["status", "--deadline", "soon", "--config", "good.yaml"], 2, "not a number"),
    (["status", "--watch", "--interval", "1e999", "--config", "good.yaml"], 2, "above 0"),
    (["local", "ps"], 1, "not a local stack state file"),
    (["local", "kill", "m9", "--state-dir", "empty"], 1, "no local cluster"),
    (["local", "--purge", "down"], 2, "unrecognized arguments"),
    (["--config", "good.yaml", "local", "down", "--purge"], 2, "--config: not used by this command"),
    (["snapshot", "inspect", str(SNAPSHOT), "--stack-name", "prod", "--endpoints", "x:1"], 2,
     "--endpoints, --stack-name: not used"),
    (["nonsense"], 2, "invalid choice"),
    (["status", "--bogus"], 2, "unrecognized arguments"),
    (["--json", "-w", "table", "status"], 2, "contradict"),
    (["--state-dir", "a", "local", "down", "--purge", "--state-dir", "b"], 2, "--state-dir given twice: a and b"),
    (["--config=good.yaml", "status", "--config", "other.yaml"], 2, "--config given twice"),
    (["-w", "json", "status", "--write-out=table"], 2, "--write-out given twice"),
    (["-w", "yaml", "status"], 2, "invalid choice"),
    (["status", "--state-dir", "empty"], 1, "no cluster configuration"),
    (["status", "--endpoints", ","], 1, "--endpoints: no URL given"),
    (["status", "--endpoints", "https://127.0.0.1:1"], 1, "need --cacert"),
    (["status", "--endpoints", "ftp://127.0.0.1:2379", "--cacert", "ca.pem"], 1, "is not an http(s)://host:port URL"),
    (["status", "--endpoints", "127.0.0.1"], 1, "has no valid port"),
    (["status", "--endpoints", "http://127.0.0.1:1", "--cert", "c.pem"], 1, "TLS files with http:// endpoints"),
    (["status", "--endpoints", "https://127.0.0.1:1", "--cert", "c.pem"], 1, "need --cacert"),
    (["runbook", "list", "--state-dir", "empty"], 1, "no local stack"),
    (["runbook", "start", "restore", "--backup", "x", "--state-dir", "empty"], 1, "no local stack"),
    (["approve", "exec-1", "--state-dir", "empty"], 1, "ETCDOPS_TABLE is not set"),
    (["runbook", "list", "--stack-name", "x", "--state-dir", "empty"], 1, "AWS: no region"),
    (["reject", "exec-1"], 2, "--reason"),
    (["notifications", "--state-dir", "empty"], 1, "no local stack with its autopilot"),
    (["notifications", "--since", "yesterday", "--state-dir", "empty"], 2, "neither an age"),
    (["notifications", "--since=-2h", "--state-dir", "empty"], 2, "neither an age"),
    (["local", "up", "--members", "0"], 2, "1 to 9 members"),
    (["local", "gc", "--older-than", "0"], 2, "above 0"),
    (["local", "gc", "--older-than", "-3"], 2, "above 0"),
    (["local", "gc", "--older-than", "nan"], 2, "above 0"),
    (["local", "gc", "--older-than", "a week"], 2, "not a number of days"),
    (["local", "up", "--members", "100000"], 2, "1 to 9 members"),
    (["local", "up", "--members", "three"], 2, "not a whole number"),
    (["--config", "", "status"], 2, "an empty value"),
    (["status", "--state-dir", " "], 2, "an empty value"),
    (["--stack-name", "", "runbook", "list"], 2, "an empty value"),
    (["status", "--config", "good.yaml", "--key", ""], 2, "an empty value"),
    (["status", "--config", "/dev/null"], 1, "expected a mapping"),
    (["snapshot", "inspect", "/dev/null"], 2, "not a regular file"),
]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    for name in ("ETCDOPS_CONFIG", "ETCDOPS_STATE_DIR", "ETCDOPS_TABLE", "ETCDCTL_ENDPOINTS", "ETCDCTL_CACERT",
                 "ETCDCTL_CERT", "ETCDCTL_KEY", "ETCDOPS_REPLACE_STATE_MACHINE_ARN",
                 "ETCDOPS_RESTORE_STATE_MACHINE_ARN", "ETCDOPS_STACK"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for make in FILES.values():
        make(tmp_path)
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize(("argv", "status", "says"), BAD_INPUTS, ids=[" ".join(a) for a, _, _ in BAD_INPUTS])
def test_a_bad_input_is_one_line_and_changes_nothing(
    argv: list[str], status: int, says: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(workdir)

    code = cli.main(argv)
    out, err = capsys.readouterr()

    assert code == status, err
    assert out == "" and err.count("\n") == 1 and err.startswith("etcdops"), err
    assert says in err and "Traceback" not in err
    assert tree(workdir) == before


def test_an_unexpected_error_is_one_line_and_debug_adds_the_traceback(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(path: Path) -> None:
        raise ZeroDivisionError("a bug\nover two lines")

    monkeypatch.setattr("etcdops.adapters.bbolt.inspect_file", broken)

    code, out, err = run(["snapshot", "inspect", str(SNAPSHOT)], capsys)
    assert (code, out) == (70, "")
    assert err == "etcdops: unexpected ZeroDivisionError: a bug over two lines (run with --debug for the traceback)\n"

    code, _, err = run(["--debug", "snapshot", "inspect", str(SNAPSHOT)], capsys)
    assert code == 70 and err.startswith("Traceback") and err.endswith("(run with --debug for the traceback)\n")


def test_etcdctl_environment_is_used_only_without_a_configuration(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from etcdops_local.cli.options import resolve_config

    monkeypatch.setenv("ETCDCTL_ENDPOINTS", "10.0.0.1:2379,https://10.0.0.2:2379")
    monkeypatch.setenv("ETCDCTL_CACERT", "ca.pem")
    monkeypatch.setenv("ETCDCTL_CERT", "c.pem")
    monkeypatch.setenv("ETCDCTL_KEY", "k.pem")

    from_env = resolve_config(parse(["status"]))
    from_file = resolve_config(parse(["status", "--config", "good.yaml"]))
    flags_win = resolve_config(parse(["status", "--endpoints", "10.0.0.3:2379", "--key", "other.pem"]))

    assert from_env.endpoints == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    assert from_env.tls is not None and from_env.tls.ca == str(workdir / "ca.pem")
    assert from_env.tls.key == str(workdir / "k.pem") and not from_env.plaintext
    assert from_file.name == "good" and from_file.endpoints == ["http://127.0.0.1:1"] and from_file.plaintext
    assert flags_win.endpoints == ["https://10.0.0.3:2379"]
    assert flags_win.tls is not None and flags_win.tls.key == str(workdir / "other.pem")
    assert flags_win.tls.cert == str(workdir / "c.pem")


def test_endpoints_override_the_configuration(workdir: Path) -> None:
    from etcdops_local.cli.options import resolve_config

    config = resolve_config(parse(["--config", "good.yaml", "status", "--endpoints", "127.0.0.1:2,127.0.0.1:3"]))

    assert config.name == "good" and config.endpoints == ["http://127.0.0.1:2", "http://127.0.0.1:3"]
    assert config.backup is not None


def test_version_names_ours_and_the_etcd_versions_tested(capsys: pytest.CaptureFixture[str]) -> None:
    from etcdops import __version__
    from etcdops_local.cli.options import TESTED_ETCD_VERSIONS

    code, out, _ = run(["--version"], capsys)

    assert code == 0 and out == f"etcdops {__version__} (tested with etcd {', '.join(TESTED_ETCD_VERSIONS)})\n"
    from etcd_versions import ETCD_VERSIONS  # the test matrix itself

    assert sorted(TESTED_ETCD_VERSIONS) == sorted(version for version, _ in ETCD_VERSIONS.values())


def test_output_closed_early_is_quiet(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # a pipe whose reader is gone before the command starts (``etcdops status --json | head`` once head quit)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "etcdops_local.cli.main", "--json", "snapshot", "inspect", str(SNAPSHOT)],
            stdout=writer,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert result.returncode == 141 and result.stderr == b""


def test_the_readme_documents_every_exit_status() -> None:
    import re

    from etcdops_local.cli.options import EXIT_CODES

    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    documented = {int(n) for n in re.findall(r"^\| (\d+) \| ", readme, re.MULTILINE)}

    assert documented == set(EXIT_CODES)


def test_tables_fit_the_terminal_and_stay_whole_in_a_pipe() -> None:
    from etcdops_local.cli.format import table

    headers = ["NAME", "ENDPOINT", "ERROR"]
    error = "deadline exceeded after 2.0 s " * 3
    rows = [["m1", "https://127.0.0.1:2379", error.strip()], ["m2", "https://127.0.0.1:2381", None]]

    fitted = table(headers, rows, width=60).splitlines()
    whole = table(headers, rows).splitlines()  # stdout is not a terminal here

    assert max(len(line) for line in fitted) <= 60
    assert fitted[1].startswith("m1    https://127.0.0.1:2379  deadline") and fitted[1].endswith("~")
    assert fitted[2].rstrip().endswith("-")
    assert whole[1].endswith("2.0 s") and len(whole[1]) > 60
    # a terminal narrower than the narrowest columns cuts none below 8 characters
    assert table(headers, rows, width=10).splitlines()[0].startswith("NAME  ENDPOINT")


@pytest.mark.parametrize(
    ("line", "offered"),
    [
        ("etcdops lo", "local"),
        ("etcdops --state-dir x local d", "down"),
        ("etcdops local down --p", "--purge"),
        ("etcdops -w ", "json table simple"),
        ("etcdops status --de", "--debug --deadline"),
        ("etcdops runbook start r", "replace restore rotate-certs"),
        ("etcdops runbook start restore --mode ", "in-place new-hosts"),
        ("etcdops --config c.yaml backup ", None),  # the backup actions, then every option
    ],
)
def test_bash_completion_offers_the_commands_and_options_of_the_parser(
    line: str, offered: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    code, script, _ = run(["completion", "bash"], capsys)
    (tmp_path / "etcdops.bash").write_text(script)
    complete = (
        'source "$1"; read -ra COMP_WORDS <<< "$2"; [[ "$2" == *" " ]] && COMP_WORDS+=("");'
        ' COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _etcdops; echo "${COMPREPLY[*]}"'
    )
    result = subprocess.run(
        ["bash", "-c", complete, "_", str(tmp_path / "etcdops.bash"), line],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip

    assert code == 0
    if offered is None:
        words = result.stdout.split()
        assert {"run", "list", "verify", "fetch", "--stack-name", "--json"} <= set(words)
    else:
        assert sorted(result.stdout.split()) == sorted(offered.split())


def test_zsh_completion_uses_the_bash_function(capsys: pytest.CaptureFixture[str]) -> None:
    code, script, _ = run(["completion", "zsh"], capsys)

    assert code == 0 and script.startswith("#compdef etcdops\n") and "bashcompinit" in script
    assert "complete -o default -F _etcdops etcdops" in script


def test_tls_secrets_in_a_configuration_file_are_fetched_for_the_command_only(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto import mock_aws

    from etcdops_local.cli.options import resolve_config
    from etcdops_local.cli.stack import remove_private_directories

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with mock_aws():
        secrets = boto3.client("secretsmanager")
        arns = {f: secrets.create_secret(Name=f"etcdops/prod/client/{f}", SecretString=f"{f} PEM")["ARN"]
                for f in ("ca", "cert", "key")}  # fmt: skip
        (workdir / "prod.yaml").write_text(json.dumps({"name": "prod", "endpoints": ["https://10.0.0.1:2379"],
                                                       "tls": arns}))  # fmt: skip
        config = resolve_config(parse(["--config", "prod.yaml", "status"]))

    assert config.tls is not None and config.tls.key is not None
    key = Path(config.tls.key)
    assert key.read_text() == "key PEM" and Path(config.tls.ca).read_text() == "ca PEM"
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    remove_private_directories()
    assert not key.parent.exists()


def test_status_of_a_stack_whose_state_table_cannot_be_read_still_shows_the_probe() -> None:
    from botocore.exceptions import ClientError

    from etcdops_local.cli.stack import DeployedStack

    class Refusing:
        def client(self, service: str) -> object:
            assert service == "dynamodb"
            return self

        def get_item(self, **_: object) -> None:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "GetItem")

    args = argparse.Namespace(stack_name="prod-stack")
    args._deployed_stack = DeployedStack("prod-stack", Refusing(), {"StateTableName": "t"}, {})

    last = cli_status.stack_last_round(args, "prod")

    assert last is not None and last["decision"] is None
    assert cli_status.render_last_round(last) == (
        "last round (-): skipped: cannot read the state table of stack prod-stack: DynamoDB get_item on table t: "
        "AccessDeniedException: An error occurred (AccessDeniedException) when calling the GetItem operation: "
        "not allowed"
    )


def test_status_shows_the_members_starvation_indicators_of_the_last_round() -> None:
    last = {
        "decided_at": "2026-12-07T21:00:00+00:00",
        "trigger": {"description": "local timer rate(10 seconds)"},
        "decision": {"action": "NONE", "reason": "all well"},
        "metrics": {"Members": {"m2": {"WalFsyncP99": 1.4, "BackendCommitP99": 0.0121, "ProposalsPending": 0},
                                "m1": {"ProposalsPending": 0}}},
    }  # fmt: skip

    assert cli_status.render_last_round(last).splitlines()[2:] == [
        "  m2: WAL fsync 1400 ms, backend commit 12 ms (p99 since the round before)"
    ]
    status = {"members": [{"db_size": 4096, "db_size_in_use": 1024}, {"db_size": None, "db_size_in_use": None}]}
    assert cli_status.with_space(status, 8192)["members"] == [
        {"db_size": 4096, "db_size_in_use": 1024, "fragmentation": 0.75, "quota_used": 0.5},
        {"db_size": None, "db_size_in_use": None, "fragmentation": None, "quota_used": None},
    ]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed Ctrl-C itself
def test_status_watch_ends_on_a_ctrl_c_that_python_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A KeyboardInterrupt raised while the main thread runs a finalizer (gRPC's channel and call
    # objects have __del__ methods that wait for a lock) is printed as "Exception ignored" and lost;
    # under load that is where a Ctrl-C often lands. The watch must end anyway, after that round.
    class FinalizedDuringTheRound:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside the finalizer

    rounds: list[int] = []

    def probe(client: object, *, deadline: float) -> ClusterHealth:
        rounds.append(len(rounds))
        assert len(rounds) <= 2, "status --watch kept probing after Ctrl-C"
        FinalizedDuringTheRound()
        return builders.cluster(replace(builders.member(1, "m1"), client_urls=("http://127.0.0.1:2379",)))

    monkeypatch.setattr("etcdops.app.probe.probe_cluster", probe)
    previous = signal.getsignal(signal.SIGINT)
    config = parse_config({"name": "c1", "endpoints": ["http://127.0.0.1:2379"], "plaintext": True})
    args = argparse.Namespace(json=True, interval=0.0, state_dir=str(tmp_path), stack_name=None)

    assert cli_status.watch_status(args, cli_status.LiveScreen(lambda: config, deadline=1.0)) == 0

    assert rounds == [0]  # the round in flight finished and was shown; no further round started
    assert json.loads(capsys.readouterr().out)["status"]["members"][0]["name"] == "m1"
    assert signal.getsignal(signal.SIGINT) is previous


def test_local_up_refuses_an_other_etcd_that_is_not_one_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "stack"
    code, _, err = run(["--state-dir", str(state), "local", "up", "--also-etcd", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"--also-etcd {tmp_path / 'nowhere'}: no executable etcd in" in err
    assert not (state / "local.json").exists()


def test_runbook_start_upgrade_refuses_what_is_not_a_version_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--state-dir", str(tmp_path), "runbook", "start", "upgrade", "--version", "latest"]
    code, _, err = run(argv, capsys)
    assert code == 2 and err == "etcdops: --version: 'latest' is not an etcd version (MAJOR.MINOR.PATCH, e.g. 3.5.30)\n"


@pytest.mark.parametrize(
    ("size", "why"), [("4", "size 4 is even"), ("9", "size 9 is beyond 7"), ("0", "size 0 is below 1")]
)
def test_runbook_start_scale_refuses_a_size_it_does_not_scale_to_before_starting_anything(
    size: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--state-dir", str(tmp_path), "runbook", "start", "scale", "--size", size]
    code, _, err = run(argv, capsys)
    assert code == 2 and err.startswith(f"etcdops: --size: {why}") and err.count("\n") == 1, err


def test_local_up_says_what_it_did() -> None:
    from etcdops_local.cluster import MemberProcess

    def member(name: str, state: str) -> MemberProcess:
        return MemberProcess(name, 1 if state != "stopped" else None, (), (), f"/s/members/{name}/data", state)  # type: ignore[arg-type]

    said = {"version": "3.5.30", "state_dir": "/s", "autopilot_pid": 42, "autopilot_started": False}
    three = [member("m1", "running"), member("m2", "running"), member("m3-r1", "paused")]

    again = cli.up_summary({**said, "created": False, "started": ["m2"]}, three).splitlines()
    assert again == [
        "local cluster: started m2 again (3 members in all), etcd 3.5.30, state in /s; "
        "autopilot (emulated AWS) already running, pid 42",
        "note: m3-r1 is paused (`etcdops local resume m3-r1` lets it run)",
    ]
    one = [member("m1", "running"), member("m2-r9", "stopped")]
    idle = cli.up_summary({**said, "created": False, "started": [], "autopilot_pid": None}, one).splitlines()
    assert idle == [
        "local cluster already running: 2 members, nothing to start, etcd 3.5.30, state in /s; autopilot off",
        "note: m2-r9 never ran yet: a host a runbook launched; the runbook starts it",
    ]
    made = cli.up_summary({**said, "created": True, "started": ["m1"], "autopilot_started": True}, one[:1])
    assert made.startswith("local cluster created: 1 member started, etcd 3.5.30") and "started, pid 42" in made


def test_the_live_screen_of_a_local_stack_says_how_to_get_its_tools_on_path(tmp_path: Path) -> None:
    import shlex
    import sys

    (tmp_path / "local.json").write_text("{}")
    args = argparse.Namespace(state_dir=str(tmp_path), stack_name=None, config=None)
    etcdops = shlex.quote(str(Path(sys.executable).parent / "etcdops"))

    assert cli_status.env_hint(args) == (
        f'in another terminal, eval "$({etcdops} local env --state-dir {shlex.quote(str(tmp_path))})" puts '
        "etcdops, etcdctl and etcdutl of this stack on PATH"
    )
    assert cli_status.env_hint(argparse.Namespace(state_dir=str(tmp_path / "none"), stack_name=None, config=None)) == ""
