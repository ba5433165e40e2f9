"""One asynchronous invocation of a function per registered cluster: how a scheduled function (HealthCheck,
Backup, BackupVerify) that names no cluster reaches every cluster of the fleet, each in its own invocation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from etcdops.adapters.awserrors import AWS_SDK_ERRORS, aws_error
from etcdops.domain.errors import EtcdopsError

__all__ = ["FAN_OUT_THREADS", "Invoke", "invoke_each", "self_invoker"]

FAN_OUT_THREADS = 16
Invoke = Callable[[str], None]


def invoke_each(names: Iterable[str], invoke: Invoke) -> None:
    """``invoke`` every name, FAN_OUT_THREADS at a time (Lambda answers an Event invoke at once, so a
    thousand clusters are asked within about a second); every one is tried, the first error raised."""
    targets = list(names)
    with ThreadPoolExecutor(max_workers=max(1, min(FAN_OUT_THREADS, len(targets)))) as pool:
        outcomes = list(pool.map(lambda name: _try(invoke, name), targets))
    failed = [error for error in outcomes if error is not None]
    if failed:
        raise failed[0]


def _try(invoke: Invoke, name: str) -> EtcdopsError | None:
    try:
        invoke(name)
    except EtcdopsError as exc:
        return exc
    return None


def self_invoker(lambda_client: Any, function_arn: str, event: Mapping[str, Any], what: str) -> Invoke:
    """Invoke the function ``function_arn`` asynchronously with ``event``, its ``detail`` naming one cluster."""

    def invoke(cluster: str) -> None:
        payload = json.dumps({**event, "detail": {**(event.get("detail") or {}), "cluster": cluster}}).encode()
        try:
            lambda_client.invoke(FunctionName=function_arn, InvocationType="Event", Payload=payload)
        except AWS_SDK_ERRORS as exc:
            raise aws_error(f"invoking the {what} of cluster {cluster}", exc) from exc

    return invoke
