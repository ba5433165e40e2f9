"""IAM identity-policy evaluation, as AWS does it, for one authorization at a time.

A :class:`Call` is one authorization AWS makes for a request: an action (``s3:GetObject``) on one
resource ARN, with the request's condition keys. A request may need several (an S3 read of an
SSE-KMS object is ``s3:GetObject`` on the object and ``kms:Decrypt`` on its key); the local stack
works them out, this module only decides each one.

The rules, from the IAM policy evaluation logic: an explicit ``Deny`` that matches wins; otherwise an
``Allow`` that matches allows; otherwise the call is implicitly denied. A statement matches when its
``Action`` (or ``NotAction``), ``Resource`` (or ``NotResource``) and every ``Condition`` match.
Actions compare case-insensitively, resources case-sensitively; ``*`` and ``?`` are wildcards in
both. A condition operator this module does not know is an error (never a guess), so a template
using one fails loudly in the local stack instead of passing or failing for the wrong reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from etcdops.domain.errors import EtcdopsError


class PolicyError(EtcdopsError):
    """A policy document this evaluator cannot read (malformed, or an unknown condition operator)."""


Context = Mapping[str, Sequence[str]]  # condition key (lower case) -> the request's values for it


@dataclass(frozen=True)
class Call:
    """One authorization: ``action`` on ``resource`` with condition keys ``context``.

    ``because`` names the API request that implies it when the call is not the request's own
    action (AWS's implicit checks: ``kms:Decrypt`` for an SSE-KMS read, ``iam:PassRole`` for a launch).
    """

    action: str
    resource: str
    context: tuple[tuple[str, tuple[str, ...]], ...] = ()
    because: str | None = None

    @classmethod
    def of(cls, action: str, resource: str, context: Context | None = None, because: str | None = None) -> Call:
        items = tuple(sorted((k.lower(), tuple(v)) for k, v in (context or {}).items()))
        return cls(action, resource, items, because)

    @property
    def condition_values(self) -> dict[str, tuple[str, ...]]:
        return dict(self.context)


@dataclass(frozen=True)
class Grant:
    """Where an allow or deny came from: a policy, a statement in it, and the action pattern that matched."""

    policy: str
    statement: int
    action: str  # the statement's Action entry that matched ("NotAction" when matched by exclusion)
    sid: str | None = None

    def __str__(self) -> str:
        where = f"{self.policy}[{self.statement}]" + (f" ({self.sid})" if self.sid else "")
        return f"{where} {self.action}"


@dataclass(frozen=True)
class Decision:
    """The answer for one :class:`Call`, with the statements that decided it."""

    allowed: bool
    allowed_by: tuple[Grant, ...] = ()
    denied_by: Grant | None = None

    @property
    def reason(self) -> str:
        if self.denied_by is not None:
            return f"explicitly denied by {self.denied_by}"
        if self.allowed:
            return "allowed by " + ", ".join(str(g) for g in self.allowed_by)
        return "no statement allows it (implicit deny)"


@dataclass(frozen=True)
class Rule:
    """What every policy statement says, an identity policy's or a trust policy's: its effect, the actions
    it is about and the conditions under which it applies."""

    effect: str
    actions: tuple[str, ...]
    not_actions: bool
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...]  # (operator, key, values)

    def action_match(self, action: str) -> str | None:
        """The Action entry matching ``action`` (or "NotAction"), else None."""
        if self.not_actions:
            return None if any(_matches(p, action, fold=True) for p in self.actions) else "NotAction"
        return next((p for p in self.actions if _matches(p, action, fold=True)), None)

    def conditions_hold(self, context: Mapping[str, Sequence[str]]) -> bool:
        return all(condition_holds(op, key, values, context) for op, key, values in self.conditions)


def rule_fields(item: Any, where: str, *, evaluable: bool = True) -> dict[str, Any]:
    """The :class:`Rule` fields of one statement (a malformed one raises :class:`PolicyError` naming
    ``where``); with ``evaluable`` a condition operator this evaluator does not know is refused too."""
    if not isinstance(item, dict):
        raise PolicyError(f"{where}: a statement must be an object")
    effect = item.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"{where}: Effect must be Allow or Deny, got {effect!r}")
    if ("Action" in item) == ("NotAction" in item):
        raise PolicyError(f"{where}: exactly one of Action and NotAction")
    conditions = []
    for operator, block in (item.get("Condition") or {}).items():
        if not isinstance(block, dict):
            raise PolicyError(f"{where}: Condition {operator} must map keys to values")
        if evaluable:  # unknown operators are refused when the policy is read
            _operator(operator, where)
        for key, values in block.items():
            conditions.append((operator, key.lower(), _strings(values, f"{where} {operator} {key}")))
    return {
        "effect": effect,
        "actions": _strings(item.get("Action", item.get("NotAction")), f"{where} Action"),
        "not_actions": "NotAction" in item,
        "conditions": tuple(conditions),
    }


@dataclass(frozen=True)
class Statement(Rule):
    """One statement of an identity policy, read once."""

    resources: tuple[str, ...] = ()
    not_resources: bool = False
    sid: str | None = None
    index: int = 0

    def resource_matches(self, resource: str) -> bool:
        hit = any(_matches(p, resource, fold=False) for p in self.resources)
        return not hit if self.not_resources else hit


@dataclass(frozen=True)
class Policy:
    name: str
    statements: tuple[Statement, ...] = field(default_factory=tuple)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str | bool | int) for v in value):
        return tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in value)
    if isinstance(value, bool):
        return (str(value).lower(),)
    if isinstance(value, int | float):
        return (str(value),)
    raise PolicyError(f"{where}: expected a string or a list of strings, got {value!r}")


def read_policy(name: str, document: Mapping[str, Any]) -> Policy:
    """A policy document (dict) as :class:`Policy`; a malformed one raises :class:`PolicyError` naming the place."""
    raw = document.get("Statement")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise PolicyError(f"{name}: Statement must be a list or an object")
    statements = []
    for index, item in enumerate(raw):
        where = f"{name}[{index}]"
        rule = rule_fields(item, where)
        if ("Resource" in item) == ("NotResource" in item):
            raise PolicyError(f"{where}: exactly one of Resource and NotResource")
        statements.append(
            Statement(
                **rule,
                resources=_strings(item.get("Resource", item.get("NotResource")), f"{where} Resource"),
                not_resources="NotResource" in item,
                sid=item.get("Sid"),
                index=index,
            )
        )
    return Policy(name, tuple(statements))


def evaluate(policies: Sequence[Policy], call: Call) -> Decision:
    """Decide ``call`` under identity ``policies`` (explicit deny > allow > implicit deny)."""
    context = call.condition_values
    allowed: list[Grant] = []
    for policy in policies:
        for statement in policy.statements:
            pattern = statement.action_match(call.action)
            if pattern is None or not statement.resource_matches(call.resource):
                continue
            if not statement.conditions_hold(context):
                continue
            grant = Grant(policy.name, statement.index, pattern, statement.sid)
            if statement.effect == "Deny":
                return Decision(False, (), grant)
            allowed.append(grant)
    return Decision(bool(allowed), tuple(allowed))


def fingerprint(policies: Sequence[Policy]) -> str:
    """A short digest of what ``policies`` grant and deny, statement by statement (policy, index, Sid,
    effect, actions): the same for every stack built from one template, different once a statement or an
    action is taken away or added. Resources and condition values are left out (they name the stack)."""
    parts = sorted(
        f"{p.name}|{s.index}|{s.sid or ''}|{s.effect}|{'!' if s.not_actions else ''}{','.join(sorted(s.actions))}"
        for p in policies
        for s in p.statements
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def granted_actions(policies: Sequence[Policy]) -> Iterator[tuple[Grant, Statement]]:
    """Every (statement, Action entry) an Allow grants: what a coverage check expects to see used."""
    for policy in policies:
        for statement in policy.statements:
            if statement.effect != "Allow":
                continue
            for action in ("NotAction",) if statement.not_actions else statement.actions:
                yield Grant(policy.name, statement.index, action, statement.sid), statement


# ---- matching -----------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _pattern(pattern: str, fold: bool) -> re.Pattern[str]:
    # fnmatch's translate knows * and ?; IAM has no [...] classes, so escape brackets first
    escaped = pattern.replace("[", "[[]")
    return re.compile(fnmatch.translate(escaped), re.IGNORECASE if fold else 0)


def _matches(pattern: str, value: str, *, fold: bool) -> bool:
    return _pattern(pattern, fold).match(value) is not None


# ---- conditions ---------------------------------------------------------------------------------------


def _string_like(pattern: str, value: str) -> bool:
    return _matches(pattern, value, fold=False)


_BASE_OPERATORS: dict[str, Any] = {
    "StringEquals": lambda want, got: got == want,
    "StringNotEquals": lambda want, got: got == want,
    "StringEqualsIgnoreCase": lambda want, got: got.lower() == want.lower(),
    "StringNotEqualsIgnoreCase": lambda want, got: got.lower() == want.lower(),
    "StringLike": lambda want, got: _string_like(want, got),
    "StringNotLike": lambda want, got: _string_like(want, got),
    "ArnEquals": lambda want, got: got == want,
    "ArnNotEquals": lambda want, got: got == want,
    "ArnLike": lambda want, got: _string_like(want, got),
    "ArnNotLike": lambda want, got: _string_like(want, got),
    "Bool": lambda want, got: got.lower() == want.lower(),
    "NumericEquals": lambda want, got: float(got) == float(want),
    "NumericNotEquals": lambda want, got: float(got) == float(want),
    "NumericLessThan": lambda want, got: float(got) < float(want),
    "NumericLessThanEquals": lambda want, got: float(got) <= float(want),
    "NumericGreaterThan": lambda want, got: float(got) > float(want),
    "NumericGreaterThanEquals": lambda want, got: float(got) >= float(want),
}
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike",
            "NumericNotEquals"}  # fmt: skip


def _operator(operator: str, where: str) -> tuple[str | None, str, bool]:
    """(set qualifier, base operator, IfExists) of a condition operator; unknown ones raise."""
    qualifier, _, base = operator.rpartition(":")
    if qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise PolicyError(f"{where}: unknown condition set operator {qualifier!r}")
    if_exists = base.endswith("IfExists") and base != "IfExists"
    if if_exists:
        base = base[: -len("IfExists")]
    if base != "Null" and base not in _BASE_OPERATORS:
        raise PolicyError(f"{where}: condition operator {operator!r} is not supported by the local evaluator")
    return qualifier or None, base, if_exists


def condition_holds(operator: str, key: str, wanted: Sequence[str], context: Mapping[str, Sequence[str]]) -> bool:
    """One condition (operator, key, policy values) against the request's context."""
    qualifier, base, if_exists = _operator(operator, "condition")
    present = key in context
    got = list(context.get(key, ()))
    if base == "Null":  # "true": the key must be absent; "false": present
        return all((not present) == (w.lower() == "true") for w in wanted)
    negated = base in _NEGATED
    if not present:
        # An absent key matches nothing, so a negated operator holds; IfExists holds either way.
        return if_exists or negated or qualifier == "ForAllValues"
    test = _BASE_OPERATORS[base]

    def one(value: str) -> bool:
        hit = any(_safe(test, w, value) for w in wanted)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(v) for v in got)
    if negated and qualifier is None:
        return all(one(v) for v in got)  # no value may match
    return any(one(v) for v in got)


def _safe(test: Any, wanted: str, value: str) -> bool:
    try:
        return bool(test(wanted, value))
    except ValueError:  # a numeric comparison on a non-number does not match
        return False
