"""Role trust policies (a role's ``AssumeRolePolicyDocument``): who may assume the role, decided as AWS does.

Every set of role credentials AWS hands out passes the role's trust policy: Lambda assumes a function's
execution role as ``lambda.amazonaws.com``, Step Functions a state machine's as ``states.amazonaws.com``,
an EventBridge rule its target role as ``events.amazonaws.com``, and an ``sts:AssumeRole`` request is
decided by the trust policy of the role it names, with the request's condition keys (``sts:ExternalId``,
``sts:RoleSessionName``, ``aws:PrincipalArn``, ``aws:PrincipalAccount``).

The rules: a statement matches when its ``Action`` (or ``NotAction``) matches ``sts:AssumeRole``, its
``Principal`` names the caller (or its ``NotPrincipal`` does not) and every ``Condition`` holds; an
explicit ``Deny`` that matches wins, then an ``Allow``, else the call is implicitly denied. A principal
is named by ``"*"``; by its account (``"123456789012"`` or ``arn:aws:iam::123456789012:root``), which
delegates the decision to the caller's identity policies (they must allow ``sts:AssumeRole`` too); or
directly (a role's ARN for any session of it, the session's own ``assumed-role`` ARN, a user's ARN, a
service's name). Conditions are the identity evaluator's (:func:`etcdops_local.aws.iampolicy.condition_holds`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from etcdops_local.aws.iampolicy import PolicyError, Rule, _strings, rule_fields

ASSUME_ROLE = "sts:AssumeRole"
LAMBDA, STATES, EVENTS = "lambda.amazonaws.com", "states.amazonaws.com", "events.amazonaws.com"
# what each service says when a role's trust policy does not let it assume the role
_SERVICE_REFUSALS = {
    LAMBDA: "InvalidParameterValueException: The role defined for the function cannot be assumed by Lambda.",
    STATES: f"AccessDeniedException: Neither the global service principal {STATES}, "
    "nor the regional one is authorized to assume the provided role.",
    EVENTS: f"{EVENTS} cannot assume the target's role (the rule counts a FailedInvocation).",
}


@dataclass(frozen=True)
class Assumer:
    """Who asks for a role's credentials: a service (its principal name) or an AWS principal (the ARNs a
    trust policy may name it by, and its account)."""

    service: str | None = None
    arns: tuple[str, ...] = ()
    account: str | None = None

    @classmethod
    def of_service(cls, name: str) -> Assumer:
        return cls(service=name)

    @classmethod
    def of_arns(cls, account: str, *arns: str) -> Assumer:
        return cls(arns=tuple(a for a in arns if a), account=account)

    def __str__(self) -> str:
        return self.service or (self.arns[-1] if self.arns else f"account {self.account}")


@dataclass(frozen=True)
class TrustDecision:
    """The trust policy's answer; ``by_account`` when an Allow named the caller's account (or ``*``) only,
    so the caller's identity policies must allow ``sts:AssumeRole`` as well."""

    allowed: bool
    reason: str
    by_account: bool = False


@dataclass(frozen=True)
class _Statement(Rule):
    principals: tuple[tuple[str, str], ...] = ()  # (kind: "*", AWS, Service, Federated..., value)
    not_principals: bool = False
    label: str = ""


def read_trust_policy(
    name: str, document: Mapping[str, Any] | str, *, evaluable: bool = True
) -> tuple[_Statement, ...]:
    """The statements of a trust policy; a malformed one raises :class:`PolicyError` naming the place, as
    does (with ``evaluable``) a condition operator this evaluator does not know."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise PolicyError(f"{name}: the trust policy is not JSON: {exc}") from exc
    raw = document.get("Statement") if isinstance(document, Mapping) else None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PolicyError(f"{name}: a trust policy needs a Statement (a non-empty list or an object)")
    return tuple(_statement(item, f"{name}[{index}]", evaluable) for index, item in enumerate(raw))


def _statement(item: Any, where: str, evaluable: bool) -> _Statement:
    rule = rule_fields(item, where, evaluable=evaluable)
    if ("Principal" in item) == ("NotPrincipal" in item):
        raise PolicyError(f"{where}: exactly one of Principal and NotPrincipal")
    if "Resource" in item or "NotResource" in item:
        raise PolicyError(f"{where}: a trust policy has no Resource (the role is the resource)")
    sid = item.get("Sid")
    return _Statement(
        **rule,
        principals=_principals(item.get("Principal", item.get("NotPrincipal")), where),
        not_principals="NotPrincipal" in item,
        label=where + (f" ({sid})" if sid else ""),
    )


def _principals(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value == "*":
        return (("*", "*"),)
    if not isinstance(value, dict) or not value:
        raise PolicyError(f'{where}: Principal must be "*" or map AWS, Service or Federated to names')
    return tuple((kind, name) for kind, names in value.items() for name in _strings(names, f"{where} Principal"))


def _named(principals: Sequence[tuple[str, str]], assumer: Assumer) -> str | None:
    """How ``principals`` name ``assumer``: "direct", "account", or None when they do not."""
    how = None
    for kind, name in principals:
        if kind == "*":
            return "account" if assumer.service is None else "direct"
        if kind == "Service" and assumer.service is not None and name.lower() == assumer.service.lower():
            return "direct"
        if kind != "AWS" or assumer.service is not None:
            continue
        if name in assumer.arns:
            return "direct"
        if name == "*" or name in (assumer.account, f"arn:aws:iam::{assumer.account}:root"):
            how = "account"
    return how


def decide_trust(
    name: str, document: Mapping[str, Any] | str, assumer: Assumer, context: Mapping[str, Sequence[str]] | None = None
) -> TrustDecision:
    """May ``assumer`` assume the role ``name`` whose trust policy is ``document``, with condition keys
    ``context`` (lower-case keys)? A malformed document is refused, as AWS refuses to store one."""
    try:
        statements = read_trust_policy(name, document)
    except PolicyError as exc:
        return TrustDecision(False, f"its trust policy cannot be read: {exc}")
    values = {k.lower(): tuple(v) for k, v in (context or {}).items()}
    allowed: list[tuple[_Statement, str]] = []
    for statement in statements:
        if statement.action_match(ASSUME_ROLE) is None:
            continue
        how = _named(statement.principals, assumer)
        if statement.not_principals:
            how = None if how else "account"
        if how is None or not statement.conditions_hold(values):
            continue
        if statement.effect == "Deny":
            return TrustDecision(False, f"its trust policy denies {assumer} explicitly ({statement.label})")
        allowed.append((statement, how))
    if not allowed:
        return TrustDecision(False, f"its trust policy does not allow {assumer} to assume it")
    direct = [s for s, how in allowed if how == "direct"]
    by = direct or [s for s, _ in allowed]
    return TrustDecision(True, "trusted by " + ", ".join(s.label for s in by), by_account=not direct)


def assume_role_context(assumer: Assumer, params: Mapping[str, Any]) -> dict[str, list[str]]:
    """The condition keys of an ``sts:AssumeRole`` request (``params``: RoleSessionName, ExternalId) by
    ``assumer``: aws:PrincipalArn (a session's role, not the session), aws:PrincipalAccount,
    sts:RoleSessionName, and sts:ExternalId when one was sent."""
    context = {
        "aws:PrincipalArn": [assumer.arns[0] if assumer.arns else ""],
        "aws:PrincipalAccount": [str(assumer.account)],
        "sts:RoleSessionName": [str(params.get("RoleSessionName", ""))],
    }
    if params.get("ExternalId") is not None:
        context["sts:ExternalId"] = [str(params["ExternalId"])]
    return context


def role_service(state_machines: Container[str], logical_id: str) -> str:
    """The service that assumes the role of a stack's function or state machine ``logical_id``."""
    return STATES if logical_id in state_machines else LAMBDA


def refusal(service: str) -> str:
    """What ``service`` says when a role's trust policy does not let it assume the role."""
    return _SERVICE_REFUSALS.get(service, f"AccessDenied: {service} may not assume the role.")


def install_create_role_check() -> Callable[[], None]:
    """CreateRole refuses a trust policy AWS refuses (``MalformedPolicyDocument``: no statement, no
    principal, a Resource...), which moto would store as given. Returns the undo."""
    from moto.iam.exceptions import MalformedPolicyDocument
    from moto.iam.models import IAMBackend

    original = IAMBackend.create_role

    def create_role(self: Any, role_name: str, assume_role_policy_document: str, *args: Any, **kwargs: Any) -> Any:
        try:
            read_trust_policy(role_name, assume_role_policy_document, evaluable=False)  # AWS knows more operators
        except PolicyError as exc:
            raise MalformedPolicyDocument(str(exc)) from exc
        return original(self, role_name, assume_role_policy_document, *args, **kwargs)

    IAMBackend.create_role = create_role  # type: ignore[method-assign]
    return lambda: setattr(IAMBackend, "create_role", original)
