"""`backup verify` and BackupVerify read every delta chain back: a good chain passes; a deleted delta in the
middle, a delta whose object is gone and a tampered delta are each reported as a break of their chain (and
`backup list` shows the breaks its listing can see); `backup verify` then fails (exit status 1) after
printing its result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_unit import BACKUPS, GOOD, SNAPSHOT, run
from test_delta_chain import manifests

from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.keys import local_key_provider
from etcdops.adapters.backup.store import FileStore
from etcdops.app.backup.delta import chain_warnings, verify_delta_chains


@pytest.fixture
def key(tmp_path: Path) -> KeyProvider:
    return local_key_provider(tmp_path / "backup.key", create=True)


def test_a_good_chain_passes(tmp_path: Path, key: KeyProvider) -> None:
    manifests(tmp_path / "store", key, [(11, 20), (21, 30), (31, 40)])
    (check,) = verify_delta_chains(FileStore(tmp_path / "store"), key, "prod")
    assert (check.broken, check.deltas, check.from_revision, check.to_revision) == (False, 3, 10, 40)
    assert chain_warnings([check]) == []


def test_a_deleted_delta_in_the_middle_and_a_tampered_one_are_reported(tmp_path: Path, key: KeyProvider) -> None:
    store = FileStore(tmp_path / "store")
    one, two, three, four = manifests(tmp_path / "store", key, [(11, 20), (21, 30), (31, 40), (41, 50)])
    store.delete(two.object_key)  # deleted in the middle: object and manifest
    store.delete(two.manifest_key)
    blob = bytearray(b"".join(store.open_read(three.object_key)))
    blob[-40] ^= 1  # tampered: one bit of the ciphertext
    store.delete(three.object_key)
    store.put_bytes(three.object_key, bytes(blob))
    store.delete(four.object_key)  # only the object gone: a manifest of nothing

    (check,) = verify_delta_chains(store, key, "prod")
    assert check.broken and (check.to_revision, check.deltas) == (20, 3)
    gap, missing, tampered = check.problems
    assert gap.startswith("revision 21 is in no delta") and "2 deltas after the gap cannot be replayed" in gap
    assert missing == f"the objects of 1 deltas are missing: {four.id}"
    assert tampered.startswith(f"delta {three.id} (31..40): ") and "DecryptionError" in tampered
    assert all(line.startswith(f"delta chain {one.chain_id} (cluster id c1) is broken: ")
               for line in chain_warnings([check]))  # fmt: skip


def test_a_tampered_delta_alone_breaks_its_chain(tmp_path: Path, key: KeyProvider) -> None:
    store = FileStore(tmp_path / "store")
    _, two = manifests(tmp_path / "store", key, [(11, 20), (21, 30)])
    blob = b"".join(store.open_read(two.object_key))
    store.delete(two.object_key)
    store.put_bytes(two.object_key, blob[:-1])  # cut short
    (check,) = verify_delta_chains(store, key, "prod")
    assert check.broken and len(check.problems) == 1 and two.id in check.problems[0]


def test_backup_list_shows_a_broken_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = local_key_provider(tmp_path / "backup.key", create=True)
    _, two = manifests(tmp_path / "store", key, [(11, 20), (21, 30)])
    FileStore(tmp_path / "store").delete(two.object_key)
    config = tmp_path / "c.yaml"
    config.write_text(GOOD + BACKUPS % (tmp_path, tmp_path))

    code, out, _ = run(["--config", str(config), "backup", "list", "--json"], capsys)
    (chain,) = json.loads(out)["chains"]
    assert code == 0 and chain["problems"] == [f"the objects of 1 deltas are missing: {two.id}"]
    code, out, err = run(["--config", str(config), "backup", "list"], capsys)
    assert "BROKEN (see the warnings)" in out and f"is broken: the objects of 1 deltas are missing: {two.id}" in err


def test_backup_verify_fails_when_a_delta_chain_is_broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a store with a full backup (an imported snapshot) and a chain of three deltas of cluster prod
    config = tmp_path / "c.yaml"
    config.write_text(GOOD.replace("name: good", "name: prod") + BACKUPS % (tmp_path, tmp_path))
    code, out, _ = run(["--config", str(config), "--json", "backup", "import", str(SNAPSHOT)], capsys)
    assert code == 0
    backup_id = json.loads(out)["id"]
    key = local_key_provider(tmp_path / "backup.key")
    one, two, _ = manifests(tmp_path / "store", key, [(11, 20), (21, 30), (31, 40)])
    verify = ["--config", str(config), "backup", "verify", backup_id]

    # When the chain is whole, verify succeeds and says so
    code, out, err = run([*verify, "--json"], capsys)
    (chain,) = json.loads(out)["delta_chains"]
    assert code == 0 and err == "" and (chain["broken"], chain["deltas"]) == (False, 3), err
    assert json.loads(out)["delta_chains_broken"] == 0

    # When a delta in the middle is deleted (object and manifest), verify still prints its result, but fails
    store = FileStore(tmp_path / "store")
    store.delete(two.object_key)
    store.delete(two.manifest_key)
    code, out, err = run([*verify, "--json"], capsys)
    data = json.loads(out)
    (chain,) = data["delta_chains"]
    assert code == 1 and data["ok"] and data["delta_chains_broken"] == 1
    assert (chain["chain"], chain["broken"], chain["to_revision"]) == (one.chain_id, True, 20)
    assert chain["problems"][0].startswith("revision 21 is in no delta")
    *warnings, reason = err.splitlines()
    assert warnings and all(w.startswith(f"warning: delta chain {one.chain_id} ") for w in warnings)
    assert reason.startswith(f"etcdops: backup {backup_id} verified, but 1 of 1 delta chains are broken ")
    assert f"({one.chain_id}): a point-in-time restore cannot replay past a break" in reason
    code, out, err = run(verify, capsys)  # the text says it too
    assert code == 1 and "1 BROKEN" in out and err.splitlines()[-1] == reason
