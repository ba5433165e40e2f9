"""Repair attempts of an incident (invariant 12): one item per attempt, and one once it is escalated."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from etcdops.adapters.state import Repair, RepairRecord, utc
from etcdops.adapters.state_dynamodb.table import TTL_ATTRIBUTE, ConditionFailed, DynamoTable, cluster_pk, epoch_s_ceil


def _repair_prefix(incident: str) -> str:
    return f"repair#{incident}#"


def _attempt_sk(incident: str, number: int) -> str:
    return f"{_repair_prefix(incident)}a{number:02d}"


def _repairs_from_items(items: list[dict[str, Any]]) -> dict[str, Repair]:
    repairs: dict[str, Repair] = {}
    for item in items:
        incident = item["incident"]["S"]
        repair = repairs.get(incident, Repair(incident))
        if "escalated_at" in item:
            repair = replace(repair, escalated_at=datetime.fromisoformat(item["escalated_at"]["S"]))
        else:

            def text(name: str, item: dict[str, Any] = item) -> str | None:
                return item[name]["S"] if name in item else None

            ended = text("ended_at")
            record = RepairRecord(
                incident=incident,
                number=int(item["attempt"]["N"]),
                execution=item["execution"]["S"],
                recorded_at=datetime.fromisoformat(item["recorded_at"]["S"]),
                document=item["document"]["S"],
                outcome=text("outcome"),
                error=text("error"),
                cause=text("cause"),
                ended_at=datetime.fromisoformat(ended) if ended else None,
            )
            repair = replace(repair, attempts=tuple(sorted((*repair.attempts, record), key=lambda a: a.number)))
        repairs[incident] = repair
    return repairs


class RepairItems(DynamoTable):
    """A :class:`etcdops.adapters.state.RepairStore` on the state table."""

    def record_repair_attempt(self, cluster: str, record: RepairRecord) -> bool:
        expires = utc(record.recorded_at) + timedelta(seconds=self.incident_ttl_seconds)
        try:
            self._call(
                "put_item",
                Item={
                    **self._key(cluster, _attempt_sk(record.incident, record.number)),
                    "incident": {"S": record.incident},
                    "attempt": {"N": str(record.number)},
                    "execution": {"S": record.execution},
                    "recorded_at": {"S": utc(record.recorded_at).isoformat()},
                    "document": {"S": record.document},
                    TTL_ATTRIBUTE: {"N": str(epoch_s_ceil(expires))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ConditionFailed:
            return False
        return True

    def finish_repair_attempt(
        self,
        cluster: str,
        incident: str,
        number: int,
        execution: str,
        outcome: str,
        error: str | None,
        cause: str | None,
        ended_at: datetime,
    ) -> bool:
        values: dict[str, Any] = {
            ":execution": {"S": execution},
            ":outcome": {"S": outcome},
            ":ended": {"S": utc(ended_at).isoformat()},
        }
        update = "SET #outcome = :outcome, ended_at = :ended"
        for name, value in (("error", error), ("cause", cause)):
            if value is not None:
                update += f", #{name} = :{name}"
                values[f":{name}"] = {"S": value}
        names = {"#outcome": "outcome", "#execution": "execution"}
        names.update({f"#{n}": n for n, v in (("error", error), ("cause", cause)) if v is not None})
        try:
            self._call(
                "update_item",
                Key=self._key(cluster, _attempt_sk(incident, number)),
                UpdateExpression=update,
                ConditionExpression=(
                    "attribute_exists(pk) AND #execution = :execution AND attribute_not_exists(#outcome)"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        return True

    def escalate_repair(self, cluster: str, incident: str, now: datetime) -> bool:
        expires = utc(now) + timedelta(seconds=self.incident_ttl_seconds)
        try:
            self._call(
                "put_item",
                Item={
                    **self._key(cluster, f"{_repair_prefix(incident)}escalated"),
                    "incident": {"S": incident},
                    "escalated_at": {"S": utc(now).isoformat()},
                    TTL_ATTRIBUTE: {"N": str(epoch_s_ceil(expires))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ConditionFailed:
            return False
        return True

    def _repair_items(self, cluster: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": cluster_pk(cluster)}, ":prefix": {"S": prefix}},
            "ConsistentRead": True,
        }
        while True:
            page = self._call("query", **kwargs)
            items.extend(page.get("Items", []))
            if not page.get("LastEvaluatedKey"):
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def load_repair(self, cluster: str, incident: str) -> Repair:
        items = self._repair_items(cluster, _repair_prefix(incident))
        return _repairs_from_items(items).get(incident, Repair(incident))

    def load_repairs(self, cluster: str) -> list[Repair]:
        return [r for _, r in sorted(_repairs_from_items(self._repair_items(cluster, "repair#")).items())]
