"""The IAM-coverage check: the e2e runs' records against the template's grants, in both directions.

``python -m etcdops_local.aws.iam_coverage check --records DIR [--template T] [--reasons F]``; bin/test
runs it through tools/iam_coverage.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from etcdops.domain.errors import ConfigError, EtcdopsError
from etcdops_local.aws.iam_records import RECORDS_ENV, Record, read_records
from etcdops_local.aws.iampolicy import (
    Grant,
    Policy,
    fingerprint,
    granted_actions,
)

log = logging.getLogger("etcdops_local.aws.iam_coverage")

# ---- the coverage check --------------------------------------------------------------------------------


@dataclass
class Coverage:
    """Both directions of the IAM-coverage check, with what each finding is."""

    denied: list[Record]  # needed by a run and not granted (the template misses a permission)
    unmodelled: list[Record]  # requests this module does not model: their resources were not checked
    unused: list[tuple[str, Grant]]  # granted and exercised by no test, and not listed with a reason
    stale_reasons: list[str]  # listed as unused with a reason, but no longer granted or now used
    used: int = 0
    granted: int = 0
    set_aside: int = 0  # records decided under other policies (a changed copy of the template)

    @property
    def ok(self) -> bool:
        return not (self.denied or self.unmodelled or self.unused or self.stale_reasons)

    def report(self) -> str:
        lines = [f"IAM coverage: {self.used} of {self.granted} granted actions used by the tests"]
        if self.set_aside:
            lines.append(f"  ({self.set_aside} records of changed copies of the template set aside)")
        for record in self.denied:
            lines.append(f"  MISSING  {record.describe()}")
        for record in self.unmodelled:
            lines.append(
                f"  UNMODELLED  {record.principal}: {record.action} (teach etcdops_local.aws.iam its resource)"
            )
        for principal, grant in self.unused:
            lines.append(
                f"  UNUSED  {principal}: {grant} (used by no test; use it in one, remove it, or list a reason)"
            )
        for reason in self.stale_reasons:
            lines.append(f"  STALE REASON  {reason}")
        if self.ok:
            lines.append("  ok: nothing missing, nothing unused without a reason")
        return "\n".join(lines)


def load_reasons(path: Path) -> dict[str, dict[str, str]]:
    """``principal -> action pattern -> reason`` from a YAML file (granted on purpose, unused by tests).

    The key is the action as the statement writes it (every statement of the principal granting it), or
    ``Sid/action`` for one statement, when another statement's grant of the action is used."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and all(isinstance(r, str) and r.strip() for r in v.values()) for v in data.values()
    ):
        raise ConfigError(f"{path}: expected principal -> action -> reason (a non-empty sentence)")
    return {str(k): {str(a): str(r) for a, r in v.items()} for k, v in data.items()}


def coverage(
    grants: Mapping[str, Sequence[Policy]],
    records: Iterable[Record],
    reasons: Mapping[str, Mapping[str, str]] | None = None,
) -> Coverage:
    """Compare the records of the runs with the principals' policies (``grants``: logical id -> policies)."""
    records = list(records)
    reasons = reasons or {}
    used = {(r.principal, g[0], g[1], g[2]) for r in records if r.allowed for g in r.granted_by}
    used_keys: set[tuple[str, str]] = set()  # (principal, reason key) of every used grant
    granted: set[tuple[str, str]] = set()
    unused: list[tuple[str, Grant]] = []
    total = exercised = 0
    for principal, policies in sorted(grants.items()):
        listed = reasons.get(principal, {})
        for grant, _ in granted_actions(policies):
            total += 1
            keys = _reason_keys(grant)
            granted.update((principal, key) for key in keys)
            if (principal, grant.policy, grant.statement, grant.action) in used:
                exercised += 1
                used_keys.update((principal, key) for key in keys)
            elif not any(key in listed for key in keys):
                unused.append((principal, grant))
    stale = [
        f"{principal}: {key}: " + ("now used by a test" if (principal, key) in used_keys else "not granted")
        for principal, listed in sorted(reasons.items())
        for key in sorted(listed)
        if (principal, key) in used_keys or (principal, key) not in granted
    ]
    return Coverage(
        denied=[r for r in records if not r.allowed and not r.expected],
        unmodelled=sorted({r for r in records if not r.modelled}, key=lambda r: (r.principal, r.action)),
        unused=unused,
        stale_reasons=stale,
        used=exercised,
        granted=total,
    )


def _reason_keys(grant: Grant) -> tuple[str, ...]:
    """How a reason may name a grant: its action (every statement granting it) or ``Sid/action``."""
    return (grant.action, f"{grant.sid}/{grant.action}") if grant.sid else (grant.action,)


def of_these_policies(
    records: Iterable[Record], grants: Mapping[str, Sequence[Policy]]
) -> tuple[list[Record], list[Record]]:
    """The records decided under exactly ``grants``' policies, and the others: a principal the template
    does not have (a test-only function), or one whose statements a test's copy of the template changed."""
    digests = {principal: fingerprint(policies) for principal, policies in grants.items()}
    kept: list[Record] = []
    aside: list[Record] = []
    for record in records:
        (kept if digests.get(record.principal) == record.policies else aside).append(record)
    return kept, aside


def check(
    records_dir: Path, template: Path, reasons: Path | None = None, cluster_name: str = "local"
) -> Coverage | None:
    """The coverage check over the records in ``records_dir`` (None: there are none)."""
    records = read_records(records_dir)
    if not records:
        return None
    listed = load_reasons(reasons) if reasons else {}
    grants = template_grants(template, {"ClusterName": cluster_name})
    kept, aside = of_these_policies(records, grants)
    result = coverage(grants, kept, listed)
    result.set_aside = len(aside)
    return result


def template_grants(template_path: Path, parameters: Mapping[str, str] | None = None) -> dict[str, list[Policy]]:
    """Each principal's policies as the local stack installs them from the transformed template."""
    from etcdops_local.aws.stack import LocalAws

    with LocalAws(enforce_iam=False) as aws:
        stack = aws.build_stack(template_path, parameters)
        return {lid: aws.authorizer.role_policies(arn.rsplit("/", 1)[-1]) for lid, arn in stack.roles.items()}


def main(argv: list[str] | None = None) -> int:
    """The IAM-coverage check from the command line (see the module's docstring)."""
    import argparse
    import sys

    prog = "python -m etcdops_local.aws.iam_coverage"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    command = sub.add_parser("check", help="compare the recorded calls of the e2e runs with the template's policies")
    command.add_argument("--records", type=Path, required=True, help=f"the directory ${RECORDS_ENV} pointed at")
    command.add_argument("--template", type=Path, default=Path("template.yaml"))
    command.add_argument("--reasons", type=Path, help="YAML: principal -> action -> why it is granted but unused")
    command.add_argument("--cluster-name", default="local", help="the template's ClusterName (the e2e stacks' cluster)")
    args = parser.parse_args(argv)
    try:
        result = check(args.records, args.template, args.reasons, args.cluster_name)
        if result is None:
            print(f"IAM coverage: no records in {args.records} (did the e2e tests run with ${RECORDS_ENV}?)")
            return 1
    except EtcdopsError as exc:
        print(f"IAM coverage: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(main())
