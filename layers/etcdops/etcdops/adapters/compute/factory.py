"""The one place that chooses the compute backend for a cluster configuration.

The Lambda layer knows one provider, ``ec2``. Any other is registered by name by the code that
provides it (:func:`register_provider`): the local stack registers ``local``
(``etcdops_local.compute``), so the Lambda functions never load the local provider or the dev
cluster. A configuration naming a provider nobody registered in this process is a ``ComputeConfigError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from etcdops.adapters.compute.ec2 import Ec2ComputeProvider
from etcdops.domain.compute.base import ComputeProvider
from etcdops.domain.compute.errors import ComputeConfigError
from etcdops.domain.config import ClusterConfig, Ec2Compute

ProviderOpener = Callable[[ClusterConfig, Mapping[str, Sequence[str]] | None], ComputeProvider]
"""Opens a registered provider for a configuration (and the control-plane hooks, if any)."""

ScratchOpener = Callable[[ClusterConfig], ComputeProvider]
"""Opens a registered provider's scratch pool for a configuration (where restore drills launch)."""

_REGISTERED: dict[str, ProviderOpener] = {}
_SCRATCH: dict[str, ScratchOpener] = {}


def register_provider(name: str, opener: ProviderOpener, scratch: ScratchOpener | None = None) -> None:
    """Make ``compute.provider: <name>`` open with ``opener`` in this process (registering again replaces),
    and its scratch pool with ``scratch``."""
    if name == "ec2":
        raise ComputeConfigError("compute: the ec2 provider is built in and cannot be replaced")
    _REGISTERED[name] = opener
    if scratch is not None:
        _SCRATCH[name] = scratch


#: the suffix of the scratch pool's cluster name: restore drills launch their hosts there
SCRATCH_SUFFIX = "-drill"


def open_compute(
    config: ClusterConfig,
    *,
    ec2: Any = None,
    elbv2: Any = None,
    ssm: Any = None,
    secretsmanager: Any = None,
    cloudwatch: Any = None,
    session: Any = None,
    stack_name: str | None = None,
    local_hooks: Mapping[str, Sequence[str]] | None = None,
    scratch: bool = False,
) -> ComputeProvider:
    """The provider named by ``config.compute``.

    For ``ec2`` the AWS clients are passed in, one by one or as a boto3 ``session`` that makes the
    ones not given, and ``stack_name`` names the etcdops stack whose SSM documents it sends. A
    registered provider (``local``) needs no client; ``local_hooks`` maps control-plane actions to
    commands to run instead of the Kubernetes hooks.

    ``scratch`` opens the cluster's scratch pool instead, where restore drills launch a throwaway host.
    Its hosts are never the cluster's: in EC2 they are tagged ``etcdops:cluster=<name>-drill`` (the
    cluster's host lookups and SSM targeting never see them; their certificates still come from the
    cluster's CA) and no target group is given (never a load balancer target); a registered provider
    opens its own scratch pool (the local stack: processes of the scratch stack ``drill/``).
    """
    compute = config.compute
    if compute is not None and not isinstance(compute, Ec2Compute):
        return _open_registered(config, compute.provider, local_hooks, scratch)
    if isinstance(compute, Ec2Compute):
        given = {"ec2": ec2, "elbv2": elbv2, "ssm": ssm, "secretsmanager": secretsmanager, "cloudwatch": cloudwatch}
        clients: dict[str, Any] = {
            name: client if client is not None else session.client(name) if session is not None else None
            for name, client in given.items()
        }
        missing = [name for name, client in clients.items() if client is None]
        if missing:
            raise ComputeConfigError(f"compute: the ec2 provider needs AWS clients: {', '.join(missing)} not given")
        if not stack_name:
            raise ComputeConfigError("compute: the ec2 provider needs the etcdops stack's name (STACK_NAME)")
        return Ec2ComputeProvider(
            f"{config.name}{SCRATCH_SUFFIX}" if scratch else config.name,
            compute.model_copy(update={"target_group_arn": None}) if scratch else compute,
            stack_name=stack_name,
            ec2=clients["ec2"],
            elbv2=clients["elbv2"],
            ssm=clients["ssm"],
            secretsmanager=clients["secretsmanager"],
            cloudwatch=clients["cloudwatch"],
            secrets_cluster=config.name,
        )
    raise ComputeConfigError("compute: not configured (provider: ec2 or local)")


def _open_registered(
    config: ClusterConfig, provider: str, local_hooks: Mapping[str, Sequence[str]] | None, scratch: bool
) -> ComputeProvider:
    """A provider registered by name (the local stack's), or its scratch pool."""
    opener = _REGISTERED.get(provider)
    if opener is None:
        known = ", ".join(["ec2", *sorted(_REGISTERED)])
        raise ComputeConfigError(f"compute: provider {provider!r} is not available here (this process knows: {known})")
    if scratch:
        scratch_opener = _SCRATCH.get(provider)
        if scratch_opener is None:
            raise ComputeConfigError(f"compute: provider {provider!r} has no scratch pool for drills")
        return scratch_opener(config)
    return opener(config, local_hooks)
