"""What the autopilot tells people about repairs and their attempts (SNS subjects and bodies)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from etcdops.domain.health import ClusterHealth
from etcdops.domain.repair import Attempt


def attempt_started(
    cluster: str,
    member: str,
    number: int,
    max_attempts: int,
    *,
    approval: bool,
    why: str,
    execution: str,
    document: Mapping[str, Any],
) -> tuple[str, str]:
    """Subject and body when an attempt starts."""
    waits = " (waiting for approval)" if approval else ""
    again = f" (attempt {number} of {max_attempts})" if number > 1 else ""
    shown = json.dumps(dict(document), indent=2, sort_keys=True)
    return (
        f"etcdops: replacing member {member} of {cluster}{waits}{again}",
        f"{why}\n\nReplaceMember execution: {execution}\nInput:\n{shown}\n",
    )


def escalation(
    cluster: str,
    member: str,
    member_ref: str,
    incident: str,
    attempts: Sequence[Attempt],
    health: ClusterHealth | None,
    why: str,
) -> tuple[str, str]:
    """Subject and body of the one escalation after the last allowed attempt: what failed each
    time, how the cluster stands, and what a person should do. ``member`` names the member for
    people, ``member_ref`` for ``etcdops runbook start replace --member`` (its name or hex id)."""
    tried = "\n".join(f"  {a.summary}" for a in attempts)
    same = len({a.error for a in attempts}) == 1 and len(attempts) > 1 and attempts[0].error is not None
    if health is not None:
        standing = (
            f"{len(health.healthy_voters)} of {len(health.voters)} voting members are healthy "
            f"(quorum {health.quorum}, margin {health.quorum_margin}): "
            + ("one more failure loses quorum." if health.quorum_margin <= 0 else "it can lose another member.")
        )
    else:
        standing = "unknown (this round could not see the cluster)."
    last = attempts[-1].execution if attempts else incident
    return (
        f"etcdops: REPAIR OF MEMBER {member} OF {cluster} GAVE UP after {len(attempts)} attempts - a human must act",
        f"The autopilot tried to replace member {member} of cluster {cluster} {len(attempts)} times and every "
        f"attempt ended without repairing it. It starts no further attempt for this incident ({incident}).\n\n"
        f"Why the repair was needed: {why}\n\n"
        f"What happened each time:\n{tried}\n\n"
        f"The cluster now: {standing}\n\n"
        "What to do:\n"
        f"  1. Read what each attempt did, step by step: etcdops runbook show {last} (likewise for the others).\n"
        + (
            f"  2. Every attempt failed the same way ({attempts[0].error}): that points at configuration, "
            "permissions or a host image rather than the cluster. Fix the cause named above.\n"
            if same
            else "  2. Fix the causes named above (etcdops status shows the members as they are now).\n"
        )
        + f"  3. Then replace the member by hand: etcdops runbook start replace --member {member_ref}\n"
        "A member that recovers by itself ends this incident; a new failure starts a new one.\n",
    )
