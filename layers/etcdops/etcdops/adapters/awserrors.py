"""The one translation of AWS SDK errors into ours, used by every adapter that calls AWS.

botocore raises two kinds of error: a ``ClientError`` carries the service's error code (the service
answered "no" or "not now"), a ``BotoCoreError`` has none (the network, a timeout, credentials that
could not be found: the call may not even have reached the service). :func:`aws_error` turns either
into one of our named errors, transient or not by one rule: no code, or a code in
:data:`TRANSIENT_CODES`, is transient; every other code is a refusal. An adapter names the two
classes it raises (``refused``/``unavailable``, :class:`AwsError`/:class:`AwsUnavailableError` by
default) and handles the few codes that mean something to it (``ParameterNotFound``,
``ExecutionAlreadyExists``, ...) before it calls here.
"""

from __future__ import annotations

from typing import TypeVar, overload

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.domain.errors import EtcdopsError

__all__ = [
    "AWS_SDK_ERRORS",
    "TRANSIENT_CODES",
    "AwsError",
    "AwsUnavailableError",
    "aws_error",
    "aws_error_code",
    "aws_error_message",
    "is_transient",
]

E = TypeVar("E", bound=EtcdopsError)

AWS_SDK_ERRORS = (ClientError, BotoCoreError)
"""What a boto3 call raises when it fails (``except AWS_SDK_ERRORS``)."""


class AwsError(EtcdopsError):
    """An AWS call was refused (permissions, a missing resource, a bad request): not transient."""


class AwsUnavailableError(AwsError):
    """An AWS call failed in a way that passes (throttling, a service fault, the network)."""

    retryable = True


TRANSIENT_CODES = frozenset(
    {
        # throttling and request-rate quotas
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "SlowDown",
        # the service is faulty or busy right now
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServiceError",
        "InternalServerErrorException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "RequestTimeout",
        "RequestTimeoutException",
        # the bare HTTP status S3 gives as the code of a HEAD request (it has no body)
        "500",
        "502",
        "503",
        "504",
        # EC2 has no capacity of that type in that zone now; it comes back
        "InsufficientInstanceCapacity",
    }
)
"""Every AWS error code that says "not now" rather than "no" (one list for every service we call)."""


def aws_error_code(exc: BaseException) -> str:
    """The error code of a botocore ``ClientError`` ("" for anything else)."""
    if not isinstance(exc, ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Code", "") or "")


def aws_error_message(exc: BaseException, limit: int = 400) -> str:
    """The service's own message of a ``ClientError`` on one line ("" for anything else)."""
    if not isinstance(exc, ClientError):
        return ""
    return " ".join(str(exc.response.get("Error", {}).get("Message", "") or "").split())[:limit]


def is_transient(exc: BaseException) -> bool:
    """True for a failure that may pass: no error code (network, timeout) or a transient code."""
    if isinstance(exc, ClientError):
        code = aws_error_code(exc)
        return not code or code in TRANSIENT_CODES
    return isinstance(exc, BotoCoreError)


@overload
def aws_error(what: str, exc: BaseException) -> AwsError: ...


@overload
def aws_error(what: str, exc: BaseException, *, refused: type[E], unavailable: type[E]) -> E: ...


def aws_error(
    what: str,
    exc: BaseException,
    *,
    refused: type[EtcdopsError] = AwsError,
    unavailable: type[EtcdopsError] = AwsUnavailableError,
) -> EtcdopsError:
    """The named error for the failed AWS call ``what``: ``unavailable`` when it may pass
    (:func:`is_transient`), ``refused`` otherwise. The message is one line: what, the code (or
    the kind of failure) and botocore's text."""
    code = aws_error_code(exc)
    kind = unavailable if is_transient(exc) else refused
    text = " ".join(str(exc).split())
    return kind(f"{what}: {code or type(exc).__name__}: {text}")
