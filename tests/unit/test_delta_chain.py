"""Delta backups without etcd: the delta format, the chain rules (invariant 19), storing deltas through
the conditional head move (two runs at once: exactly one delta per range), reading them back, and
the choice of backup and deltas of a point-in-time restore."""

from __future__ import annotations

import argparse
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto_dynamodb import state_table
from test_backup_manifest import fields
from test_cli_unit import BACKUPS, GOOD, run

from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.keys import local_key_provider
from etcdops.adapters.backup.store import FileStore
from etcdops.adapters.state_delta import DeltaChainStore, DynamoDeltaChainStore, InMemoryDeltaChainStore
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.backup.catalogue import load_delta_manifest, prune_deltas, read_delta_catalogue
from etcdops.app.backup.delta import DeltaTarget, head_problem, read_delta, store_delta
from etcdops.app.runbook import InvalidRunbookInputError, restore
from etcdops.domain.backup.chain import (
    ChainHead,
    FullBackupRef,
    build_chains,
    choose_point_in_time,
    deltas_to_delete,
    plan_delta_run,
    revision_at_time,
)
from etcdops.domain.backup.delta import DeltaEvent, decode_delta, delta_object_key, encode_delta
from etcdops.domain.backup.errors import DeltaFormatError
from etcdops.domain.backup.manifest import Manifest
from etcdops.domain.errors import UsageError
from etcdops.domain.runbook_documents import RestoreDocument, document_problem
from etcdops_local.cli.runbook_start import _point_in_time

NOW = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
BASE_ID = "20261207T200000Z-0000aa"
TABLE = "etcdops-state"


def put(key: str, revision: int, value: str = "v", lease: int = 0) -> DeltaEvent:
    return DeltaEvent("put", key.encode(), revision, value.encode(), revision, 1, lease)


def revisions(first: int, last: int, per_revision: int = 1) -> list[tuple[int, list[DeltaEvent]]]:
    return [(r, [put(f"k{r}-{i}", r) for i in range(per_revision)]) for r in range(first, last + 1)]


def head(last: int = 10, *, last_delta: str | None = None, cluster_id: str = "c1") -> ChainHead:
    return ChainHead("prod", BASE_ID, cluster_id, 10, last, last_delta, NOW)


# ---- the format ----------------------------------------------------------------------------------

events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["put", "del"]), st.binary(min_size=1, max_size=8), st.binary(max_size=16),
        st.integers(0, 3), st.integers(0, 2**62), st.booleans(),
    ),
    min_size=1,
    max_size=30,
)


@given(events_strategy)
def test_the_format_round_trips_and_is_deterministic(rows: list[tuple[str, bytes, bytes, int, int, bool]]) -> None:
    revision, events = 5, []
    for kind, key, value, step, lease, _ in rows:
        revision += min(step, 1)  # consecutive revisions, several events in some
        events.append(DeltaEvent(kind, key, revision, value if kind == "put" else b"", 3, 2, lease))  # type: ignore[arg-type]
    data = encode_delta(events)
    assert encode_delta(events) == data
    decoded = decode_delta(data, 5 if events[0].revision == 5 else 6, revision)
    assert [e for _, group in decoded for e in group] == events


def test_a_transaction_stays_on_one_line() -> None:
    txn = [put(f"key{i}", 7) for i in range(100)]
    data = encode_delta(txn)
    assert data.count(b"\n") == 1
    assert len(decode_delta(data, 7, 7)[0][1]) == 100


@pytest.mark.parametrize(
    ("data", "first", "last", "says"),
    [
        (encode_delta([put("a", 5), put("b", 7)]), 5, 7, "5..7 (2 revisions)"),  # revision 6 missing
        (encode_delta([put("a", 5)]), 5, 6, "5..5"),  # shorter than its manifest says
        (b'{"r":5,"e":[]}\n', 5, 5, "line 1"),
        (b'{"r":5,"e":[["put","!!","",1,1,0]]}\n', 5, 5, "line 1"),
        (b"not json\n", 5, 5, "line 1"),
    ],
)
def test_a_malformed_delta_is_refused(data: bytes, first: int, last: int, says: str) -> None:
    with pytest.raises(DeltaFormatError, match=says.replace("(", r"\(").replace(")", r"\)")):
        decode_delta(data, first, last)


def test_events_out_of_order_are_refused() -> None:
    with pytest.raises(DeltaFormatError, match="revision 4 after revision 5"):
        encode_delta([put("a", 5), put("b", 4)])


# ---- planning a run ------------------------------------------------------------------------------


def test_plans() -> None:
    assert plan_delta_run(None, "c1", 50).action == "new-chain"
    assert "cluster id changed from c1 to c2" in plan_delta_run(head(), "c2", 50).reason
    assert plan_delta_run(head(40), "c1", 40).action == "none"
    assert plan_delta_run(head(40), "c1", 45) == plan_delta_run(head(40), "c1", 45)
    step = plan_delta_run(head(40), "c1", 45)
    assert (step.action, step.first, step.last) == ("delta", 41, 45)
    assert "behind the chain" in plan_delta_run(head(40), "c1", 30).reason
    assert "is missing" in plan_delta_run(head(40, last_delta="x"), "c1", 45, "is missing").reason
    # a new chain asked for by hand (`backup run --kind delta --new-chain`) ends a chain that could go on;
    # a chain that cannot (another incarnation, its head's delta unreadable) is broken whoever asks
    asked = plan_delta_run(head(40), "c1", 45, None, "by hand")
    assert (asked.action, asked.reason, asked.asked) == ("new-chain", "by hand", True)
    assert plan_delta_run(head(40), "c1", 40, None, "by hand").asked  # even with no write since
    assert not plan_delta_run(head(40, last_delta="x"), "c1", 45, "is missing", "by hand").asked
    assert not plan_delta_run(head(40), "c2", 45, None, "by hand").asked


# ---- storing: the conditional head move ------------------------------------------------------------


@pytest.fixture
def key(tmp_path: Path) -> KeyProvider:
    return local_key_provider(tmp_path / "delta.key", create=True)


@pytest.fixture(params=["memory", "dynamodb"])
def chains(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        yield InMemoryDeltaChainStore()
        return
    with state_table(TABLE) as client:
        yield DynamoDeltaChainStore(DynamoStateStore(TABLE, client))


def started(chains: DeltaChainStore) -> ChainHead:
    first = head()
    assert chains.move_chain_head(None, first)
    assert not chains.move_chain_head(None, first)  # a second start from "no chain" loses
    assert chains.load_chain_head("prod") == first
    return first


def test_deltas_chain_and_read_back(tmp_path: Path, key: KeyProvider, chains: DeltaChainStore) -> None:
    store = FileStore(tmp_path / "b")
    target = DeltaTarget(store, key, chains, "prod", compression="zstd")
    one = store_delta(target, started(chains), revisions(11, 20, per_revision=3), NOW)
    assert one is not None
    now_head = chains.load_chain_head("prod")
    assert now_head is not None and (now_head.last_revision, now_head.last_delta) == (20, one.id)
    two = store_delta(target, now_head, revisions(21, 21, per_revision=100), NOW + timedelta(minutes=1))
    assert two is not None and two.previous == one.id and two.events == 100
    assert read_delta(store, key, two)[0][0] == 21
    assert [d.id for d in read_delta_catalogue(store).deltas] == [one.id, two.id]
    (chain,) = build_chains(read_delta_catalogue(store).deltas)
    assert (chain.base_revision, chain.last_revision, chain.gap_at) == (10, 21, None)
    current = chains.load_chain_head("prod")
    assert current is not None and head_problem(store, key, current) is None


def test_a_delta_must_start_right_after_the_head(tmp_path: Path, key: KeyProvider) -> None:
    target = DeltaTarget(FileStore(tmp_path), key, InMemoryDeltaChainStore(), "prod")
    with pytest.raises(DeltaFormatError, match="must start at 11"):
        store_delta(target, head(), revisions(12, 13), NOW)


def test_two_runs_at_once_store_exactly_one_delta(tmp_path: Path, key: KeyProvider, chains: DeltaChainStore) -> None:
    """Overlapping schedule runs: both read the same head and race; one delta is stored for the
    range, the loser's object is removed and it writes no manifest."""
    store = FileStore(tmp_path / "b")
    target = DeltaTarget(store, key, chains, "prod")
    first = started(chains)
    barrier = threading.Barrier(2)
    results: list[object] = []

    def run(last: int) -> None:
        barrier.wait()
        results.append(store_delta(target, first, revisions(11, last), NOW))

    threads = [threading.Thread(target=run, args=(last,)) for last in (15, 18)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = [r for r in results if r is not None]
    assert len(stored) == 1 and results.count(None) == 1
    catalogue = read_delta_catalogue(store)
    assert [d.id for d in catalogue.deltas] == [stored[0].id]  # type: ignore[attr-defined]
    assert catalogue.orphans == []  # the loser removed its object
    assert store.list("deltas/") == sorted([delta_object_key(d.id) for d in catalogue.deltas] +
                                           [d.manifest_key for d in catalogue.deltas])  # fmt: skip


def test_a_deleted_or_corrupt_head_delta_breaks_the_chain(tmp_path: Path, key: KeyProvider) -> None:
    store, chains = FileStore(tmp_path), InMemoryDeltaChainStore()
    target = DeltaTarget(store, key, chains, "prod")
    manifest = store_delta(target, started(chains), revisions(11, 12), NOW)
    assert manifest is not None
    current = chains.load_chain_head("prod")
    assert current is not None
    store.put_bytes(manifest.object_key + ".x", b"")  # noise that is not an object
    blob = bytearray(b"".join(store.open_read(manifest.object_key)))
    blob[-40] ^= 1
    store.delete(manifest.object_key)
    store.put_bytes(manifest.object_key, bytes(blob))
    assert "cannot be read (DecryptionError" in (head_problem(store, key, current) or "")
    store.delete(manifest.object_key)
    assert "is missing" in (head_problem(store, key, current) or "")
    store.delete(manifest.manifest_key)
    assert "is missing" in (head_problem(store, key, current) or "")
    assert plan_delta_run(current, "c1", 30, head_problem(store, key, current)).action == "new-chain"


def test_a_manifest_of_another_delta_is_refused(tmp_path: Path, key: KeyProvider) -> None:
    store, chains = FileStore(tmp_path), InMemoryDeltaChainStore()
    manifest = store_delta(DeltaTarget(store, key, chains, "prod"), started(chains), revisions(11, 11), NOW)
    assert manifest is not None
    other = "20261207T210000Z-0000bb"
    store.put_bytes(f"deltas/{other}.delta.json", manifest.to_json())
    with pytest.raises(DeltaFormatError, match="describes delta"):
        load_delta_manifest(store, other)
    assert any(other in line for line in read_delta_catalogue(store).corrupt)


# ---- chains in a store, point-in-time choice, retention ----------------------------------------------


def manifests(tmp_path: Path, key: KeyProvider, ranges: list[tuple[int, int]]) -> list:  # type: ignore[type-arg]
    store, chains = FileStore(tmp_path), InMemoryDeltaChainStore()
    target, current, out = DeltaTarget(store, key, chains, "prod"), started(chains), []
    for n, (first, last) in enumerate(ranges):
        current = chains.load_chain_head("prod") or current
        stored = store_delta(target, current, revisions(first, last), NOW + timedelta(minutes=n + 1))
        out.append(stored)
    return out


def test_a_deleted_delta_in_the_middle_is_a_gap(tmp_path: Path, key: KeyProvider) -> None:
    one, _two, three = manifests(tmp_path, key, [(11, 20), (21, 30), (31, 40)])
    (chain,) = build_chains([one, three])
    assert (chain.last_revision, chain.gap_at, [d.id for d in chain.stray]) == (20, 21, [three.id])
    backups = [FullBackupRef(BASE_ID, "c1", 10, NOW, True)]
    assert choose_point_in_time(backups, [chain], 15).deltas == (one,)
    with pytest.raises(UsageError, match="reach revision 35"):
        choose_point_in_time(backups, [chain], 35)
    assert choose_point_in_time(backups, [chain], None).target_revision == 20  # --latest stops at the gap


def test_point_in_time_picks_the_newest_backup_at_or_before_the_target(tmp_path: Path, key: KeyProvider) -> None:
    deltas = manifests(tmp_path, key, [(11, 20), (21, 30), (31, 40)])
    chains = build_chains(deltas)
    old = FullBackupRef(BASE_ID, "c1", 10, NOW, True)
    mid = FullBackupRef("20261207T201000Z-0000cc", "c1", 25, NOW + timedelta(minutes=2), True)
    unverified = FullBackupRef("20261207T201500Z-0000dd", "c1", 33, NOW, False)
    other = FullBackupRef("20261207T201600Z-0000ee", "ff", 34, NOW, True)
    choice = choose_point_in_time([old, mid, unverified, other], chains, 37)
    assert (choice.backup, [d.last_revision for d in choice.deltas], choice.replayed_revisions) == (mid, [30, 40], 12)
    assert choose_point_in_time([old, mid], chains, 24).backup == old
    assert choose_point_in_time([old, mid], chains, 25).deltas == ()
    assert choose_point_in_time([old, mid], chains, None).target_revision == 40
    assert revision_at_time(chains, [old, mid], NOW + timedelta(minutes=2, seconds=30)) == 30
    assert revision_at_time(chains, [old, mid], NOW + timedelta(minutes=1, seconds=30)) == 20
    assert revision_at_time(chains, [old, mid], NOW + timedelta(seconds=30)) == 10  # only the full backup
    with pytest.raises(UsageError, match="no backup or delta"):
        revision_at_time(chains, [old], NOW - timedelta(days=1))
    with pytest.raises(UsageError, match="no verified full backup"):
        choose_point_in_time([unverified], chains, 37)


def test_retention_keeps_the_deltas_a_kept_backup_needs(tmp_path: Path, key: KeyProvider) -> None:
    one, two, three = manifests(tmp_path, key, [(11, 20), (21, 30), (31, 40)])
    kept = [FullBackupRef("20261207T201000Z-0000cc", "c1", 25, NOW, True)]
    assert deltas_to_delete([one, two, three], kept) == [one.id]
    assert deltas_to_delete([one, two, three], []) == sorted([one.id, two.id, three.id])
    other_cluster = [FullBackupRef("20261207T201000Z-0000cc", "ff", 1, NOW, True)]
    assert deltas_to_delete([one], other_cluster) == [one.id]


def test_retention_deletes_unneeded_deltas_and_old_delta_orphans(tmp_path: Path, key: KeyProvider) -> None:
    store = FileStore(tmp_path)
    one, two, three = manifests(tmp_path, key, [(11, 20), (21, 30), (31, 40)])
    store.put_bytes("deltas/20261201T000000Z-0000ff.delta.enc", b"a lost race's object")  # an old orphan
    store.put_bytes(f"deltas/{NOW:%Y%m%dT%H%M%SZ}-0000fe.delta.enc", b"a run writing right now")
    kept = Manifest(**fields(id="20261207T201000Z-0000cc", cluster_id="c1", revision=25, verified=True,
                             verified_at=NOW))  # fmt: skip
    deleted = prune_deltas(store, [kept], NOW, timedelta(hours=1), lambda _: None)
    assert deleted == [one.id, "20261201T000000Z-0000ff"]
    catalogue = read_delta_catalogue(store)
    assert [d.id for d in catalogue.deltas] == [two.id, three.id]
    assert catalogue.orphans == [f"{NOW:%Y%m%dT%H%M%SZ}-0000fe"]  # younger than the grace period: left alone


def test_backup_list_shows_chains_their_coverage_and_gaps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = local_key_provider(tmp_path / "backup.key", create=True)
    one, two, three = manifests(tmp_path / "store", key, [(11, 20), (21, 30), (31, 40)])
    FileStore(tmp_path / "store").delete(two.manifest_key)  # a deleted delta in the middle
    config = tmp_path / "c.yaml"
    config.write_text(GOOD + BACKUPS % (tmp_path, tmp_path))

    code, out, _ = run(["--config", str(config), "backup", "list", "--json"], capsys)
    (chain,) = json.loads(out)["chains"]
    assert code == 0 and (chain["from_revision"], chain["to_revision"], chain["gap_at"]) == (10, 20, 21)
    assert (chain["deltas"], chain["stray"], chain["to_time"]) == (1, [three.id], one.created_at.isoformat())
    code, out, _ = run(["--config", str(config), "backup", "list"], capsys)
    assert "10 .. 20" in out and "at revision 21, 1 deltas after it unusable" in out


# ---- the point in time a restore is asked for ----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"to_revision": 5, "latest": True}, "not --to-revision and --latest"),
        ({"to_revision": 5, "backup": "20261207T200000Z-0000aa"}, "not --to-revision and --backup"),
        ({"to_revision": 0}, "revisions start at 1"),
        ({"to_time": "2026-12-07T21:00:00"}, "has no time zone"),
        ({"to_time": "yesterday"}, "is not an ISO 8601 time"),
    ],
)
def test_runbook_start_restore_refuses_a_bad_point_in_time(given: dict[str, object], says: str) -> None:
    args = argparse.Namespace(**{"to_revision": None, "to_time": None, "latest": False, "backup": None, **given})
    with pytest.raises(UsageError, match=says):
        _point_in_time(args)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (["--to-time", "yesterday"], "--to-time 'yesterday' is not an ISO 8601 time"),
        (["--to-time", "2026-12-07T21:00:00"], "has no time zone"),
        (["--to-revision", "0"], "--to-revision 0: revisions start at 1"),
        (["--to-revision", "ten"], "--to-revision: invalid int value: 'ten'"),
        (["--latest", "--to-revision", "3"], "not --to-revision and --latest"),
    ],
)
def test_a_bad_point_in_time_is_refused_before_the_session_is_looked_up(
    given: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no stack in this state directory: a point in time that was checked later would say "no local stack" instead
    code, _, err = run(["--state-dir", str(tmp_path), "runbook", "start", "restore", *given], capsys)
    assert code == 2 and says in err and err.count("\n") == 1, err


def test_the_point_in_time_becomes_the_runbook_input_and_is_checked_there_again() -> None:
    args = argparse.Namespace(to_revision=None, to_time="2026-12-07T21:00:00Z", latest=False, backup=None)
    assert _point_in_time(args) == {"to_time": "2026-12-07T21:00:00+00:00"}
    doc = {"cluster": "c", "execution": "e"}
    assert restore.restore_target({**doc, "to_revision": 7}) == {"revision": 7}
    assert restore.restore_target({**doc, "latest": True}) == {"latest": True}
    assert restore.restore_target(doc) is None
    with pytest.raises(InvalidRunbookInputError, match="not latest and to_revision"):
        restore.restore_target({**doc, "to_revision": 7, "latest": True})
    with pytest.raises(InvalidRunbookInputError, match="not to_revision and backup_id"):
        restore.restore_target({**doc, "to_revision": 7, "backup_id": BASE_ID})
    planned = {**doc, "latest": True, "backup_id": BASE_ID, "pitr": {"target_revision": 40}}  # ValidateBackup ran
    assert restore.restore_target(planned) == {"revision": 40}  # a rerun keeps the target it planned
    assert "to_time" in (document_problem(RestoreDocument, {**doc, "to_time": "2026-12-07 21:00"}) or "")
    assert "to_revision" in (document_problem(RestoreDocument, {**doc, "to_revision": 0}) or "")
    assert document_problem(RestoreDocument, {**doc, "to_revision": 12, "to_time": "2026-12-07T21:00:00Z"}) is None
