"""The fleet's state (invariant 15): each cluster's last report, the fleet brake and the repair slots,
in the state table (:class:`DynamoFleetStore`) or in memory (:class:`InMemoryFleetStore`).

In the state table they live in one partition of their own, ``pk = "fleet"``:

=====================  ==========================================================================
``sk``                 item
=====================  ==========================================================================
``report#<cluster>``   the cluster's last round: ``failing`` (bool), ``at``; ``ttl``
``members``            the clusters the deployment watches (``names``), written by the fan-out
``brake``              ``engaged`` (bool), ``reason``, ``changed_at``: changed by a conditional
                       write, so exactly one caller sees each change (and sends its message)
``slots``              the running repairs: ``holders`` (execution -> lease end, ISO), ``version``
                       checked on every write
=====================  ==========================================================================

The decisions (when to brake, whether a slot is free) are the domain's (``etcdops.domain.fleet``);
this module only reads and writes, and every write that must not race is conditional.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from etcdops.adapters.awserrors import AWS_SDK_ERRORS, aws_error, aws_error_code
from etcdops.adapters.state import check_cluster, utc
from etcdops.domain.fleet import Report

__all__ = ["BrakeState", "DynamoFleetStore", "FleetStore", "InMemoryFleetStore", "Slots"]

REPORT_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class BrakeState:
    engaged: bool = False
    reason: str = ""
    changed_at: datetime | None = None


@dataclass(frozen=True)
class Slots:
    holders: dict[str, datetime]
    version: int = 0  # 0: never written


class FleetStore(Protocol):
    def report(self, cluster: str, failing: bool, now: datetime) -> None:
        """Record what the cluster's round saw (replacing its previous report)."""

    def load_reports(self) -> list[Report]: ...

    def save_members(self, names: list[str], now: datetime) -> None:
        """The clusters the deployment watches (the registry, as the fan-out read it)."""

    def load_members(self) -> list[str] | None:
        """The clusters last saved; None when no fan-out ever saved them (a one-cluster stack)."""

    def load_brake(self) -> BrakeState: ...

    def set_brake(self, engaged: bool, reason: str, now: datetime) -> bool:
        """Engage or release the brake: True for the one caller whose write changed it."""

    def load_slots(self) -> Slots: ...

    def save_slots(self, holders: dict[str, datetime], expected_version: int) -> bool:
        """Replace the slots if their version is still ``expected_version`` (False: reload, decide again)."""


class InMemoryFleetStore:
    """The same semantics in this process's memory (tests, the local health loop); thread-safe."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._reports: dict[str, Report] = {}
        self._members: list[str] | None = None
        self._brake = BrakeState()
        self._slots = Slots({})

    def report(self, cluster: str, failing: bool, now: datetime) -> None:
        with self._mutex:
            self._reports[check_cluster(cluster)] = Report(cluster, failing, utc(now))

    def load_reports(self) -> list[Report]:
        with self._mutex:
            return list(self._reports.values())

    def save_members(self, names: list[str], now: datetime) -> None:
        with self._mutex:
            self._members = sorted(names)

    def load_members(self) -> list[str] | None:
        with self._mutex:
            return None if self._members is None else list(self._members)

    def load_brake(self) -> BrakeState:
        with self._mutex:
            return self._brake

    def set_brake(self, engaged: bool, reason: str, now: datetime) -> bool:
        with self._mutex:
            if self._brake.engaged == engaged:
                return False
            self._brake = BrakeState(engaged, reason, utc(now))
            return True

    def load_slots(self) -> Slots:
        with self._mutex:
            return Slots(dict(self._slots.holders), self._slots.version)

    def save_slots(self, holders: dict[str, datetime], expected_version: int) -> bool:
        with self._mutex:
            if self._slots.version != expected_version:
                return False
            self._slots = Slots(dict(holders), expected_version + 1)
            return True


_PK = {"S": "fleet"}


class DynamoFleetStore:
    """The fleet's items in the state table (the client is passed in)."""

    def __init__(self, table_name: str, dynamodb_client: Any) -> None:
        self.table_name = table_name
        self._client = dynamodb_client

    def _call(self, operation: str, **request: Any) -> dict[str, Any] | None:
        """One call; None when its condition failed, a named error for any other failure."""
        try:
            response: dict[str, Any] = getattr(self._client, operation)(TableName=self.table_name, **request)
        except AWS_SDK_ERRORS as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise aws_error(f"DynamoDB {operation} on table {self.table_name}", exc) from exc
        return response

    def _get(self, sk: str) -> dict[str, Any] | None:
        response = self._call("get_item", Key={"pk": _PK, "sk": {"S": sk}}, ConsistentRead=True) or {}
        item: dict[str, Any] | None = response.get("Item")
        return item

    def report(self, cluster: str, failing: bool, now: datetime) -> None:
        now = utc(now)
        ttl = int((now + timedelta(seconds=REPORT_TTL_SECONDS)).timestamp())
        item = {"pk": _PK, "sk": {"S": f"report#{check_cluster(cluster)}"}, "failing": {"BOOL": failing},
                "at": {"S": now.isoformat()}, "ttl": {"N": str(ttl)}}  # fmt: skip
        self._call("put_item", Item=item)

    def load_reports(self) -> list[Report]:
        reports: list[Report] = []
        request: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": _PK, ":prefix": {"S": "report#"}},
            "ConsistentRead": True,
        }
        while True:
            page = self._call("query", **request) or {}
            for item in page.get("Items", []):
                cluster = item["sk"]["S"].removeprefix("report#")
                reports.append(Report(cluster, item["failing"]["BOOL"], datetime.fromisoformat(item["at"]["S"])))
            if "LastEvaluatedKey" not in page:
                return reports
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def save_members(self, names: list[str], now: datetime) -> None:
        item = {"pk": _PK, "sk": {"S": "members"}, "names": {"L": [{"S": n} for n in sorted(names)]},
                "saved_at": {"S": utc(now).isoformat()}}  # fmt: skip
        self._call("put_item", Item=item)

    def load_members(self) -> list[str] | None:
        item = self._get("members")
        return None if item is None else [n["S"] for n in item["names"]["L"]]

    def load_brake(self) -> BrakeState:
        item = self._get("brake")
        if item is None:
            return BrakeState()
        return BrakeState(item["engaged"]["BOOL"], item["reason"]["S"], datetime.fromisoformat(item["changed_at"]["S"]))

    def set_brake(self, engaged: bool, reason: str, now: datetime) -> bool:
        item = {"pk": _PK, "sk": {"S": "brake"}, "engaged": {"BOOL": engaged}, "reason": {"S": reason},
                "changed_at": {"S": utc(now).isoformat()}}  # fmt: skip
        # engaging: it was never written or is released; releasing: it is engaged (never written counts as released)
        condition = "attribute_not_exists(pk) OR engaged = :other" if engaged else "engaged = :other"
        other = {":other": {"BOOL": not engaged}}
        done = self._call("put_item", Item=item, ConditionExpression=condition, ExpressionAttributeValues=other)
        return done is not None

    def load_slots(self) -> Slots:
        item = self._get("slots")
        if item is None:
            return Slots({})
        holders = {name: datetime.fromisoformat(v["S"]) for name, v in item["holders"]["M"].items()}
        return Slots(holders, int(item["version"]["N"]))

    def save_slots(self, holders: dict[str, datetime], expected_version: int) -> bool:
        item = {"pk": _PK, "sk": {"S": "slots"}, "version": {"N": str(expected_version + 1)},
                "holders": {"M": {name: {"S": utc(until).isoformat()} for name, until in holders.items()}}}  # fmt: skip
        if expected_version == 0:
            done = self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
        else:
            done = self._call(
                "put_item",
                Item=item,
                ConditionExpression="version = :v",
                ExpressionAttributeValues={":v": {"N": str(expected_version)}},
            )
        return done is not None
