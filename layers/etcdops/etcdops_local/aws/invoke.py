"""Invoking a stack function locally: Lambda's Invoke API (moto's, patched), synchronous and asynchronous
(``Event``) invocations with their retries and OnFailure destination, as Lambda runs them."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from etcdops.domain.errors import EtcdopsError, NotFoundError
from etcdops_local.aws import limits as locallimits
from etcdops_local.aws.errors import LocalAwsError
from etcdops_local.aws.functions import _REGISTRY, _REGISTRY_LOCK, LocalFunction, run_handler
from etcdops_local.aws.stack_record import LocalStack

log = logging.getLogger("etcdops_local.aws.stack")


def _run_event(function: LocalFunction, moto_function: Any, event: Any) -> None:
    """An ``Event`` invocation: as :func:`invoke_async` when the function belongs to a stack built here."""
    from etcdops_local.aws.emulator import LocalAws  # the emulator imports this module

    running = LocalAws._running
    stacks = running.stacks if running is not None else []
    stack = next((s for s in stacks if s.functions.get(function.logical_id) == function.function_name), None)
    if stack is None:
        run_handler(function, moto_function, event)
        return
    with suppress(InvocationError):  # retried, then sent to its destination; the caller was answered already
        invoke_async(stack, function.logical_id, event)


def _patched_invoke(original: Any) -> Any:
    def invoke(self: Any, body: Any, request_headers: Any, response_headers: Any) -> str | bytes:
        with _REGISTRY_LOCK:
            function = _REGISTRY.get((self.region, self.function_name))
        if function is None:
            return original(self, body, request_headers, response_headers)
        invocation_type = request_headers.get("x-amz-invocation-type") or request_headers.get(
            "X-Amz-Invocation-Type", "RequestResponse"
        )
        size = len(body.encode() if isinstance(body, str) else body or b"")
        too_large = locallimits.invoke_payload_problem(size, invocation_type)
        if too_large is not None:
            raise locallimits.payload_too_large(too_large)
        event = json.loads(body) if body else {}
        if invocation_type == "DryRun":
            return b""
        if invocation_type == "Event":
            threading.Thread(
                target=_run_event, args=(function, self, event), name=f"lambda-{function.logical_id}", daemon=True
            ).start()
            return b""
        result, errored = run_handler(function, self, event)
        if errored:
            response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(result).encode()

    invoke._etcdops_original = original  # type: ignore[attr-defined]
    return invoke


class InvocationError(EtcdopsError):
    """A locally invoked handler failed; ``error_type`` is the exception's class name, as Lambda reports it."""

    def __init__(self, function: str, document: Mapping[str, Any]) -> None:
        super().__init__(f"{function}: {document.get('errorType')}: {document.get('errorMessage')}")
        self.error_type = str(document.get("errorType"))
        self.document = dict(document)


def invoke_local(stack: LocalStack, logical_id: str, event: Any) -> Any:
    """Invoke a stack function in-process, synchronously, as Lambda's RequestResponse would."""
    from moto.awslambda.models import lambda_backends

    name = stack.functions.get(logical_id)
    if name is None:
        raise NotFoundError(f"stack {stack.stack_name} has no function {logical_id}")
    with _REGISTRY_LOCK:
        function = _REGISTRY.get((stack.region, name))
    if function is None:
        raise LocalAwsError(f"{logical_id}: its code is not local, or the stack was built in another process")
    moto_function = lambda_backends[stack.account_id][stack.region].get_function(name)
    result, errored = run_handler(function, moto_function, event)
    if errored:
        raise InvocationError(logical_id, result)
    return result


def invoke_async(stack: LocalStack, logical_id: str, event: Any) -> Any:
    """Invoke a stack function as Lambda runs an asynchronous (``Event``) invocation, here and now.

    A failed attempt is retried as the function's EventInvokeConfig says (default 2), at once where
    AWS waits about a minute, then two. Once it has failed for good, its OnFailure destination
    function gets Lambda's invocation record, sent with the function's own role, so the role needs
    ``lambda:InvokeFunction`` on it as in AWS (synchronously here, so a caller sees it done). Returns
    the handler's result; raises the last attempt's :class:`InvocationError`.
    """
    settings = stack.invoke_configs.get(logical_id, {})
    attempts = 1 + int(settings.get("MaximumRetryAttempts", 2))
    failure: InvocationError | None = None
    for attempt in range(1, attempts + 1):
        try:
            return invoke_local(stack, logical_id, event)
        except InvocationError as exc:
            failure = exc
            log.info("%s: asynchronous attempt %d of %d failed: %s", logical_id, attempt, attempts, exc)
    assert failure is not None
    destination = settings.get("OnFailure")
    if destination is not None:
        record = failure_record(stack, logical_id, event, failure, attempts)
        _send_failure_record(stack, logical_id, destination, record)
    raise failure


def failure_record(
    stack: LocalStack, logical_id: str, event: Any, error: InvocationError, attempts: int
) -> dict[str, Any]:
    """Lambda's record of an asynchronous invocation whose retries are spent (what an OnFailure destination gets)."""
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": str(error.document.get("requestId") or uuid.uuid4()),
            "functionArn": f"{stack.function_arns[logical_id]}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": error.document,
    }


def _send_failure_record(stack: LocalStack, source: str, destination: str, record: dict[str, Any]) -> None:
    from etcdops_local.aws.emulator import require_running  # the emulator imports this module

    running = require_running()
    session = running.function_session(stack, source) if running.enforce_iam else running.session()
    try:
        response = session.client("lambda").invoke(
            FunctionName=stack.function_arns[destination], Payload=json.dumps(record).encode()
        )
    except Exception as exc:  # as in AWS, a destination that cannot be reached loses the record: said in the log
        log.warning("%s: the OnFailure destination %s was not invoked: %s", source, destination, exc)
        return
    if response.get("FunctionError"):
        log.warning("%s: the OnFailure destination %s failed: %s", source, destination, response["Payload"].read())
