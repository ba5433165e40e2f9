"""The failure streaks of a cluster: one item, written whole under a version check."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from etcdops.adapters.state import ConflictError, StreakState, utc
from etcdops.adapters.state_dynamodb.table import TTL_ATTRIBUTE, ConditionFailed, DynamoTable, epoch_s_ceil
from etcdops.domain.decisions import Streak


def _streak_to_item(streak: Streak) -> dict[str, Any]:
    return {
        "M": {
            "first": {"S": utc(streak.first_failed_at).isoformat()},
            "last": {"S": utc(streak.last_failed_at).isoformat()},
            "count": {"N": str(streak.count)},
        }
    }


def _streak_from_item(attr: Mapping[str, Any]) -> Streak:
    m = attr["M"]
    return Streak(
        datetime.fromisoformat(m["first"]["S"]),
        datetime.fromisoformat(m["last"]["S"]),
        int(m["count"]["N"]),
    )


class StreakItems(DynamoTable):
    """A :class:`etcdops.adapters.state.StreakStore` on the state table."""

    def load_streaks(self, cluster: str) -> StreakState:
        item = self._get(cluster, "streaks")
        if item is None:
            return StreakState()
        members = {int(k): _streak_from_item(v) for k, v in item.get("members", {"M": {}})["M"].items()}
        quorum_loss = _streak_from_item(item["quorum_loss"]) if "quorum_loss" in item else None
        mixed = _streak_from_item(item["mixed_versions"]) if "mixed_versions" in item else None
        return StreakState(members, quorum_loss, int(item["version"]["N"]), mixed)

    def save_streaks(
        self,
        cluster: str,
        streaks: Mapping[int, Streak],
        quorum_loss: Streak | None,
        *,
        expected_version: int,
        now: datetime,
        mixed_versions: Streak | None = None,
    ) -> StreakState:
        new_version = expected_version + 1
        item: dict[str, Any] = {
            **self._key(cluster, "streaks"),
            "version": {"N": str(new_version)},
            "members": {"M": {str(member_id): _streak_to_item(s) for member_id, s in streaks.items()}},
            "updated_at": {"S": utc(now).isoformat()},
            TTL_ATTRIBUTE: {"N": str(epoch_s_ceil(now) + self.streak_ttl_seconds)},
        }
        if quorum_loss is not None:
            item["quorum_loss"] = _streak_to_item(quorum_loss)
        if mixed_versions is not None:
            item["mixed_versions"] = _streak_to_item(mixed_versions)
        if expected_version == 0:
            condition = "attribute_not_exists(pk)"
            values: dict[str, Any] = {}
        else:
            condition = "#version = :expected"
            values = {":expected": {"N": str(expected_version)}}
        try:
            self._call(
                "put_item",
                Item=item,
                ConditionExpression=condition,
                **({"ExpressionAttributeNames": {"#version": "version"}} if values else {}),
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ConditionFailed as exc:
            raise ConflictError(cluster, expected_version) from exc
        return StreakState(dict(streaks), quorum_loss, new_version, mixed_versions)
