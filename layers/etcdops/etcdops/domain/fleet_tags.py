"""What a registered cluster's AWS resources must carry for the stack to reach them (README: IAM for a
fleet): the stack's ``Fleet*`` grants reach a cluster other than its default one only through the tag
``etcdops:fleet=<stack name>`` on each resource (secrets, hosts and their data volumes, volume-backup
snapshots, the clients' target group). A resource without it is refused to every function, so a cluster
registered with one would fail every round. ``etcdops cluster add`` reads the tags first and refuses,
naming each resource and the command that tags it (``etcdops cluster check`` asks again later).

Pure rules: which secret names a ``Fleet*`` grant reaches at all, which resources lack the tag, the
commands that tag them, and the one line that says so. The reads are
:mod:`etcdops.adapters.fleet_tags`'s.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

FLEET_TAG = "etcdops:fleet"
"""The deployment (stack) whose fleet a resource is of: the IAM grants for registered clusters require it."""

ResourceKind = Literal["secret", "instance", "volume", "snapshot", "target-group"]

CLIENT_TLS_SECRETS = "secret:etcdops/*/client/*"
"""The secrets every function that talks to etcd may read for a registered cluster (template.yaml's
FleetClientTlsSecrets): where its ``tls`` entries must be."""

FLEET_SECRETS = (
    CLIENT_TLS_SECRETS,
    "secret:etcdops/*/ca-??????",  # the CA new member certificates are issued from (RunbookStep)
    "secret:etcdops/*/ca-next-??????",  # a CA rotation's
    "secret:etcdops/*/ca-old-??????",
    "secret:etcdops/*/members/*",  # member certificates (RunbookStep issues and renews them)
    "secret:etcdops/*/clients/*",  # the clients `pki issue-client --stack-name` issued (a CA rotation renews them)
)
"""The secret ARNs (their resource part, ``secret:<name>-<6 characters>``) a ``Fleet*`` statement of
template.yaml reaches, each only when tagged ``etcdops:fleet=<stack>``."""


def fleet_secret(arn: str) -> bool:
    """Whether a ``Fleet*`` grant reaches the secret ``arn`` (once tagged): matched as IAM matches
    resources, ``*`` and ``?`` across ``/`` too."""
    resource = arn.split(":", 5)[-1]
    return any(fnmatchcase(resource, pattern) for pattern in FLEET_SECRETS)


@dataclass(frozen=True)
class StackScope:
    """The deployment a cluster is registered with: the tag's value, and where its grants apply."""

    stack: str
    region: str
    account: str
    partition: str = "aws"


@dataclass(frozen=True)
class FleetResource:
    """One AWS resource of a registered cluster that a function of the stack acts on, with its tags."""

    kind: ResourceKind
    ident: str  # a secret's name, an EC2 id, a target group's ARN
    why: str  # what it is to the cluster: "tls.ca", "member host", "data volume of i-...", ...
    tags: Mapping[str, str]

    def tagged_for(self, stack: str) -> bool:
        return self.tags.get(FLEET_TAG) == stack

    def describe(self) -> str:
        return f"{self.kind.replace('-', ' ')} {self.ident} ({self.why})"


@dataclass
class FleetAccess:
    """What reading a cluster's resources found: each resource and its tags, and the problems no tag
    fixes (a resource the configuration names that does not exist, a secret no grant reaches)."""

    resources: list[FleetResource] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: str = ""  # why nothing was read (a cross-account cluster), else empty

    def untagged(self, stack: str) -> list[FleetResource]:
        return [r for r in self.resources if not r.tagged_for(stack)]

    def ok(self, stack: str) -> bool:
        return not self.problems and not self.untagged(stack)


def _lacks(resource: FleetResource, stack: str) -> str:
    other = resource.tags.get(FLEET_TAG)
    if other:  # one value per key: tagging it for this stack takes it from the other
        return f"{resource.describe()}, tagged {FLEET_TAG}={other} (another deployment's)"
    return resource.describe()


def tag_commands(untagged: Sequence[FleetResource], scope: StackScope) -> list[str]:
    """The AWS CLI commands that put ``etcdops:fleet=<stack>`` on ``untagged``: one per secret (Secrets
    Manager tags one at a time), one for every EC2 resource, one for the target groups."""
    tag = f"Key={FLEET_TAG},Value={scope.stack}"
    region = f"--region {shlex.quote(scope.region)}"
    commands = [
        f"aws secretsmanager tag-resource {region} --secret-id {shlex.quote(r.ident)} --tags {tag}"
        for r in untagged
        if r.kind == "secret"
    ]
    ec2 = [shlex.quote(r.ident) for r in untagged if r.kind in ("instance", "volume", "snapshot")]
    if ec2:
        commands.append(f"aws ec2 create-tags {region} --resources {' '.join(ec2)} --tags {tag}")
    groups = [shlex.quote(r.ident) for r in untagged if r.kind == "target-group"]
    if groups:
        commands.append(f"aws elbv2 add-tags {region} --resource-arns {' '.join(groups)} --tags {tag}")
    return commands


def refusal(cluster: str, access: FleetAccess, scope: StackScope) -> str:
    """One line: why ``cluster`` cannot be watched by the stack of ``scope`` as its resources stand, each
    resource named, and the commands that tag the untagged ones ("" when nothing is wrong)."""
    untagged = access.untagged(scope.stack)
    parts = []
    if access.problems:
        parts.append("; ".join(access.problems))
    if untagged:
        parts.append(
            f"the stack {scope.stack} reaches a registered cluster's resources only through the tag "
            f"{FLEET_TAG}={scope.stack} (README: IAM for a fleet), which {len(untagged)} lack: "
            + ", ".join(_lacks(r, scope.stack) for r in untagged)
            + "; tag them with: "
            + " && ".join(tag_commands(untagged, scope))
        )
    return f"cluster {cluster}: " + "; ".join(parts) if parts else ""


def tls_secret_problem(field_name: str, arn: str, scope: StackScope) -> str | None:
    """Why no grant of the stack reaches the secret ``arn`` a ``tls`` entry names, however it is
    tagged (None: a ``Fleet*`` grant reaches it once tagged)."""
    parts = arn.split(":", 6)
    if len(parts) < 7:
        return f"{field_name}: {arn!r} is not a Secrets Manager secret ARN"
    _, partition, _, region, account, kind, name = parts
    if (partition, region, account) != (scope.partition, scope.region, scope.account):
        return (
            f"{field_name}: secret {arn} is in {region} of account {account}, but the stack {scope.stack} reads "
            f"secrets in {scope.region} of {scope.account} only (or give the cluster an aws.role_arn there)"
        )
    if not fnmatchcase(f"{kind}:{name}", CLIENT_TLS_SECRETS):
        return (
            f"{field_name}: no grant of the stack reaches secret {arn}: a registered cluster's TLS secrets must "
            "be named etcdops/<cluster>/client/<name>"
        )
    return None
