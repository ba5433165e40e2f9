"""In-process Lambda: a stack function's handler loaded from the working tree and run as Lambda runs it.

Each invocation gets a sandbox (a warm loaded copy of the handler module, or a cold new one) that
acts with the function's role, sees the function's environment variables (``os.environ`` in the
sandbox's threads: :mod:`etcdops_local.aws.sandbox`) and has its own /tmp (a tmpfs of the function's
EphemeralStorage where the process may mount one).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from etcdops.domain.errors import ConfigError
from etcdops_local.aws import sandbox as localsandbox
from etcdops_local.aws.iamtrust import LAMBDA
from etcdops_local.aws.stack_record import LocalStack
from etcdops_local.aws.templates import function_code

log = logging.getLogger("etcdops_local.aws.stack")

DEFAULT_EPHEMERAL_MB = 512  # Lambda's default EphemeralStorage
REQUIRE_EPHEMERAL_LIMIT_ENV = "ETCDOPS_REQUIRE_EPHEMERAL_LIMIT"  # "1": a /tmp limit that cannot be enforced fails


@dataclass
class LocalFunction:
    """A stack function whose handler runs in this process."""

    logical_id: str
    function_name: str
    function_arn: str
    code_dir: Path
    handler: str
    region: str
    timeout: int
    memory_size: int
    ephemeral_mb: int = DEFAULT_EPHEMERAL_MB  # EphemeralStorage.Size: each sandbox's /tmp
    sandbox_root: Path | None = None  # where the sandboxes' /tmp directories are made (None: the process's)
    _idle: list[tuple[ModuleType, Path | None]] = field(default_factory=list, repr=False)
    _created: int = field(default=0, repr=False)
    _mounts: list[Path] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def handler_file(self) -> tuple[Path, str]:
        module, _, attribute = self.handler.rpartition(".")
        if not module or not attribute:
            raise ConfigError(f"{self.logical_id}.Handler: {self.handler!r} is not module.function")
        return self.code_dir / (module.replace(".", "/") + ".py"), attribute

    def _new_sandbox(self, index: int) -> ModuleType:
        path, _ = self.handler_file()
        name = f"etcdops_localaws.{self.logical_id}.s{index}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.exists():
            raise ConfigError(f"{self.logical_id}: no handler module {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module

    def _new_tmp(self, index: int) -> Path | None:
        """The new sandbox's /tmp: a tmpfs of ``ephemeral_mb`` where this process may mount one."""
        if self.sandbox_root is None:
            return None
        directory = self.sandbox_root / f"{self.function_name}.s{index}"
        try:
            localsandbox.mount_tmpfs(directory, self.ephemeral_mb)
        except localsandbox.SandboxError:
            if os.environ.get(REQUIRE_EPHEMERAL_LIMIT_ENV) == "1":
                raise  # CI: an unenforced limit is a failure, never a silent pass
            log.warning("%s: /tmp is not limited to %d MB (cannot mount a tmpfs)", self.logical_id, self.ephemeral_mb)
            return directory
        with self._lock:
            self._mounts.append(directory)
        return directory

    @contextmanager
    def sandbox(
        self, credentials: localsandbox.Credentials | None = None, environment: Mapping[str, str] | None = None
    ) -> Iterator[ModuleType]:
        """A loaded copy of the handler module, with its own /tmp, that no other invocation is using (a
        warm sandbox, or a new one), bound to this thread with ``credentials`` and ``environment`` for the block."""
        with self._lock:
            idle = self._idle.pop() if self._idle else None
            if idle is None:
                self._created += 1
                index = self._created
        tmp = idle[1] if idle is not None else self._new_tmp(index)
        try:
            bound = localsandbox.Sandbox(self.function_name, credentials, tmp, dict(environment or {}))
            with localsandbox.bound(bound):
                if idle is None:
                    idle = (self._new_sandbox(index), tmp)  # a cold start: the init code runs in the sandbox too
                yield idle[0]
        finally:
            if idle is not None:
                with self._lock:
                    self._idle.append(idle)

    def close(self) -> None:
        """Unmount the sandboxes' /tmp (when the local AWS stops)."""
        with self._lock:
            mounts, self._mounts = self._mounts, []
        for directory in mounts:
            localsandbox.unmount(directory)


class LambdaContext:
    """What a Lambda handler gets as ``context`` (the attributes Powertools and our handlers read)."""

    def __init__(self, function: LocalFunction, request_id: str) -> None:
        self.function_name = function.function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.function_arn
        self.memory_limit_in_mb = function.memory_size
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function.function_name}"
        self.log_stream_name = f"{datetime.now():%Y/%m/%d}/[$LATEST]{request_id.replace('-', '')}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


_REGISTRY: dict[tuple[str, str], LocalFunction] = {}  # (region, function name) -> function
_REGISTRY_LOCK = threading.Lock()


def _function_environment(function: LocalFunction, moto_function: Any) -> dict[str, str]:
    variables = {k: str(v) for k, v in (getattr(moto_function, "environment_vars", None) or {}).items()}
    variables.setdefault("AWS_REGION", function.region)
    variables.setdefault("AWS_DEFAULT_REGION", function.region)
    return variables


def _role_credentials(moto_function: Any, function: LocalFunction) -> localsandbox.Credentials | None:
    from etcdops_local.aws.emulator import LocalAws  # the emulator imports this module

    running = LocalAws._running
    role = getattr(moto_function, "role", None)
    if running is None or not running.enforce_iam or not role:
        return None
    return running.authorizer.role_credentials(role, function.function_name, LAMBDA)


def run_handler(function: LocalFunction, moto_function: Any, event: Any) -> tuple[Any, bool]:
    """Run the handler as Lambda would, in a sandbox acting with the function's role and its own /tmp:
    (result, False), or (Lambda's error document, True)."""
    request_id = str(uuid.uuid4())
    try:
        environment = _function_environment(function, moto_function)
        with function.sandbox(_role_credentials(moto_function, function), environment) as module:
            _, attribute = function.handler_file()
            handler = getattr(module, attribute, None)
            if not callable(handler):
                raise ConfigError(f"{function.logical_id}.Handler: {function.handler} is not a function")
            result = handler(event, LambdaContext(function, request_id))
        json.dumps(result)
    except Exception as exc:  # the invocation fails, as in Lambda; the caller sees the error
        log.info("%s failed: %s: %s", function.function_name, type(exc).__name__, exc)
        return _error_document(exc, request_id), True
    return result, False


def _error_document(exc: BaseException, request_id: str) -> dict[str, Any]:
    error_type = "Runtime.MarshalError" if isinstance(exc, TypeError) and "JSON" in str(exc) else type(exc).__name__
    return {
        "errorMessage": str(exc),
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def register_functions(
    stack: LocalStack, sam: Mapping[str, Any], template_dir: Path, cfn: Mapping[str, Any], sandbox_root: Path | None
) -> None:
    for lid, resource in sam["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function" or lid not in stack.functions:
            continue
        code = function_code(sam, lid, template_dir)
        if code is None:
            log.warning("%s: code is not local; moto's own invoke will be used", lid)
            continue
        props = cfn["Resources"][lid].get("Properties") or {}
        function = LocalFunction(
            logical_id=lid,
            function_name=stack.functions[lid],
            function_arn=stack.function_arns[lid],
            code_dir=code[0],
            handler=code[1],
            region=stack.region,
            timeout=int(props.get("Timeout", 3)),
            memory_size=int(props.get("MemorySize", 128)),
            ephemeral_mb=int((props.get("EphemeralStorage") or {}).get("Size", DEFAULT_EPHEMERAL_MB)),
            sandbox_root=sandbox_root,
        )
        function.handler_file()  # a malformed Handler is refused now, by name
        with _REGISTRY_LOCK:
            _REGISTRY[(stack.region, function.function_name)] = function
