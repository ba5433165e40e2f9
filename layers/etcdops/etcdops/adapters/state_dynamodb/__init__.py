"""The state in one DynamoDB table (a :class:`etcdops.adapters.state.StateStore`; the client is passed in).

The layout below is described here, in one place; each concern's items and conditional writes are a
module of this package (table: the key schema, the one call and its errors; streaks; lock;
observations: incidents, the last decision, the raft term, endpoints, member metrics; repairs;
approvals), and :class:`DynamoStateStore` is all of them on one table.

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

from etcdops.adapters.state_dynamodb.approvals import ApprovalItems
from etcdops.adapters.state_dynamodb.lock import LockItems
from etcdops.adapters.state_dynamodb.observations import ObservationItems
from etcdops.adapters.state_dynamodb.repairs import RepairItems
from etcdops.adapters.state_dynamodb.streaks import StreakItems
from etcdops.adapters.state_dynamodb.table import (
    APPROVAL_TTL_GRACE_SECONDS,
    LOCK_TTL_GRACE_SECONDS,
    TABLE_ATTRIBUTE_DEFINITIONS,
    TABLE_KEY_SCHEMA,
    TTL_ATTRIBUTE,
    ConditionFailed,
    table_definition,
)

__all__ = [
    "APPROVAL_TTL_GRACE_SECONDS",
    "LOCK_TTL_GRACE_SECONDS",
    "TABLE_ATTRIBUTE_DEFINITIONS",
    "TABLE_KEY_SCHEMA",
    "TTL_ATTRIBUTE",
    "ConditionFailed",
    "DynamoStateStore",
    "table_definition",
]


class DynamoStateStore(StreakItems, LockItems, ObservationItems, RepairItems, ApprovalItems):
    """The state in a DynamoDB table with the key schema :data:`TABLE_KEY_SCHEMA` (a
    :class:`etcdops.adapters.state.StateStore`); ``dynamodb_client`` is a boto3 DynamoDB client made by
    the caller. ``call``, ``item_key`` and ``get_item`` write other items of the table (the delta
    chain's head, adapters.state_delta); a failed condition raises :class:`ConditionFailed`."""
