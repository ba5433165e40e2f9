"""The operation lock: one item per cluster, taken, renewed and released by conditional writes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from etcdops.adapters.state import Lock, LockHeldError, LockLostError, check_lease, check_owner, utc
from etcdops.adapters.state_dynamodb.table import (
    LOCK_TTL_GRACE_SECONDS,
    TTL_ATTRIBUTE,
    ConditionFailed,
    DynamoTable,
    epoch_s_ceil,
    epoch_us,
)


def _lock_from_item(cluster: str, item: Mapping[str, Any]) -> Lock:
    return Lock(
        cluster=cluster,
        owner=item["owner"]["S"],
        acquired_at=datetime.fromisoformat(item["acquired_at"]["S"]),
        expires_at=datetime.fromisoformat(item["expires_at"]["S"]),
    )


class LockItems(DynamoTable):
    """A :class:`etcdops.adapters.state.LockStore` on the state table."""

    _ACQUIRE_ATTEMPTS = 3

    def _lock_item(self, cluster: str, owner: str, acquired_at: datetime, expires_at: datetime) -> dict[str, Any]:
        return {
            **self._key(cluster, "lock"),
            "owner": {"S": owner},
            "acquired_at": {"S": acquired_at.isoformat()},
            "expires_at": {"S": expires_at.isoformat()},
            "expires_at_us": {"N": str(epoch_us(expires_at))},
            TTL_ATTRIBUTE: {"N": str(epoch_s_ceil(expires_at) + LOCK_TTL_GRACE_SECONDS)},
        }

    def acquire_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        check_owner(owner)
        lease = check_lease(lease_seconds)
        now = utc(now)
        lock = Lock(cluster, owner, now, now + lease)
        for _ in range(self._ACQUIRE_ATTEMPTS):
            try:
                self._call(
                    "put_item",
                    Item=self._lock_item(cluster, owner, lock.acquired_at, lock.expires_at),
                    ConditionExpression="attribute_not_exists(pk) OR #exp <= :now OR #owner = :owner",
                    ExpressionAttributeNames={"#exp": "expires_at_us", "#owner": "owner"},
                    ExpressionAttributeValues={
                        ":now": {"N": str(epoch_us(now))},
                        ":owner": {"S": owner},
                    },
                )
                return lock
            except ConditionFailed:
                pass
            held = self.get_lock(cluster)
            if held is not None and held.is_active(now):
                raise LockHeldError(cluster, held.owner, held.expires_at)
            # released or expired between our write and our read: try again
        held = self.get_lock(cluster)
        raise LockHeldError(cluster, held.owner if held else "another owner", held.expires_at if held else now)

    def renew_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        check_owner(owner)
        lease = check_lease(lease_seconds)
        now = utc(now)
        expires_at = now + lease
        try:
            response = self._call(
                "update_item",
                Key=self._key(cluster, "lock"),
                UpdateExpression="SET #expiry = :expiry, #exp = :exp, #ttl = :ttl",
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={
                    "#expiry": "expires_at",
                    "#exp": "expires_at_us",
                    "#ttl": TTL_ATTRIBUTE,
                    "#owner": "owner",
                },
                ExpressionAttributeValues={
                    ":expiry": {"S": expires_at.isoformat()},
                    ":exp": {"N": str(epoch_us(expires_at))},
                    ":ttl": {"N": str(epoch_s_ceil(expires_at) + LOCK_TTL_GRACE_SECONDS)},
                    ":owner": {"S": owner},
                },
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed as exc:
            held = self.get_lock(cluster)
            raise LockLostError(cluster, owner, held.owner if held else None) from exc
        return _lock_from_item(cluster, response["Attributes"])

    def release_lock(self, cluster: str, owner: str) -> bool:
        try:
            self._call(
                "delete_item",
                Key=self._key(cluster, "lock"),
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ConditionFailed:
            return False
        return True

    def get_lock(self, cluster: str) -> Lock | None:
        item = self._get(cluster, "lock")
        return _lock_from_item(cluster, item) if item is not None else None
