"""What the health rounds keep between rounds: incidents already announced, the last decision, the
highest raft term, the endpoints seen last and the members' metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta

from etcdops.adapters.state import LastDecision, utc
from etcdops.adapters.state_dynamodb.table import TTL_ATTRIBUTE, ConditionFailed, DynamoTable, epoch_s_ceil, epoch_us
from etcdops.domain.decisions import Decision


class ObservationItems(DynamoTable):
    """The incident, decision and observation stores on the state table."""

    # incidents

    def record_incident(
        self, cluster: str, incident_id: str, kind: str, now: datetime, *, ttl_seconds: int | None = None
    ) -> bool:
        ttl = self.incident_ttl_seconds if ttl_seconds is None else ttl_seconds
        now = utc(now)
        expires = now + timedelta(seconds=ttl)
        try:
            self._call(
                "put_item",
                Item={
                    **self._key(cluster, f"incident#{incident_id}"),
                    "kind": {"S": kind},
                    "recorded_at": {"S": now.isoformat()},
                    "expires_at_us": {"N": str(epoch_us(expires))},
                    TTL_ATTRIBUTE: {"N": str(epoch_s_ceil(expires))},
                },
                # DynamoDB deletes expired items lazily: an expired record counts as absent.
                ConditionExpression="attribute_not_exists(pk) OR #exp <= :now",
                ExpressionAttributeNames={"#exp": "expires_at_us"},
                ExpressionAttributeValues={":now": {"N": str(epoch_us(now))}},
            )
        except ConditionFailed:
            return False
        return True

    # last decision

    def save_last_decision(self, cluster: str, decision: Decision, now: datetime) -> None:
        self._call(
            "put_item",
            Item={
                **self._key(cluster, "lastdecision"),
                "decision": {"S": json.dumps(decision.to_dict(), sort_keys=True)},
                "decided_at": {"S": utc(now).isoformat()},
            },
        )

    def load_last_decision(self, cluster: str) -> LastDecision | None:
        item = self._get(cluster, "lastdecision")
        if item is None:
            return None
        return LastDecision(
            Decision.from_dict(json.loads(item["decision"]["S"])),
            datetime.fromisoformat(item["decided_at"]["S"]),
        )

    # raft term

    def advance_raft_term(self, cluster: str, term: int, now: datetime) -> int:
        try:
            response = self._call(
                "update_item",
                Key=self._key(cluster, "raftterm"),
                UpdateExpression="SET #term = :term, updated_at = :now",
                ConditionExpression="attribute_not_exists(#term) OR #term < :term",
                ExpressionAttributeNames={"#term": "term"},
                ExpressionAttributeValues={":term": {"N": str(term)}, ":now": {"S": utc(now).isoformat()}},
                ReturnValues="UPDATED_OLD",
            )
        except ConditionFailed:
            return 0
        previous = response.get("Attributes", {}).get("term")
        return 0 if previous is None else term - int(previous["N"])

    # the endpoints seen last

    def save_endpoints(self, cluster: str, endpoints: list[str], now: datetime) -> None:
        self._call(
            "put_item",
            Item={
                **self._key(cluster, "endpoints"),
                "endpoints": {"L": [{"S": e} for e in endpoints]},
                "updated_at": {"S": utc(now).isoformat()},
            },
        )

    def load_endpoints(self, cluster: str) -> list[str]:
        item = self._get(cluster, "endpoints")
        return [e["S"] for e in item["endpoints"]["L"]] if item is not None else []

    # what the members' own metrics said last

    def save_member_metrics(self, cluster: str, members: Mapping[str, str], now: datetime) -> None:
        self._call(
            "put_item",
            Item={
                **self._key(cluster, "membermetrics"),
                "members": {"M": {name: {"S": document} for name, document in members.items()}},
                "updated_at": {"S": utc(now).isoformat()},
            },
        )

    def load_member_metrics(self, cluster: str) -> dict[str, str]:
        item = self._get(cluster, "membermetrics")
        return {name: value["S"] for name, value in item["members"]["M"].items()} if item is not None else {}
