"""Service limits AWS enforces and moto does not, enforced in the local stack with AWS's errors.

What our code could run into, each with the error AWS gives (moto already enforces the rest: SNS's
256 KB message, DynamoDB's 400 KB item, Step Functions' 256 KiB state input and output, which fails
the execution with ``States.DataLimitExceeded``, and Lambda's 6 MB synchronous response):

* Step Functions ``StartExecution``: a name of 1 to 80 characters without white space, brackets,
  wildcards, the special characters ``" # % \\ ^ | ~ ` $ & , ; : /`` or control characters
  (``InvalidName``; a longer one ``ValidationException``), and an input of at most 256 KiB of UTF-8
  (``ValidationException``).
* Lambda ``Invoke``: a request payload of at most 6 MB synchronous and 256 KB asynchronous
  (``RequestEntityTooLargeException``, HTTP 413). The /tmp limit (``EphemeralStorage``) is
  :mod:`etcdops_local.aws.sandbox`'s.
* SSM ``PutParameter``: a value of at most 4 KB in the standard tier and 8 KB in the advanced tier
  (``ValidationException``); intelligent tiering moves a larger value to the advanced tier.

Unique names per account and region are :mod:`etcdops_local.aws.stack`'s (a second stack with a fixed-name
resource fails to create, as CloudFormation fails it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

SFN_INPUT_MAX_BYTES = 256 * 1024
SFN_NAME_MAX_CHARS = 80
LAMBDA_SYNC_PAYLOAD_MAX_BYTES = 6 * 1024 * 1024
LAMBDA_ASYNC_PAYLOAD_MAX_BYTES = 256 * 1024
SSM_STANDARD_VALUE_MAX_CHARS = 4096
SSM_ADVANCED_VALUE_MAX_CHARS = 8192

_SFN_NAME_FORBIDDEN = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")


# ---- the rules (pure) ------------------------------------------------------------------------------------


def execution_name_problem(name: str) -> tuple[str, str] | None:
    """(AWS's error code, message) when Step Functions refuses ``name`` for an execution, else None."""
    if not name or len(name) > SFN_NAME_MAX_CHARS:
        return (
            "ValidationException",
            f"1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: "
            f"Member must have length less than or equal to {SFN_NAME_MAX_CHARS}",
        )
    if _SFN_NAME_FORBIDDEN.search(name):
        return "InvalidName", f"Invalid Name: '{name}'"
    return None


def execution_input_problem(document: str | None) -> str | None:
    size = len((document or "").encode("utf-8"))
    if size <= SFN_INPUT_MAX_BYTES:
        return None
    return (
        "1 validation error detected: Value at 'input' failed to satisfy constraint: "
        f"Member must have length less than or equal to {SFN_INPUT_MAX_BYTES} (it is {size} bytes)"
    )


def invoke_payload_problem(size: int, invocation_type: str) -> str | None:
    limit = LAMBDA_ASYNC_PAYLOAD_MAX_BYTES if invocation_type == "Event" else LAMBDA_SYNC_PAYLOAD_MAX_BYTES
    if size <= limit:
        return None
    return f"{size} byte payload is too large for the {invocation_type} invocation type (limit {limit} bytes)"


def parameter_value_problem(value: str, tier: str | None) -> str | None:
    limit = (
        SSM_ADVANCED_VALUE_MAX_CHARS if tier in ("Advanced", "Intelligent-Tiering") else SSM_STANDARD_VALUE_MAX_CHARS
    )
    if len(value) <= limit:
        return None
    if limit == SSM_STANDARD_VALUE_MAX_CHARS:
        return (
            f"Standard tier parameters support a maximum parameter value of {limit} characters. To create a "
            "larger parameter value, upgrade the parameter to use the advanced-parameter tier."
        )
    return f"Advanced tier parameters support a maximum parameter value of {limit} characters."


# ---- moto, patched ------------------------------------------------------------------------------------


def install() -> Callable[[], None]:
    """Enforce the Step Functions and SSM limits in moto's backends; returns the undo."""
    from moto.ssm.exceptions import ValidationException as SsmValidation
    from moto.ssm.models import SimpleSystemManagerBackend
    from moto.stepfunctions.exceptions import InvalidName
    from moto.stepfunctions.exceptions import ValidationException as SfnValidation
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original_start = StepFunctionsParserBackend.start_execution
    original_put = SimpleSystemManagerBackend.put_parameter

    def start_execution(self: Any, state_machine_arn: str, name: Any = None, execution_input: Any = None,
                        *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        if name is not None:
            problem = execution_name_problem(name)
            if problem is not None:
                code, message = problem
                raise InvalidName(message) if code == "InvalidName" else SfnValidation(message)
        too_large = execution_input_problem(execution_input)
        if too_large is not None:
            raise SfnValidation(too_large)
        return original_start(self, state_machine_arn, name, execution_input, *args, **kwargs)

    def put_parameter(self: Any, name: str, description: str, value: str, *args: Any, **kwargs: Any) -> Any:
        tier = kwargs.get("tier", args[6] if len(args) > 6 else None)
        problem = parameter_value_problem(value or "", tier)
        if problem is not None:
            raise SsmValidation(problem)
        return original_put(self, name, description, value, *args, **kwargs)

    StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign]
    SimpleSystemManagerBackend.put_parameter = put_parameter  # type: ignore[method-assign]

    def undo() -> None:
        StepFunctionsParserBackend.start_execution = original_start  # type: ignore[method-assign]
        SimpleSystemManagerBackend.put_parameter = original_put  # type: ignore[method-assign]

    return undo


def payload_too_large(message: str) -> Exception:
    """Lambda's RequestEntityTooLargeException (HTTP 413)."""
    from moto.core.exceptions import JsonRESTError

    error = JsonRESTError("RequestEntityTooLargeException", message)
    error.code = 413
    return error
