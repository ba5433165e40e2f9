"""The named errors of the compute providers (state machines retry or catch them by class name)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etcdops.domain.errors import Backoff, ConfigError, EtcdopsError, NotFoundError, UsageError
from etcdops.domain.findings import Finding

if TYPE_CHECKING:
    from etcdops.domain.compute.base import ActionResult


class ComputeError(EtcdopsError):
    """Base of every compute provider error."""


class ComputeConfigError(ComputeError, ConfigError):
    """The compute settings are wrong (unknown SSM document key, missing target group, ...)."""


class ComputeApiError(ComputeError):
    """A cloud API call was refused (permissions, a bad request, a missing resource): not transient."""


class ComputeApiUnavailableError(ComputeApiError):
    """A cloud API call failed in a way that passes (throttling, a service fault, no capacity now, the network)."""

    retryable = True


class InvalidHostNameError(ComputeError, UsageError):
    """A member name cannot name a host (it ends up in tags, secret ids, user data and certificates)."""


class HostNotFoundError(ComputeError, NotFoundError):
    """No live host has that name, or an action has no host to run on."""


class HostConflictError(ComputeError):
    """More than one live host carries the same member name; a human must decide which one stays."""


class HostDataNotEmptyError(ComputeError):
    """A new member's host already holds etcd data it did not write: a new member starts empty (invariant 20)."""


class HostNotReadyError(ComputeError):
    """The host exists but cannot take commands yet (booting, SSM agent not online)."""

    retryable = True
    # a fresh EC2 instance's SSM agent registers within a minute or two: wait up to 3 minutes
    backoff = Backoff(interval_seconds=5, max_attempts=36, rate=1.0)


class UnknownActionError(ComputeError, UsageError):
    """``run_action`` was asked for an action that is not in the catalogue."""


class ActionParameterError(ComputeError, UsageError):
    """An action's parameters are missing, unknown or malformed; the message names the parameter."""


class HostCommandFailedError(ComputeError):
    """A command ran on a host and failed there; ``result`` holds every host's status and output."""

    def __init__(self, message: str, result: ActionResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class HostCommandTimeoutError(ComputeError):
    """A command did not finish before its deadline; the documents are idempotent, so retry it."""

    retryable = True

    def __init__(self, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


class CertificateAuthorityError(ComputeError):
    """The cluster's CA (key and certificate) cannot be read; no member certificate can be issued.

    ``finding`` says what is wrong with it and how to fix it (the preflight reports it as it is).
    """

    def __init__(self, finding: Finding) -> None:
        super().__init__(str(finding))
        self.finding = finding
