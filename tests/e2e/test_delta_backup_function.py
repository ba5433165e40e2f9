"""The DeltaBackup function in the emulated stack, with its own role, against a real cluster: the first run
starts a chain from a full backup, the next ones store the changes as deltas in the stack's bucket and move
the chain head in the state table (invariant 19)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from builders import configured_stack
from stack_templates import ROOT, TEMPLATE

from etcdops.adapters.backup.store import open_store
from etcdops.adapters.state_delta import DynamoDeltaChainStore
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.backup.catalogue import read_delta_catalogue
from etcdops.domain.backup.chain import build_chains
from etcdops_local.aws.stack import LocalAws
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def aws() -> Iterator[LocalAws]:
    with LocalAws() as local:
        yield local


def schedule_event() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "events" / "delta_backup_schedule.json").read_text())
    return loaded


def test_delta_backup_builds_the_chain_in_the_stack(aws: LocalAws, start_cluster, etcd3530: EtcdBinaries) -> None:  # type: ignore[no-untyped-def]
    # one version: what the function's role and wiring do does not depend on it (the integration tier runs the
    # delta runs themselves on every version)
    cluster: LocalCluster = start_cluster(etcd3530, members=1)
    stack = configured_stack(aws, TEMPLATE, cluster)

    def run() -> dict[str, Any]:
        response = aws.client("lambda").invoke(
            FunctionName=stack.functions["DeltaBackupFunction"], Payload=json.dumps(schedule_event())
        )
        result: dict[str, Any] = json.loads(response["Payload"].read())
        assert response.get("FunctionError") is None, result
        return result

    first = run()
    assert (first["action"], first["broken"]) == ("new-chain", None) and first["backup_id"]
    results = []
    with cluster.client() as client:
        for n in range(2):
            client.put(f"/delta/{n}", "x")
            client.delete(f"/delta/{n}")
            results.append(run())  # the second run reads the first delta back before it continues
    assert [(r["action"], r["events"]) for r in results] == [("delta", 2), ("delta", 2)]
    assert results[1]["first_revision"] == results[0]["last_revision"] + 1

    store = open_store(f"s3://{stack.bucket}/etcd/local", s3_client=aws.client("s3"))
    (chain,) = build_chains(read_delta_catalogue(store).deltas)
    assert (chain.chain_id, [d.id for d in chain.deltas]) == (first["backup_id"], [r["delta_id"] for r in results])
    head = DynamoDeltaChainStore(DynamoStateStore(stack.table or "", aws.client("dynamodb"))).load_chain_head("local")
    assert head is not None and (head.last_delta, head.last_revision) == (results[1]["delta_id"], chain.last_revision)
    assert run()["action"] == "none"  # no write since
