"""What a preflight found missing: one typed finding per problem (invariant 13).

Before its first destructive step a runbook asks the compute provider and the stores whether every
thing it will need later is there and allowed. Each problem is a :class:`Finding` that names the
thing, says what is wrong with it and how to fix it. Trouble that may pass by itself (throttling, a
network error) is not a finding: the check raises its retryable error and the state machine asks
again. A runbook with findings stops before it changes anything and reports all of them at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Check = Literal[
    "ca",  # the cluster CA (certificate and key) new members' certificates are issued from
    "launch-template",  # the launch template new hosts start from
    "launch",  # launching itself: permissions (incl. iam:PassRole), subnets, image, parameters
    "subnet",  # the configured subnets
    "target-group",  # the load balancer target group clients are repointed in
    "host-command",  # a host command (SSM document, local tool or hook) a step will run
    "host",  # a host the runbook will command or retire
    "control-plane",  # the Kubernetes control-plane hosts a restore stops and starts
    "backup",  # the backup the runbook relies on
    "state",  # the state table (operation lock) and the stored configuration
]


@dataclass(frozen=True)
class Finding:
    """One thing a runbook will need and cannot have: what, what is wrong, how to fix it."""

    check: Check
    subject: str  # the thing checked, e.g. "secret etcdops/prod/ca"
    problem: str  # what is wrong, a sentence
    fix: str  # what to do about it, a sentence

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem} Fix: {self.fix}"

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "subject": self.subject, "problem": self.problem, "fix": self.fix}


def describe_findings(findings: Sequence[Finding]) -> str:
    """Every finding on its own numbered line (the failure message lists all, not only the first)."""
    return "\n".join(f"{number}. [{f.check}] {f}" for number, f in enumerate(findings, 1))
