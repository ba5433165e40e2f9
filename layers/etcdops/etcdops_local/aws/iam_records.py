"""Who acts in the local stack's IAM, and the record of every authorization decided for a stack principal.

The records are what the coverage check (:mod:`etcdops_local.aws.iam_coverage`) reads.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etcdops.domain.errors import ConfigError
from etcdops_local.aws.iampolicy import (
    Call,
    Decision,
)

log = logging.getLogger("etcdops_local.aws.iam_records")

RECORDS_ENV = "ETCDOPS_IAM_RECORDS"  # a directory: each local AWS writes its records there when it stops


# ---- principals -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """A stack's function or state machine, by the role it acts with."""

    stack: str
    logical_id: str
    role_arn: str
    names: tuple[tuple[str, str], ...] = ()  # (physical value, placeholder) to write records stack-independently

    @property
    def role_name(self) -> str:
        return self.role_arn.rsplit("/", 1)[-1]

    def generalize(self, value: str) -> str:
        for physical, placeholder in self.names:
            value = value.replace(physical, placeholder)
        return value


def principal_for(stack: Any, logical_id: str, role_arn: str) -> Principal:
    """``stack`` is a :class:`etcdops_local.aws.stack.LocalStack`; its physical names become ``${LogicalId}``."""
    pairs = [(physical, f"${{{lid}}}") for lid, physical in stack.resources.items() if len(physical) >= 6]
    pairs.sort(key=lambda pair: -len(pair[0]))  # whole ARNs before the names inside them
    return Principal(stack.stack_name, logical_id, role_arn, tuple(pairs))



# ---- records -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One authorization a stack principal needed in a run, and AWS's answer."""

    principal: str  # logical id of the function or state machine
    action: str
    resource: str  # generalized: ${LogicalId} for the stack's physical names
    because: str | None
    allowed: bool
    granted_by: tuple[tuple[str, int, str], ...]  # (policy, statement, action pattern)
    modelled: bool = True
    policies: str = ""  # the principal's policies when it was decided (iampolicy.fingerprint)
    expected: bool = False  # a denial the test provoked on purpose (Authorizer.expect_denied)

    def to_json(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "because": self.because,
            "allowed": self.allowed,
            "granted_by": [list(g) for g in self.granted_by],
            "modelled": self.modelled,
            "policies": self.policies,
            "expected": self.expected,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(
            principal=data["principal"],
            action=data["action"],
            resource=data["resource"],
            because=data.get("because"),
            allowed=bool(data["allowed"]),
            granted_by=tuple((g[0], int(g[1]), g[2]) for g in data.get("granted_by") or []),
            modelled=bool(data.get("modelled", True)),
            policies=str(data.get("policies", "")),
            expected=bool(data.get("expected", False)),
        )

    def describe(self) -> str:
        why = f" (needed by {self.because})" if self.because else ""
        return f"{self.principal}: {self.action} on {self.resource}{why}"


class Recorder:
    """The distinct records of one local AWS (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: set[Record] = set()

    def add(
        self,
        principal: Principal,
        call: Call,
        decision: Decision,
        modelled: bool,
        policies: str = "",
        expected: bool = False,
    ) -> Record:
        record = Record(
            principal=principal.logical_id,
            action=call.action,
            resource=principal.generalize(call.resource),
            because=call.because,
            allowed=decision.allowed,
            granted_by=tuple((g.policy, g.statement, g.action) for g in decision.allowed_by),
            modelled=modelled,
            policies=policies,
            expected=expected and not decision.allowed,
        )
        with self._lock:
            self._records.add(record)
        return record

    @property
    def records(self) -> list[Record]:
        with self._lock:
            return sorted(self._records, key=lambda r: (r.principal, r.action, r.resource))

    def write(self, directory: Path) -> Path | None:
        records = self.records
        if not records:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"iam-{os.getpid()}-{id(self):x}.jsonl"
        with path.open("a") as out:
            for record in records:
                out.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
        return path


def read_records(directory: Path) -> list[Record]:
    records: set[Record] = set()
    for path in sorted(directory.glob("iam-*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.add(Record.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise ConfigError(f"{path}:{number}: not an IAM record: {exc}") from None
    return sorted(records, key=lambda r: (r.principal, r.action, r.resource))


