"""The state in one DynamoDB table (a :class:`etcdops.adapters.state.StateStore`; the client is passed in).

The module is longer than our ~400 lines: it is the table's item layout and every conditional write
on it, kept in one place so the layout below is read and changed in one place.

Single-table design (:data:`TABLE_KEY_SCHEMA`), one partition per cluster, ``pk = "cluster#<name>"``:

=====================  ==========================================================================
``sk``                 item
=====================  ==========================================================================
``streaks``            all failure streaks of the cluster in one item (``members`` map, optional
                       ``quorum_loss`` and ``mixed_versions``), a ``version`` number checked on
                       every write, ``ttl``
``lock``               the operation lock: ``owner``, ``acquired_at``, ``expires_at``,
                       ``expires_at_us`` (epoch microseconds, compared in conditions), ``ttl``
``incident#<id>``      one incident or notification already announced: ``kind``, ``recorded_at``,
                       ``ttl``
``lastdecision``       the last policy decision as JSON, ``decided_at``
``raftterm``           the highest raft term seen (``term``), ``updated_at``: counts leader changes
``endpoints``          the client URLs of the members the last round saw (``endpoints``, a list):
                       seeds besides the configured endpoints, so stale configuration cannot blind
                       the next round (invariant 10)
``membermetrics``       what the last round kept of each member's /metrics (``members``: member name
                       -> JSON: histogram buckets, counters, gauges), the base of the next deltas
``repair#<incident>#a<NN>``  one repair attempt (invariant 12): ``execution``, ``recorded_at``, the
                       execution ``document`` (JSON), and once it ended ``outcome``, ``error``,
                       ``cause``, ``ended_at``; ``ttl``
``repair#<incident>#escalated``  the repair was escalated to a human (``escalated_at``), once
``deltachain``         where the delta chain ends (``adapters.state_delta``): chain, cluster id, base
                       and last revision, last delta; moved only by a conditional write
=====================  ==========================================================================

Approvals are found by execution alone (``etcdops approve EXECUTION``, a signed link), so they
live in their own partition, ``pk = "approval#<execution name>"``, ``sk = "approval"``: the
:class:`Approval` (task token, request id, what and why, ``expires_at``), and once decided its
``decision``, ``decided_by``, ``decided_at``. ``ttl`` is the expiry plus
:data:`APPROVAL_TTL_GRACE_SECONDS`. Execution names must therefore be unique across runbooks.

The streaks of a cluster live in one item, not one item per member, so a probe round is saved
with one conditional write: it either lands whole or raises :class:`ConflictError` and the caller
reloads, folds its observation in again and retries. (Per-member items would need a transaction;
a partly written round retried on top of itself would count probes twice.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from etcdops.adapters.awserrors import AWS_SDK_ERRORS, aws_error, aws_error_code
from etcdops.adapters.state import (
    DEFAULT_INCIDENT_TTL_SECONDS,
    DEFAULT_STREAK_TTL_SECONDS,
    Approval,
    ConflictError,
    LastDecision,
    Lock,
    LockHeldError,
    LockLostError,
    Repair,
    RepairRecord,
    StreakState,
    check_cluster,
    check_execution,
    check_lease,
    check_owner,
    utc,
)
from etcdops.domain.decisions import Decision, Streak
from etcdops.domain.errors import UsageError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

__all__ = [
    "APPROVAL_TTL_GRACE_SECONDS",
    "LOCK_TTL_GRACE_SECONDS",
    "TABLE_ATTRIBUTE_DEFINITIONS",
    "TABLE_KEY_SCHEMA",
    "TTL_ATTRIBUTE",
    "DynamoStateStore",
    "table_definition",
]

TABLE_KEY_SCHEMA: Final[tuple[dict[str, str], ...]] = (
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
)
TABLE_ATTRIBUTE_DEFINITIONS: Final[tuple[dict[str, str], ...]] = (
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
)
TTL_ATTRIBUTE: Final = "ttl"
"""DynamoDB TimeToLiveSpecification.AttributeName (epoch seconds)."""

LOCK_TTL_GRACE_SECONDS: Final = 24 * 3600
"""An expired lock item stays this long after its lease (for post-mortems) before TTL removes it."""
APPROVAL_TTL_GRACE_SECONDS: Final = 7 * 24 * 3600
"""An approval record stays this long after it expires (who decided what, for post-mortems)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def table_definition(table_name: str) -> dict[str, Any]:
    """``create_table`` keyword arguments for the state table (template.yaml mirrors these)."""
    return {
        "TableName": table_name,
        "KeySchema": [dict(k) for k in TABLE_KEY_SCHEMA],
        "AttributeDefinitions": [dict(a) for a in TABLE_ATTRIBUTE_DEFINITIONS],
        "BillingMode": "PAY_PER_REQUEST",
    }


class _ConditionFailed(Exception):
    """A conditional write found the item not as required (DynamoDB's ConditionalCheckFailedException)."""


ConditionFailed = _ConditionFailed  # what a caller of DynamoStateStore.call catches


def _pk(cluster: str) -> str:
    return f"cluster#{check_cluster(cluster)}"


def _approval_pk(execution: str) -> str:
    return f"approval#{check_execution(execution)}"


def _epoch_us(when: datetime) -> int:
    return (utc(when) - _EPOCH) // timedelta(microseconds=1)


def _epoch_s_ceil(when: datetime) -> int:
    return math.ceil(_epoch_us(when) / 1_000_000)


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


def _lock_from_item(cluster: str, item: Mapping[str, Any]) -> Lock:
    return Lock(
        cluster=cluster,
        owner=item["owner"]["S"],
        acquired_at=datetime.fromisoformat(item["acquired_at"]["S"]),
        expires_at=datetime.fromisoformat(item["expires_at"]["S"]),
    )


def _approval_from_item(item: Mapping[str, Any]) -> Approval:
    def text(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    decided_at = text("decided_at")
    return Approval(
        execution=item["execution"]["S"],
        cluster=item["cluster"]["S"],
        runbook=item["runbook"]["S"],
        request_id=item["request_id"]["S"],
        task_token=item["task_token"]["S"],
        summary=item["summary"]["S"],
        reason=item["reason"]["S"],
        requested_at=datetime.fromisoformat(item["requested_at"]["S"]),
        expires_at=datetime.fromisoformat(item["expires_at"]["S"]),
        execution_arn=text("execution_arn"),
        decision=text("decision"),
        decided_by=text("decided_by"),
        decided_at=datetime.fromisoformat(decided_at) if decided_at else None,
        decision_reason=text("decision_reason"),
    )


class DynamoStateStore:
    """The state in a DynamoDB table with the key schema :data:`TABLE_KEY_SCHEMA`.

    ``dynamodb_client`` is a boto3 DynamoDB client made by the caller.
    """

    _ACQUIRE_ATTEMPTS = 3

    def __init__(
        self,
        table_name: str,
        dynamodb_client: DynamoDBClient,
        *,
        streak_ttl_seconds: int = DEFAULT_STREAK_TTL_SECONDS,
        incident_ttl_seconds: int = DEFAULT_INCIDENT_TTL_SECONDS,
    ) -> None:
        self.streak_ttl_seconds = streak_ttl_seconds
        self.incident_ttl_seconds = incident_ttl_seconds
        if not table_name:
            raise UsageError("table_name must not be empty")
        self.table_name = table_name
        self._client = dynamodb_client

    def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        """One DynamoDB call on the table: a failed condition raises :class:`_ConditionFailed`, any
        other failure its named error (etcdops.adapters.awserrors)."""
        try:
            response: dict[str, Any] = getattr(self._client, operation)(TableName=self.table_name, **request)
        except AWS_SDK_ERRORS as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                raise _ConditionFailed from exc
            raise aws_error(f"DynamoDB {operation} on table {self.table_name}", exc) from exc
        return response

    def _key(self, cluster: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": _pk(cluster)}, "sk": {"S": sk}}

    def _get(self, cluster: str, sk: str) -> dict[str, Any] | None:
        response = self._call("get_item", Key=self._key(cluster, sk), ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item

    # the delta chain's head (adapters.state_delta) is an item of this table, written through these
    call = _call
    item_key = _key
    get_item = _get

    # streaks

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
            TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(now) + self.streak_ttl_seconds)},
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
        except _ConditionFailed as exc:
            raise ConflictError(cluster, expected_version) from exc
        return StreakState(dict(streaks), quorum_loss, new_version, mixed_versions)

    # lock

    def _lock_item(self, cluster: str, owner: str, acquired_at: datetime, expires_at: datetime) -> dict[str, Any]:
        return {
            **self._key(cluster, "lock"),
            "owner": {"S": owner},
            "acquired_at": {"S": acquired_at.isoformat()},
            "expires_at": {"S": expires_at.isoformat()},
            "expires_at_us": {"N": str(_epoch_us(expires_at))},
            TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(expires_at) + LOCK_TTL_GRACE_SECONDS)},
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
                        ":now": {"N": str(_epoch_us(now))},
                        ":owner": {"S": owner},
                    },
                )
                return lock
            except _ConditionFailed:
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
                    ":exp": {"N": str(_epoch_us(expires_at))},
                    ":ttl": {"N": str(_epoch_s_ceil(expires_at) + LOCK_TTL_GRACE_SECONDS)},
                    ":owner": {"S": owner},
                },
                ReturnValues="ALL_NEW",
            )
        except _ConditionFailed as exc:
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
        except _ConditionFailed:
            return False
        return True

    def get_lock(self, cluster: str) -> Lock | None:
        item = self._get(cluster, "lock")
        return _lock_from_item(cluster, item) if item is not None else None

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
                    "expires_at_us": {"N": str(_epoch_us(expires))},
                    TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(expires))},
                },
                # DynamoDB deletes expired items lazily: an expired record counts as absent.
                ConditionExpression="attribute_not_exists(pk) OR #exp <= :now",
                ExpressionAttributeNames={"#exp": "expires_at_us"},
                ExpressionAttributeValues={":now": {"N": str(_epoch_us(now))}},
            )
        except _ConditionFailed:
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
        except _ConditionFailed:
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

    # repair attempts

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
                    TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(expires))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except _ConditionFailed:
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
        except _ConditionFailed:
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
                    TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(expires))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except _ConditionFailed:
            return False
        return True

    def _repair_items(self, cluster: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": _pk(cluster)}, ":prefix": {"S": prefix}},
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

    # approvals

    def _approval_key(self, execution: str) -> dict[str, Any]:
        return {"pk": {"S": _approval_pk(execution)}, "sk": {"S": "approval"}}

    def save_approval(self, approval: Approval) -> None:
        _pk(approval.cluster)
        item: dict[str, Any] = {
            **self._approval_key(approval.execution),
            "execution": {"S": approval.execution},
            "cluster": {"S": approval.cluster},
            "runbook": {"S": approval.runbook},
            "request_id": {"S": approval.request_id},
            "task_token": {"S": approval.task_token},
            "summary": {"S": approval.summary},
            "reason": {"S": approval.reason},
            "requested_at": {"S": utc(approval.requested_at).isoformat()},
            "expires_at": {"S": utc(approval.expires_at).isoformat()},
            TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(approval.expires_at) + APPROVAL_TTL_GRACE_SECONDS)},
        }
        if approval.execution_arn:
            item["execution_arn"] = {"S": approval.execution_arn}
        # a new request is never stored decided: the decision fields are written by consume only
        self._call("put_item", Item=item)

    def load_approval(self, execution: str) -> Approval | None:
        response = self._call("get_item", Key=self._approval_key(execution), ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return _approval_from_item(item) if item is not None else None

    def consume_approval(
        self, execution: str, request_id: str, decision: str, by: str, reason: str | None, now: datetime
    ) -> bool:
        values: dict[str, Any] = {
            ":rid": {"S": request_id},
            ":decision": {"S": decision},
            ":by": {"S": by},
            ":at": {"S": utc(now).isoformat()},
        }
        update = "SET #decision = :decision, decided_by = :by, decided_at = :at"
        if reason is not None:
            update += ", decision_reason = :reason"
            values[":reason"] = {"S": reason}
        try:
            self._call(
                "update_item",
                Key=self._approval_key(execution),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(pk) AND request_id = :rid AND attribute_not_exists(#decision)",
                ExpressionAttributeNames={"#decision": "decision"},
                ExpressionAttributeValues=values,
            )
        except _ConditionFailed:
            return False
        return True

    def release_approval(self, execution: str, request_id: str, decided_at: datetime) -> bool:
        try:
            self._call(
                "update_item",
                Key=self._approval_key(execution),
                UpdateExpression="REMOVE #decision, decided_by, decided_at, decision_reason",
                ConditionExpression="request_id = :rid AND decided_at = :at",
                ExpressionAttributeNames={"#decision": "decision"},
                ExpressionAttributeValues={":rid": {"S": request_id}, ":at": {"S": utc(decided_at).isoformat()}},
            )
        except _ConditionFailed:
            return False
        return True
