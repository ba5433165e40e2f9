"""The AWS side of the local stack: template.yaml itself, created in moto, running our real handlers.

What runs locally is what deploys: the SAM template is translated offline with aws-sam-translator
(the same ASL files, DefinitionSubstitutions and policies), created with moto's CloudFormation, and
every Lambda invocation of a stack function (from ``lambda.invoke``, a Step Functions
``lambda:invoke`` task or the local timer) imports ``functions/<dir>/app.py`` and calls its handler
in this process, with the function's environment. A handler's exception reaches Step Functions as a
task failure whose ``Error`` is the exception's class name, so ``Retry``/``Catch`` by our error
names behave as in AWS.

moto and aws-sam-translator are development dependencies: they are imported inside the functions
that need them, so the Lambda layer imports this module without them. Both are pinned
(requirements-dev.txt) because the local-only fixes below touch moto internals:

* a state machine's ``Fn::Join`` definition plus ``DefinitionSubstitutions`` becomes one ``Fn::Join``
  with the substitutions in place (moto ignores DefinitionSubstitutions, and moto's list-form
  ``Fn::Sub`` would turn ASL's ``$$.`` context paths into ``$.``);
* moto's ``stepfunctions_backends`` points at ``stepfunctions_parser_backends`` while a
  :class:`LocalAws` runs, so state machines made by CloudFormation execute;
* CloudWatch alarms and SNS subscriptions, which moto's CloudFormation skips, are created here;
  bucket policies are left out (moto denies every request on a Condition it cannot evaluate, such
  as aws:SecureTransport);
* a KMS key's policy and an SSM document's content from CloudFormation are stored as JSON text
  (moto keeps a dict and then fails);
* ``LambdaFunction.invoke`` is replaced so stack functions run in-process (others keep moto's);
* EC2 launches and SSM host commands are refused where AWS refuses them (:mod:`etcdops_local.aws.ec2`).

Two ways to run it: in-process (``LocalAws()``: moto's mock of botocore, for tests and one-process
tools), or as a server (``LocalAws(server=True, state_dir=...)``: also a ``ThreadedMotoServer`` on
127.0.0.1 and a free port, recorded in ``<state_dir>/aws.json`` so that other processes reach it with
:func:`local_boto3_session` / :func:`client`). Handlers always run in the process that owns it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import secrets
import sys
import threading
import time
import traceback
import uuid
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3

from etcdops.domain.errors import ConfigError, EtcdopsError, NotFoundError
from etcdops_local.aws import definitions as localdefinitions
from etcdops_local.aws import iam as localiam
from etcdops_local.aws import iam_records
from etcdops_local.aws import limits as locallimits
from etcdops_local.aws import sandbox as localsandbox
from etcdops_local.aws.errors import LocalAwsError
from etcdops_local.aws.executions import (
    Step,
    execution_history,
    execution_name,
    start_execution,
    wait_for_execution,
)
from etcdops_local.aws.templates import (
    CODE_BUCKET,
    DUMMY_CREDENTIALS,
    effective_parameters,
    function_code,
    prepare_for_translation,
    read_template,
    substitute_definitions,
    translate,
)

__all__ = [  # what moved to their own modules, still importable from here
    "CODE_BUCKET",
    "DUMMY_CREDENTIALS",
    "LocalAwsError",
    "Step",
    "effective_parameters",
    "execution_history",
    "execution_name",
    "function_code",
    "prepare_for_translation",
    "read_template",
    "start_execution",
    "substitute_definitions",
    "translate",
    "wait_for_execution",
]

log = logging.getLogger("etcdops_local.aws.stack")

DEFAULT_REGION = "us-east-1"
DEFAULT_STACK_NAME = "etcdops"
ACCOUNT_ID = "123456789012"  # moto's default account
STATE_FILE = "aws.json"
DEFAULT_EPHEMERAL_MB = 512  # Lambda's default EphemeralStorage
REQUIRE_EPHEMERAL_LIMIT_ENV = "ETCDOPS_REQUIRE_EPHEMERAL_LIMIT"  # "1": a /tmp limit that cannot be enforced fails
# Not lambda.use_docker=False: that swaps in a backend whose invoke echoes the payload, past our patch.
SFN_CONFIG: Any = {"stepfunctions": {"execute_state_machine": True}}


# ---- the stack and its physical ids ------------------------------------------------------------


@dataclass
class LocalStack:
    """A created stack: logical id -> physical id of everything in it, and where to reach it."""

    stack_name: str
    region: str
    account_id: str
    template_path: str
    parameters: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id (function name, state machine ARN, ...)
    types: dict[str, str]  # logical id -> CloudFormation type
    outputs: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)  # logical id -> function name
    function_arns: dict[str, str] = field(default_factory=dict)
    state_machines: dict[str, str] = field(default_factory=dict)  # logical id -> ARN
    alarms: dict[str, str] = field(default_factory=dict)  # logical id -> alarm name
    unhandled: list[str] = field(default_factory=list)  # "LogicalId (Type)" neither moto nor we create
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> why it is left out locally
    endpoint: str | None = None  # the moto server's URL in server mode
    roles: dict[str, str] = field(default_factory=dict)  # function or state machine logical id -> its role ARN
    # function logical id -> its asynchronous invocation settings (AWS::Lambda::EventInvokeConfig):
    # {"MaximumRetryAttempts": n, "OnFailure": the destination function's logical id}
    invoke_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)  # the harness's (administrator's) keys
    notification_queue: str | None = None  # an SQS queue subscribed to the topic (`etcdops notifications`)

    def physical(self, logical_id: str) -> str:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise NotFoundError(f"stack {self.stack_name} has no resource {logical_id}") from None

    def of_type(self, cfn_type: str) -> dict[str, str]:
        return {lid: self.resources[lid] for lid, t in self.types.items() if t == cfn_type and lid in self.resources}

    def _only(self, cfn_type: str) -> str | None:
        found = list(self.of_type(cfn_type).values())
        return found[0] if len(found) == 1 else None

    @property
    def bucket(self) -> str | None:
        """The backup bucket (the template has another one, where restores stage snapshots)."""
        return self.resources.get("BackupBucket") or self._only("AWS::S3::Bucket")

    @property
    def topic_arn(self) -> str | None:
        return self._only("AWS::SNS::Topic")

    @property
    def table(self) -> str | None:
        return self._only("AWS::DynamoDB::Table")

    @property
    def key_id(self) -> str | None:
        """The backup key (the template has another one, for the notification topic)."""
        return self.resources.get("BackupKey") or self._only("AWS::KMS::Key")

    @property
    def key_arn(self) -> str | None:
        key = self.key_id
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{key}" if key else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalStack:
        return cls(**dict(data))

    def save(self, state_dir: Path) -> Path:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.to_json(), "pid": os.getpid()}, indent=2) + "\n")
        tmp.replace(path)
        return path


def load_local_stack(state_dir: Path) -> LocalStack:
    """The stack recorded by the process that runs the local AWS side (``<state_dir>/aws.json``)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        raise NotFoundError(f"no local AWS stack in {state_dir} (run: etcdops local up)")
    data = json.loads(path.read_text())
    data.pop("pid", None)
    return LocalStack.from_json(data)


class LocalSession(boto3.session.Session):
    """A boto3 session whose clients and resources go to the local moto server by default, acting as
    the harness's administrator (the keys the serving process recorded)."""

    def __init__(self, endpoint: str, region: str, credentials: Mapping[str, str] | None = None) -> None:
        super().__init__(region_name=region, **(credentials or DUMMY_CREDENTIALS))
        self.endpoint = endpoint

    def client(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", self.endpoint)
        return super().client(*args, **kwargs)

    def resource(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", self.endpoint)
        return super().resource(*args, **kwargs)


def local_boto3_session(state_dir: Path) -> LocalSession:
    """A session on the local stack's moto server, for a process other than the one running it."""
    stack = load_local_stack(state_dir)
    if not stack.endpoint:
        raise LocalAwsError(f"the local AWS stack in {state_dir} runs in-process only (no server endpoint)")
    return LocalSession(stack.endpoint, stack.region, stack.credentials)


def client(service: str, state_dir: Path) -> Any:
    return local_boto3_session(state_dir).client(service)


# ---- in-process Lambda ---------------------------------------------------------------------------


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
    def sandbox(self, credentials: localsandbox.Credentials | None = None) -> Iterator[ModuleType]:
        """A loaded copy of the handler module, with its own /tmp, that no other invocation is using (a
        warm sandbox, or a new one), bound to this thread with ``credentials`` for the block."""
        with self._lock:
            idle = self._idle.pop() if self._idle else None
            if idle is None:
                self._created += 1
                index = self._created
        tmp = idle[1] if idle is not None else self._new_tmp(index)
        try:
            with localsandbox.bound(localsandbox.Sandbox(self.function_name, credentials, tmp)):
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


class _Environment:
    """Applies functions' environment variables to ``os.environ`` for the length of an invocation.

    Invocations run in threads of one process, so variables are shared: a variable set by one
    running invocation is reference-counted, and an invocation that needs a different value for it
    waits until the others are done (in practice every function has the same Globals).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: dict[str, tuple[str, int, str | None]] = {}  # name -> (value, users, saved)

    def _conflicts(self, variables: Mapping[str, str]) -> bool:
        return any(k in self._active and self._active[k][0] != v for k, v in variables.items())

    @contextmanager
    def applied(self, variables: Mapping[str, str]) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._conflicts(variables))
            for name, value in variables.items():
                if name in self._active:
                    current, users, saved = self._active[name]
                    self._active[name] = (current, users + 1, saved)
                else:
                    self._active[name] = (value, 1, os.environ.get(name))
                    os.environ[name] = value
        try:
            yield
        finally:
            with self._cond:
                for name in variables:
                    value, users, saved = self._active[name]
                    if users > 1:
                        self._active[name] = (value, users - 1, saved)
                        continue
                    del self._active[name]
                    if saved is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = saved
                self._cond.notify_all()


_ENVIRONMENT = _Environment()
_REGISTRY: dict[tuple[str, str], LocalFunction] = {}  # (region, function name) -> function
_REGISTRY_LOCK = threading.Lock()


def _function_environment(function: LocalFunction, moto_function: Any) -> dict[str, str]:
    variables = {k: str(v) for k, v in (getattr(moto_function, "environment_vars", None) or {}).items()}
    variables.setdefault("AWS_REGION", function.region)
    variables.setdefault("AWS_DEFAULT_REGION", function.region)
    return variables


def _role_credentials(moto_function: Any, function: LocalFunction) -> localsandbox.Credentials | None:
    running = LocalAws._running
    role = getattr(moto_function, "role", None)
    if running is None or not running.enforce_iam or not role:
        return None
    return running.authorizer.role_credentials(role, function.function_name)


def run_handler(function: LocalFunction, moto_function: Any, event: Any) -> tuple[Any, bool]:
    """Run the handler as Lambda would, in a sandbox acting with the function's role and its own /tmp:
    (result, False), or (Lambda's error document, True)."""
    request_id = str(uuid.uuid4())
    with _ENVIRONMENT.applied(_function_environment(function, moto_function)):
        try:
            with function.sandbox(_role_credentials(moto_function, function)) as module:
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


def _run_event(function: LocalFunction, moto_function: Any, event: Any) -> None:
    """An ``Event`` invocation: as :func:`invoke_async` when the function belongs to a stack built here."""
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


def _patch_state_machine_clients(authorizer: localiam.Authorizer) -> Any:
    """A state machine's service calls (its ``lambda:invoke`` tasks) act with the state machine's role,
    so its policy is enforced as in AWS (moto signs them with a fixed dummy key). Returns the undo."""
    from botocore.config import Config
    from moto.core.models import botocore_stubber
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds
    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        role = getattr(state_credentials, "role_arn", None)
        keys: dict[str, Any] = {"aws_access_key_id": "ak", "aws_secret_access_key": "sk"}
        if role:
            c = authorizer.role_credentials(role, "states")
            keys = {"aws_access_key_id": c.access_key_id, "aws_secret_access_key": c.secret_access_key,
                    "aws_session_token": c.session_token}  # fmt: skip
        if not botocore_stubber.enabled:
            keys["endpoint_url"] = f"http://localhost:{moto_server_port()}"
        config = Config(
            parameter_validation=False,
            retries={"max_attempts": 0, "total_max_attempts": 1},
            connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
            read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
        )
        return boto3.client(service, region_name=region, config=config, **keys)

    patched = [boto_client] + [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("moto.stepfunctions.parser") and getattr(module, "boto_client_for", None) is original
    ]
    for module in patched:
        module.boto_client_for = boto_client_for  # type: ignore[attr-defined]

    def undo() -> None:
        for module in patched:
            module.boto_client_for = original  # type: ignore[attr-defined]

    return undo


# ---- the emulated AWS ---------------------------------------------------------------------------


class LocalAws:
    """moto with Step Functions execution and our handlers in-process; optionally a server for others.

    Use as a context manager, or ``start()``/``stop()``. Only one may run in a process at a time
    (moto's backends and the patches are process-wide).
    """

    _running: LocalAws | None = None

    def __init__(
        self,
        *,
        region: str = DEFAULT_REGION,
        server: bool = False,
        state_dir: Path | None = None,
        enforce_iam: bool = True,
    ) -> None:
        if server and state_dir is None:
            raise ConfigError("state_dir: the server mode records its endpoint there")
        self.region = region
        self.server = server
        self.state_dir = state_dir
        self.enforce_iam = enforce_iam
        self.authorizer = localiam.Authorizer(ACCOUNT_ID, region)
        self.endpoint: str | None = None
        self.stacks: list[LocalStack] = []
        self.sandbox_root: Path | None = None
        self._undo: list[Any] = []

    # lifecycle

    def __enter__(self) -> LocalAws:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from moto import mock_aws
        from moto.awslambda.models import LambdaFunction
        from moto.stepfunctions import models as sfn_models
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        if LocalAws._running is not None:
            raise LocalAwsError("a local AWS stack already runs in this process")
        LocalAws._running = self
        try:
            mock = mock_aws(config=SFN_CONFIG)
            mock.start()
            self._undo.append(mock.stop)
            stepfunctions_parser_backends.reset()
            self._undo.append(localdefinitions.install())  # each definition's grammar check once
            # CloudFormation creates state machines through this name: make them executable.
            original_backends = sfn_models.stepfunctions_backends
            executing: Any = stepfunctions_parser_backends
            sfn_models.stepfunctions_backends = executing
            self._undo.append(lambda: setattr(sfn_models, "stepfunctions_backends", original_backends))
            from etcdops_local.aws.ec2 import patch_compute
            from etcdops_local.compute import register_local_provider

            register_local_provider()  # RunbookStep opens compute.provider: local through the factory

            self._undo.append(patch_compute())  # launches and host commands refused where AWS refuses them
            original_invoke = LambdaFunction.invoke
            LambdaFunction.invoke = _patched_invoke(original_invoke)  # type: ignore[method-assign]
            self._undo.append(lambda: setattr(LambdaFunction, "invoke", original_invoke))
            self._start_sandboxes()
            self._undo.append(locallimits.install())
            self._set_env("AWS_DEFAULT_REGION", self.region)
            self._start_identities()
            if self.server:
                self._start_server()
        except BaseException:
            self.stop()
            raise

    def _start_sandboxes(self) -> None:
        """Handlers act with their sandbox's credentials and /tmp; each sandbox's /tmp lives under one root."""
        import shutil
        import tempfile

        self._undo.append(localsandbox.install())
        self.sandbox_root = Path(tempfile.mkdtemp(prefix="etcdops-lambda-"))
        root = self.sandbox_root

        def close() -> None:
            with _REGISTRY_LOCK:
                functions = list(_REGISTRY.values())
                _REGISTRY.clear()
            for function in functions:
                function.close()
            shutil.rmtree(root, ignore_errors=True)

        self._undo.append(close)

    def _start_identities(self) -> None:
        """The harness acts as an administrator; with ``enforce_iam`` every other request is authorized
        as AWS would (functions and state machines with their own roles: :mod:`etcdops_local.aws.iam`).
        Clients made without keys outside a sandbox carry no identity (``InvalidClientTokenId``)."""
        self.authorizer.create_admin()
        for name, value in DUMMY_CREDENTIALS.items():
            self._set_env(name.upper(), value)
        saved_default = boto3.DEFAULT_SESSION
        boto3.DEFAULT_SESSION = None  # a default session made before would keep its old credentials
        self._undo.append(lambda: setattr(boto3, "DEFAULT_SESSION", saved_default))
        if self.enforce_iam:
            self._undo.append(localiam.install(self.authorizer))
            self._undo.append(_patch_state_machine_clients(self.authorizer))
        records = os.environ.get(iam_records.RECORDS_ENV)
        if records:
            self._undo.append(lambda: self.authorizer.recorder.write(Path(records)))

    def _set_env(self, name: str, value: str) -> None:
        saved = os.environ.get(name)
        os.environ[name] = value

        def restore() -> None:
            if saved is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = saved

        self._undo.append(restore)

    def _start_server(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:  # flask and flask-cors come with the moto[server] extra
            raise LocalAwsError(f"the server mode needs moto[server] (pip install 'moto[server]'): {exc}") from exc

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._undo.append(server.stop)
        host, port = server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # Step Functions' own service clients find the server by MOTO_PORT when not intercepted.
        self._set_env("MOTO_PORT", str(port))

    def stop(self) -> None:
        if self._undo:
            self._abort_executions()
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep undoing the rest; say what could not be undone
                log.warning("local AWS teardown: %s: %s", type(exc).__name__, exc)
        if self.state_dir is not None and self.server:
            (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        if LocalAws._running is self:
            LocalAws._running = None

    def _abort_executions(self, wait: float = 5.0) -> None:
        """Stop running executions first, so none carries on against a torn-down emulation.

        moto's stop is asynchronous (the execution ends when its current step or Wait/Retry sleep
        does); wait up to ``wait`` seconds for that.
        """
        try:
            sfn = self.client("stepfunctions")
            stopping = []
            for machine in sfn.list_state_machines()["stateMachines"]:
                arn = machine["stateMachineArn"]
                for execution in sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]:
                    sfn.stop_execution(executionArn=execution["executionArn"], error="LocalStackStopped")
                    stopping.append(execution["executionArn"])
            deadline = time.monotonic() + wait
            for arn in stopping:
                wait_for_execution(sfn, arn, timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # best effort: the teardown goes on regardless
            log.warning("local AWS teardown: stopping executions: %s: %s", type(exc).__name__, exc)

    # clients

    def session(self) -> boto3.session.Session:
        """The harness's session in this process, as the administrator (intercepted by moto, so it needs
        no endpoint)."""
        return boto3.session.Session(region_name=self.region, **self.admin_credentials)

    @property
    def admin_credentials(self) -> dict[str, str]:
        admin = self.authorizer.admin
        if admin is None:
            raise LocalAwsError("the local AWS is not running")
        return {"aws_access_key_id": admin.access_key_id, "aws_secret_access_key": admin.secret_access_key}

    def function_session(self, stack: LocalStack, logical_id: str) -> boto3.session.Session:
        """A session acting as a stack function's role (what its handler's calls carry)."""
        role = stack.roles.get(logical_id)
        if role is None:
            raise NotFoundError(f"stack {stack.stack_name} has no function or state machine {logical_id}")
        c = self.authorizer.role_credentials(role, stack.functions.get(logical_id, logical_id))
        return boto3.session.Session(
            region_name=self.region,
            aws_access_key_id=c.access_key_id,
            aws_secret_access_key=c.secret_access_key,
            aws_session_token=c.session_token,
        )

    def client(self, service: str) -> Any:
        return self.session().client(service)

    # the stack

    def build_stack(
        self,
        template_path: Path,
        parameters: Mapping[str, str] | None = None,
        *,
        stack_name: str = DEFAULT_STACK_NAME,
    ) -> LocalStack:
        stack = build_stack(template_path, parameters, region=self.region, stack_name=stack_name)
        stack.endpoint = self.endpoint
        self.stacks.append(stack)
        if self.server and self.state_dir is not None:
            stack.save(self.state_dir)
        return stack

    def invoke(self, stack: LocalStack, logical_id: str, event: Any) -> Any:
        """Run a stack function's handler here and now; its exception is raised as :class:`InvocationError`."""
        return invoke_local(stack, logical_id, event)


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
    running = _require_running()
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


def _require_running() -> LocalAws:
    running = LocalAws._running
    if running is None:
        raise LocalAwsError("build_stack needs a running LocalAws (moto with Step Functions execution)")
    return running


def build_stack(
    template_path: Path,
    parameters: Mapping[str, str] | None = None,
    *,
    region: str = DEFAULT_REGION,
    stack_name: str = DEFAULT_STACK_NAME,
) -> LocalStack:
    """Translate ``template_path`` offline and create it in the running moto, with the local fixes."""
    running = _require_running()
    if running.region != region:
        raise LocalAwsError(f"region: the running local AWS is in {running.region}, not {region}")
    template_path = template_path.resolve()
    sam = read_template(template_path)
    values = effective_parameters(sam, parameters)
    cfn = translate(prepare_for_translation(sam, template_path.parent), values, region)
    substitute_definitions(cfn)

    with warnings.catch_warnings():
        # moto warns about each type it cannot create; _apply_skipped creates or lists them instead
        warnings.filterwarnings("ignore", message=r"Tried to parse .* but it's not supported")
        stack = _create(running.session(), cfn, template_path, values, parameters, region, stack_name)
    _register_functions(stack, sam, template_path.parent, cfn, running.sandbox_root)
    stack.credentials = running.admin_credentials
    for lid, role in stack.roles.items():
        running.authorizer.register(iam_records.principal_for(stack, lid, role))
    return stack


def _create(
    session: boto3.session.Session,
    cfn: dict[str, Any],
    template_path: Path,
    values: dict[str, str],
    parameters: Mapping[str, str] | None,
    region: str,
    stack_name: str,
) -> LocalStack:
    _put_dummy_code(session.client("s3"), cfn, region)
    in_use = _names_in_use(session)
    cloudformation = session.client("cloudformation")
    try:
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(cfn),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
    except Exception as exc:  # moto's errors are of many kinds; say which stack and why, once
        raise LocalAwsError(f"creating stack {stack_name} in moto: {type(exc).__name__}: {exc}") from exc
    description = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    if description["StackStatus"] != "CREATE_COMPLETE":
        raise LocalAwsError(f"stack {stack_name}: {description['StackStatus']}: {description.get('StackStatusReason')}")

    stack = LocalStack(
        stack_name=stack_name,
        region=region,
        account_id=ACCOUNT_ID,
        template_path=str(template_path),
        parameters=values,
        resources={},
        types={lid: r["Type"] for lid, r in cfn["Resources"].items()},
        outputs={o["OutputKey"]: o.get("OutputValue", "") for o in description.get("Outputs", [])},
    )
    paginator = cloudformation.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack_name):
        for summary in page["StackResourceSummaries"]:
            if summary.get("PhysicalResourceId"):
                stack.resources[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
    taken = [f"{stack.types[lid]} {name}" for lid, name in stack.resources.items()
             if name in in_use.get(stack.types.get(lid, ""), set())]  # fmt: skip
    if taken:
        raise LocalAwsError(
            f"stack {stack_name}: {', '.join(sorted(taken))} already exist(s) in this account and region "
            "(names are unique per account and region: CloudFormation fails the stack; derive the name from the stack)"
        )

    _apply_skipped(stack, cfn, session)
    lambda_client, sfn = session.client("lambda"), session.client("stepfunctions")
    for lid, name in stack.of_type("AWS::Lambda::Function").items():
        stack.functions[lid] = name
        stack.function_arns[lid] = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"
        stack.roles[lid] = lambda_client.get_function_configuration(FunctionName=name)["Role"]
    stack.state_machines = stack.of_type("AWS::StepFunctions::StateMachine")
    for lid, arn in stack.state_machines.items():
        stack.roles[lid] = sfn.describe_state_machine(stateMachineArn=arn)["roleArn"]
    return stack


def _names_in_use(session: boto3.session.Session) -> dict[str, set[str]]:
    """Physical names that the emulated services would silently reuse (their create calls overwrite or
    return the existing resource) where CloudFormation fails a stack instead. The services that refuse
    a duplicate themselves (SSM documents, secrets, buckets, tables, roles, log groups) need no list."""
    def names(service: str, operation: str, key: str, field: str) -> set[str]:
        pages = session.client(service).get_paginator(operation).paginate()
        return {item[field] for page in pages for item in page[key]}

    return {
        "AWS::CloudWatch::Dashboard": names("cloudwatch", "list_dashboards", "DashboardEntries", "DashboardName"),
        "AWS::SNS::Topic": names("sns", "list_topics", "Topics", "TopicArn"),
        "AWS::StepFunctions::StateMachine": names(
            "stepfunctions", "list_state_machines", "stateMachines", "stateMachineArn"
        ),
        "AWS::Events::Rule": names("events", "list_rules", "Rules", "Name"),
        "AWS::Lambda::Function": names("lambda", "list_functions", "Functions", "FunctionName"),
    }


def _put_dummy_code(s3: Any, cfn: Mapping[str, Any], region: str) -> None:
    """CloudFormation's Lambda wants its code objects to exist; ours run from the working tree."""
    kwargs: dict[str, Any] = {}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=CODE_BUCKET, **kwargs)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README", "etcdops local stack: the code runs from the working tree\n")
    for resource in cfn["Resources"].values():
        props = resource.get("Properties") or {}
        location = props.get("Code") or props.get("Content") or {}
        if isinstance(location, dict) and location.get("S3Bucket") == CODE_BUCKET:
            s3.put_object(Bucket=CODE_BUCKET, Key=location["S3Key"], Body=buffer.getvalue())


_NOT_EMULATED = {
    # moto evaluates bucket policies, but takes any Condition it cannot check (aws:SecureTransport) as
    # a Deny: the template's deny-non-TLS policy would refuse every request. Locally there is no TLS
    # to enforce, so the policy is left out.
    "AWS::S3::BucketPolicy": "not applied: moto would deny every request on its aws:SecureTransport condition",
    "AWS::ApiGatewayV2::Api": "no API Gateway locally: approve with `etcdops approve EXECUTION`",
    "AWS::ApiGatewayV2::Stage": "no API Gateway locally: approve with `etcdops approve EXECUTION`",
}
_INTS = {"Period", "EvaluationPeriods", "DatapointsToAlarm"}
_FLOATS = {"Threshold"}
_BOOLS = {"ActionsEnabled", "ReturnData"}


def _api_types(value: Any) -> Any:
    if isinstance(value, list):
        return [_api_types(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in _INTS:
            out[key] = int(item)
        elif key in _FLOATS:
            out[key] = float(item)
        elif key in _BOOLS:
            out[key] = item if isinstance(item, bool) else str(item).lower() == "true"
        else:
            out[key] = _api_types(item)
    return out


def _apply_skipped(stack: LocalStack, cfn: Mapping[str, Any], session: boto3.session.Session) -> None:
    """Create what moto's CloudFormation skips (alarms, SNS subscriptions), mend what it gets wrong (KMS key policies,
    layer ids), and list what is left out on purpose (``skipped``) or that nobody creates (``unhandled``)."""
    from moto.cloudformation.models import cloudformation_backends
    from moto.cloudformation.parsing import clean_json, get_model_map

    backend = cloudformation_backends[stack.account_id][stack.region]
    fake = next(s for s in backend.stacks.values() if s.name == stack.stack_name and s.status == "CREATE_COMPLETE")
    resource_map = fake.resource_map
    supported = get_model_map()
    cloudwatch, sns = session.client("cloudwatch"), session.client("sns")
    for lid, resource in cfn["Resources"].items():
        kind = resource["Type"]
        made: Any = resource_map.get(lid)
        if lid not in stack.resources and isinstance(getattr(made, "arn", None), str):
            stack.resources[lid] = made.arn  # e.g. a LayerVersion: moto lists no physical id for it
        if kind in supported:
            continue
        condition = resource.get("Condition")
        if condition and not resource_map.lazy_condition_map[condition]:
            continue
        props = _api_types(clean_json(resource.get("Properties") or {}, resource_map))
        if kind == "AWS::CloudWatch::Alarm":
            props.setdefault("AlarmName", f"{stack.stack_name}-{lid}")
            if cloudwatch.describe_alarms(AlarmNames=[props["AlarmName"]])["MetricAlarms"]:
                raise LocalAwsError(
                    f"stack {stack.stack_name}: AWS::CloudWatch::Alarm {props['AlarmName']} already exists in this "
                    "account and region (CloudFormation fails the stack; derive the name from the stack)"
                )
            cloudwatch.put_metric_alarm(**props)
            stack.alarms[lid] = stack.resources[lid] = props["AlarmName"]
        elif kind == "AWS::SNS::Subscription":
            attributes = {
                k: props[k] if isinstance(props[k], str) else json.dumps(props[k])
                for k in ("FilterPolicy", "RawMessageDelivery", "RedrivePolicy")
                if k in props
            }
            subscribed = sns.subscribe(
                TopicArn=props["TopicArn"],
                Protocol=props["Protocol"],
                Endpoint=props["Endpoint"],
                Attributes=attributes,
            )
            stack.resources[lid] = subscribed["SubscriptionArn"]
        elif kind == "AWS::SecretsManager::Secret":
            # moto's CloudFormation skips secrets; GenerateSecretString becomes a random value here
            created = session.client("secretsmanager").create_secret(
                Name=props.get("Name") or f"{stack.stack_name}-{lid}",
                Description=props.get("Description", ""),
                SecretString=props.get("SecretString") or secrets.token_urlsafe(48),
            )
            stack.resources[lid] = created["ARN"]
            resource_map._parsed_resources[lid] = _Made(created["ARN"])  # so that Ref resolves in policies
        elif kind == "AWS::Lambda::EventInvokeConfig":  # moto has no model: invoke_async reads it
            function, settings = _invoke_config(stack, lid, props)
            stack.invoke_configs[function] = settings
            stack.resources[lid] = f"{props['FunctionName']}:{props.get('Qualifier', '$LATEST')}"
        elif kind in _NOT_EMULATED:
            stack.skipped[lid] = f"{kind}: {_NOT_EMULATED[kind]}"
        elif lid not in stack.resources:
            stack.unhandled.append(f"{lid} ({kind})")
    from moto.kms.models import kms_backends

    for key_id in stack.of_type("AWS::KMS::Key").values():  # moto keeps a CloudFormation KeyPolicy as a dict,
        key = kms_backends[stack.account_id][stack.region].keys.get(key_id)  # then every KMS call fails on it
        if key is not None and isinstance(key.policy, dict):
            key.policy = json.dumps(key.policy)
    from moto.ssm.models import ssm_backends

    documents = ssm_backends[stack.account_id][stack.region]._documents
    for name in stack.of_type("AWS::SSM::Document").values():  # the same for an SSM document's Content:
        for version in getattr(documents.get(name), "versions", {}).values():  # DescribeDocument fails on it
            if isinstance(version.content, dict):
                version.content = json.dumps(version.content)
    for key, output in (cfn.get("Outputs") or {}).items():
        if key in stack.outputs and stack.outputs[key].startswith("<moto."):  # a Ref moto did not turn into an id
            value = clean_json(output.get("Value"), resource_map)
            stack.outputs[key] = str(getattr(value, "arn", value))
    _install_role_policies(stack, cfn, resource_map)


@dataclass(frozen=True)
class _Made:
    """A resource created here (not by moto's CloudFormation), as ``Ref`` resolves it."""

    physical_resource_id: str

    def get_cfn_attribute(self, name: str) -> Any:
        if name == "Arn" and self.physical_resource_id.startswith("arn:"):
            return self.physical_resource_id
        raise NotImplementedError(name)


def _install_role_policies(stack: LocalStack, cfn: Mapping[str, Any], resource_map: Any) -> None:
    """Each role's inline policies exactly as the transformed template says, as JSON documents.

    moto's CloudFormation stores them as Python reprs and resolves a Ref to a resource it skipped to
    None; the role policies are what the local IAM enforces, so they are written again here, resolved
    against every resource of the stack (a reference that still resolves to nothing is an error).
    """
    from moto.cloudformation.parsing import clean_json
    from moto.iam.models import iam_backends

    from etcdops_local.aws.iampolicy import read_policy

    iam = iam_backends[stack.account_id]["aws"]
    for lid, resource in cfn["Resources"].items():
        if resource.get("Type") != "AWS::IAM::Role" or lid not in stack.resources:
            continue
        role_name = stack.resources[lid]
        for policy in (resource.get("Properties") or {}).get("Policies") or []:
            name = str(clean_json(policy["PolicyName"], resource_map))
            document = clean_json(_drop_no_value(policy["PolicyDocument"], resource_map), resource_map)
            text = json.dumps(document)
            if _strings_in(document) or "<moto." in text:
                raise LocalAwsError(f"{lid}: policy {name} refers to something the local stack did not create: {text}")
            read_policy(f"{lid}.{name}", document)  # a policy the local evaluator cannot read fails the build
            iam.get_role(role_name).put_policy(name, text)  # as CloudFormation puts it (no Version required)


def _invoke_config(stack: LocalStack, lid: str, props: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(function logical id, its settings) of an EventInvokeConfig whose names moto has resolved."""
    by_name = {name: function for function, name in stack.of_type("AWS::Lambda::Function").items()}
    by_arn = {f"arn:aws:lambda:{stack.region}:{stack.account_id}:function:{n}": f for n, f in by_name.items()}
    function = by_name.get(str(props.get("FunctionName")))
    if function is None:
        raise LocalAwsError(f"{lid}: FunctionName {props.get('FunctionName')!r} is not a function of this stack")
    settings: dict[str, Any] = {"MaximumRetryAttempts": int(props.get("MaximumRetryAttempts", 2))}
    destinations = props.get("DestinationConfig") or {}
    if (destinations.get("OnSuccess") or {}).get("Destination") is not None:
        raise LocalAwsError(f"{lid}: OnSuccess destinations are not emulated locally")
    destination = (destinations.get("OnFailure") or {}).get("Destination")
    if destination is not None:
        target = by_arn.get(str(destination))
        if target is None:
            raise LocalAwsError(f"{lid}: OnFailure destination {destination}: only this stack's functions are emulated")
        settings["OnFailure"] = target
    return function, settings


def _drop_no_value(node: Any, resource_map: Any) -> Any:
    """List items that are ``Fn::If`` choosing ``AWS::NoValue`` left out, as CloudFormation leaves them out
    (moto would keep them as None, which reads like a reference to a resource nobody made)."""
    if isinstance(node, dict):
        return {k: _drop_no_value(v, resource_map) for k, v in node.items()}
    if not isinstance(node, list):
        return node
    kept = []
    for item in node:
        if isinstance(item, dict) and set(item) == {"Fn::If"}:
            condition, then, otherwise = item["Fn::If"]
            chosen = then if resource_map.lazy_condition_map[condition] else otherwise
            if chosen == {"Ref": "AWS::NoValue"}:
                continue
        kept.append(_drop_no_value(item, resource_map))
    return kept


def _strings_in(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings_in(v)]
    return [value] if value is None or value == "None" else []


def _register_functions(
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


# ---- a long-running process for `etcdops local up` ---------------------------------------------------


def serve(
    state_dir: Path,
    template_path: Path,
    *,
    parameters: Mapping[str, str] | None = None,
    schedule_overrides: Mapping[str, str] | None = None,
    config_document: str | None = None,
    region: str = DEFAULT_REGION,
) -> None:
    """Run the AWS side of the local stack until SIGTERM or SIGINT: the server, the stack, the timer.

    ``config_document`` (the cluster configuration) is put into the template's ClusterConfigParameter.
    ``<state_dir>/aws.json`` appears once everything is ready and is removed on the way out.
    """
    import signal

    from etcdops_local.aws.schedule import LocalScheduler

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parameters = dict(parameters or {})
    if config_document is not None:  # the stack watches the configured cluster (ClusterName has no default)
        from etcdops.domain.config import loads_config

        parameters.setdefault("ClusterName", loads_config(config_document, "--config").name)
    with LocalAws(region=region, server=True, state_dir=state_dir) as aws:
        stack = build_stack(template_path, parameters, region=region)
        stack.endpoint = aws.endpoint
        if stack.topic_arn:  # SNS keeps no copy of what it sent: a queue on the topic does
            from etcdops_local.notifications import subscribe_queue

            queue = f"{stack.stack_name}-notifications"
            stack.notification_queue = subscribe_queue(aws.client("sns"), aws.client("sqs"), stack.topic_arn, queue)
        if config_document is not None and "ClusterConfigParameter" in stack.parameters:
            name = stack.parameters["ClusterConfigParameter"]
            aws.client("ssm").put_parameter(Name=name, Type="SecureString", Value=config_document, Overwrite=True)
        with LocalScheduler.for_stack(stack, schedule_overrides):
            stack.save(state_dir)
            stop.wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m etcdops_local.aws.stack --state-dir DIR [--template T] [--parameter K=V] [--schedule K=EXPR]
    [--config F]``: :func:`serve` as a process of its own."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m etcdops_local.aws.stack", description=serve.__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--schedule", action="append", default=[], metavar="NAME=EXPRESSION")
    parser.add_argument("--config", type=Path, help="the cluster configuration document to put into SSM")
    parser.add_argument("--region", default=DEFAULT_REGION)
    args = parser.parse_args(argv)

    def pairs(items: list[str], what: str) -> dict[str, str]:
        if any("=" not in item for item in items):
            parser.error(f"--{what}: expected NAME=VALUE")
        return dict(item.split("=", 1) for item in items)

    serve(
        args.state_dir,
        args.template,
        parameters=pairs(args.parameter, "parameter"),
        schedule_overrides=pairs(args.schedule, "schedule"),
        config_document=args.config.read_text() if args.config else None,
        region=args.region,
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Run the imported module, not this __main__ copy: localschedule imports etcdops_local.aws.stack, and the
    # registry of local functions must be one.
    from etcdops_local.aws import stack as localaws

    sys.exit(localaws.main())


# ---- the AWS side as a background process of the local stack ----------------------------------------

SERVER_PID_FILE = "aws.pid"
LOCAL_SCHEDULES = {"HealthCheckSchedule": "rate(10 seconds)"}


def spawn_server(
    state_dir: Path,
    template_path: Path,
    config_path: Path,
    *,
    schedules: Mapping[str, str] = LOCAL_SCHEDULES,
    timeout: float = 90.0,
) -> int:
    """Start :func:`serve` as a process of its own session (it outlives the command that starts it),
    wait until its ``aws.json`` is written, and return its pid. Its output goes to ``aws.log``."""
    import subprocess

    if server_pid(state_dir):
        raise LocalAwsError(f"the local AWS side already runs (pid {server_pid(state_dir)})")
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "etcdops_local.aws.stack",
        "--state-dir", str(state_dir), "--template", str(template_path),
        "--config", str(config_path),
        *(f"--schedule={name}={expression}" for name, expression in schedules.items()),
    ]  # fmt: skip
    with open(state_dir / "aws.log", "ab") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
        )
    (state_dir / SERVER_PID_FILE).write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while not (state_dir / STATE_FILE).exists():
        if process.poll() is not None:
            raise LocalAwsError(f"the local AWS side exited during start-up; see {state_dir / 'aws.log'}")
        if time.monotonic() > deadline:
            process.kill()
            raise LocalAwsError(f"the local AWS side was not ready after {timeout:.0f} s; see {state_dir / 'aws.log'}")
        time.sleep(0.2)
    return process.pid


def server_pid(state_dir: Path) -> int | None:
    """The pid of this state dir's AWS side when it runs, else None."""
    try:
        pid = int((state_dir / SERVER_PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"etcdops_local.aws.stack" in cmdline and str(state_dir).encode() in cmdline else None


def stop_server(state_dir: Path, timeout: float = 15.0) -> bool:
    """SIGTERM the AWS side and wait for it; True when one was running."""
    import signal

    pid = server_pid(state_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while server_pid(state_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if server_pid(state_dir) is not None:
        os.kill(pid, signal.SIGKILL)
    (state_dir / SERVER_PID_FILE).unlink(missing_ok=True)
    return True
