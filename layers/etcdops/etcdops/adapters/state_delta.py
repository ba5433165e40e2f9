"""The head of each cluster's delta chain in the state store, moved only by a conditional write.

:meth:`DeltaChainStore.move_chain_head` replaces the head only if it is still the one the caller
read (same chain, same last revision; or still none): of two delta runs that read the same head,
exactly one moves it, so no two stored deltas overlap and none leaves a gap (invariant 19). Both
backends behave the same: :class:`InMemoryDeltaChainStore` (tests, a local process) and
:class:`DynamoDeltaChainStore`, the item ``sk = "deltachain"`` in the cluster's partition of the
state table (attributes ``chain_id``, ``cluster_id``, ``base_revision``, ``last_revision``,
``last_delta``, ``updated_at``).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Final, Protocol

from etcdops.adapters.state import check_cluster, utc
from etcdops.adapters.state_dynamodb import ConditionFailed, DynamoStateStore
from etcdops.domain.backup.chain import ChainHead

HEAD_SK: Final = "deltachain"


class DeltaChainStore(Protocol):
    """Where a cluster's delta chain ends."""

    def load_chain_head(self, cluster: str) -> ChainHead | None: ...

    def move_chain_head(self, expected: ChainHead | None, new: ChainHead) -> bool:
        """Store ``new`` if the head is still ``expected`` (None: no head yet); False if it moved."""


def _same(current: ChainHead | None, expected: ChainHead | None) -> bool:
    if current is None or expected is None:
        return current is None and expected is None
    return (current.chain_id, current.last_revision) == (expected.chain_id, expected.last_revision)


class InMemoryDeltaChainStore:
    """Chain heads in this process's memory, with the same conditional semantics."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._heads: dict[str, ChainHead] = {}

    def load_chain_head(self, cluster: str) -> ChainHead | None:
        with self._mutex:
            return self._heads.get(check_cluster(cluster))

    def move_chain_head(self, expected: ChainHead | None, new: ChainHead) -> bool:
        with self._mutex:
            if not _same(self._heads.get(check_cluster(new.cluster)), expected):
                return False
            self._heads[new.cluster] = new
            return True


class DynamoDeltaChainStore:
    """Chain heads in the state table of ``state`` (the same table, client and error mapping)."""

    def __init__(self, state: DynamoStateStore) -> None:
        self._state = state

    def load_chain_head(self, cluster: str) -> ChainHead | None:
        item = self._state.get_item(cluster, HEAD_SK)
        if item is None:
            return None
        last_delta = item.get("last_delta", {}).get("S")
        return ChainHead(
            cluster=cluster,
            chain_id=item["chain_id"]["S"],
            cluster_id=item["cluster_id"]["S"],
            base_revision=int(item["base_revision"]["N"]),
            last_revision=int(item["last_revision"]["N"]),
            last_delta=last_delta,
            updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
        )

    def move_chain_head(self, expected: ChainHead | None, new: ChainHead) -> bool:
        item: dict[str, Any] = {
            **self._state.item_key(new.cluster, HEAD_SK),
            "chain_id": {"S": new.chain_id},
            "cluster_id": {"S": new.cluster_id},
            "base_revision": {"N": str(new.base_revision)},
            "last_revision": {"N": str(new.last_revision)},
            "updated_at": {"S": utc(new.updated_at).isoformat()},
        }
        if new.last_delta is not None:
            item["last_delta"] = {"S": new.last_delta}
        if expected is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "chain_id = :chain AND last_revision = :last",
                "ExpressionAttributeValues": {
                    ":chain": {"S": expected.chain_id},
                    ":last": {"N": str(expected.last_revision)},
                },
            }
        try:
            self._state.call("put_item", Item=item, **condition)
        except ConditionFailed:
            return False
        return True
