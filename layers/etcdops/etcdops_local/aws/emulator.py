"""The emulated AWS: moto with Step Functions execution, our handlers in-process, IAM enforced as in AWS,
optionally a server for other processes (see :mod:`etcdops_local.aws.stack` for what is mended in moto)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3

from etcdops.domain.errors import ConfigError, NotFoundError
from etcdops_local.aws import definitions as localdefinitions
from etcdops_local.aws import iam as localiam
from etcdops_local.aws import iam_records, threadsafe
from etcdops_local.aws import limits as locallimits
from etcdops_local.aws import sandbox as localsandbox
from etcdops_local.aws.errors import LocalAwsError
from etcdops_local.aws.executions import wait_for_execution
from etcdops_local.aws.functions import _REGISTRY, _REGISTRY_LOCK
from etcdops_local.aws.iamtrust import STATES, install_create_role_check, role_service
from etcdops_local.aws.invoke import _patched_invoke, invoke_local
from etcdops_local.aws.stack_record import ACCOUNT_ID, DEFAULT_REGION, DEFAULT_STACK_NAME, STATE_FILE, LocalStack
from etcdops_local.aws.templates import DUMMY_CREDENTIALS

log = logging.getLogger("etcdops_local.aws.stack")

# Not lambda.use_docker=False: that swaps in a backend whose invoke echoes the payload, past our patch.
SFN_CONFIG: Any = {"stepfunctions": {"execute_state_machine": True}}


def _patch_state_machine_clients(authorizer: localiam.Authorizer) -> Any:
    """A state machine's service calls (its ``lambda:invoke`` tasks) act with the state machine's role,
    so its policy is enforced as in AWS (moto signs them with a fixed dummy key). Returns the undo."""
    from botocore.config import Config
    from moto.core.models import botocore_stubber
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds
    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for
    # Executions run their tasks in threads of their own: clients are made from one session of ours under a
    # lock (making clients through one session from several threads at once can fail; boto3's default
    # session is also the tests' and the CLI's)
    session = boto3.session.Session()
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        role = getattr(state_credentials, "role_arn", None)
        keys: dict[str, Any] = {"aws_access_key_id": "ak", "aws_secret_access_key": "sk"}
        if role:
            c = authorizer.role_credentials(role, "states", STATES)
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
        with lock:
            return session.client(service, region_name=region, config=config, **keys)

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


def _log_interpreter_faults() -> Any:
    """A task that fails with neither a service's nor a function's error ends as ``States.Runtime`` with only
    the exception's text as its cause (a fault of the emulator, never a path of ours): log its traceback too,
    so a test that meets one says where. Returns the undo."""
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEventException
    from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState

    original = ExecutionState._from_error

    def _from_error(state: Any, env: Any, ex: Exception) -> Any:
        if not isinstance(ex, FailureEventException):
            name = getattr(state, "name", "?")
            log.error("state %r failed in the emulator: %s: %s", name, type(ex).__name__, ex, exc_info=ex)
        return original(state, env, ex)

    ExecutionState._from_error = _from_error  # type: ignore[method-assign,assignment]
    return lambda: setattr(ExecutionState, "_from_error", original)


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
            self._undo.append(threadsafe.install())  # requests from many threads, each served whole
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
            self._undo.append(install_create_role_check())  # a role's trust policy as AWS reads it
            original_invoke = LambdaFunction.invoke
            LambdaFunction.invoke = _patched_invoke(original_invoke)  # type: ignore[method-assign]
            self._undo.append(lambda: setattr(LambdaFunction, "invoke", original_invoke))
            self._undo.append(_log_interpreter_faults())
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
        service = role_service(stack.state_machines, logical_id)
        c = self.authorizer.role_credentials(role, stack.functions.get(logical_id, logical_id), service)
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
        from etcdops_local.aws.build import build_stack  # the build imports this module

        stack = build_stack(template_path, parameters, region=self.region, stack_name=stack_name)
        stack.endpoint = self.endpoint
        self.stacks.append(stack)
        if self.server and self.state_dir is not None:
            stack.save(self.state_dir)
        return stack

    def invoke(self, stack: LocalStack, logical_id: str, event: Any) -> Any:
        """Run a stack function's handler here and now; its exception is raised as :class:`InvocationError`."""
        return invoke_local(stack, logical_id, event)


def require_running() -> LocalAws:
    running = LocalAws._running
    if running is None:
        raise LocalAwsError("build_stack needs a running LocalAws (moto with Step Functions execution)")
    return running
