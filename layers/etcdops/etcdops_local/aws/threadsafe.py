"""moto's backends, made to serve requests from several threads at once as AWS serves them: each whole.

moto keeps a service's data in plain dicts and walks them in Python loops, so a request that lists
while another thread adds fails with ``RuntimeError: dictionary changed size during iteration``, a
plain exception that reaches the caller as no AWS error would (and inside the Step Functions
interpreter ends a task as ``States.Runtime``). The local stack serves requests from many threads:
each execution's tasks, the timer's invocations (HealthCheck every second in the e2e tests), the
handlers' own threads, the harness. Met so far, all on paths of ours:

* DynamoDB: a ``Query`` or ``Scan`` beside a ``PutItem`` of a new key (HealthCheck's repairs query
  beside a runbook's lock or approval);
* SSM: ``GetParametersByPath`` or ``DescribeParameters`` beside a ``PutParameter`` of a new name (the
  cluster registry read by HealthCheck beside ``cluster add``);
* IAM: moto looks up the role of every request made with a role's session by walking all roles,
  beside a ``CreateRole`` (a second stack built while the first one runs);
* SNS: a ``Publish`` walks the topic's subscriptions beside a ``Subscribe`` (a second stack's inbox).

Each operation of these is made atomic with one lock per service: DynamoDB's and IAM's whole
backends, SSM's parameter operations only (its ``SendCommand`` runs host commands, which may take
long and call back), SNS's subscription table only (a publish delivers, maybe to a function). None
of the locked operations calls another service or runs a handler.
"""

from __future__ import annotations

import functools
import importlib
import threading
import types
from collections.abc import Callable
from typing import Any

SSM_PARAMETER_OPERATIONS = (
    "put_parameter",
    "get_parameter",
    "get_parameters",
    "get_parameters_by_path",
    "describe_parameters",
    "delete_parameter",
    "delete_parameters",
    "get_parameter_history",
    "label_parameter_version",
    "unlabel_parameter_version",
)

SNS_SUBSCRIPTION_OPERATIONS = (
    "subscribe",
    "unsubscribe",
    "_get_topic_subscriptions",  # what Publish and ListSubscriptionsByTopic walk
    "list_subscriptions",
    "list_subscriptions_by_topic",
    "delete_topic_subscriptions",
)

# (module, backend class, the operations made atomic: None for every public method the class defines)
SERIALIZED: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("moto.dynamodb.models", "DynamoDBBackend", None),
    ("moto.iam.models", "IAMBackend", None),
    ("moto.ssm.models", "SimpleSystemManagerBackend", SSM_PARAMETER_OPERATIONS),
    ("moto.sns.models", "SNSBackend", SNS_SUBSCRIPTION_OPERATIONS),
)


def _atomic(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    @functools.wraps(method)
    def atomic(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return atomic


def install() -> Callable[[], None]:
    """Make the operations of :data:`SERIALIZED` atomic, one lock per service; returns the undo."""
    saved: list[tuple[type, str, Any]] = []
    for module_name, class_name, operations in SERIALIZED:
        backend = getattr(importlib.import_module(module_name), class_name)
        defined = vars(backend).items()
        names = operations or tuple(n for n, v in defined if n[0] != "_" and isinstance(v, types.FunctionType))
        lock = threading.RLock()
        for name in names:
            method = vars(backend)[name]
            saved.append((backend, name, method))
            setattr(backend, name, _atomic(method, lock))

    def undo() -> None:
        for backend, name, method in reversed(saved):
            setattr(backend, name, method)

    return undo
