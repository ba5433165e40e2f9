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

The parts: :mod:`~etcdops_local.aws.stack_record` (what a built stack records, and sessions on it from
other processes), :mod:`~etcdops_local.aws.emulator` (:class:`LocalAws`), :mod:`~etcdops_local.aws.build`
(:func:`build_stack` and the fixes), :mod:`~etcdops_local.aws.functions` (handlers run in-process),
:mod:`~etcdops_local.aws.invoke` (Lambda's invocation types); this module re-exports them and runs the
AWS side as a process of its own (``python -m etcdops_local.aws.stack``, :func:`spawn_server`).

Two ways to run it: in-process (``LocalAws()``: moto's mock of botocore, for tests and one-process
tools), or as a server (``LocalAws(server=True, state_dir=...)``: also a ``ThreadedMotoServer`` on
127.0.0.1 and a free port, recorded in ``<state_dir>/aws.json`` so that other processes reach it with
:func:`local_boto3_session` / :func:`client`). Handlers always run in the process that owns it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from etcdops_local.aws.build import build_stack
from etcdops_local.aws.emulator import SFN_CONFIG, LocalAws, require_running
from etcdops_local.aws.errors import LocalAwsError
from etcdops_local.aws.executions import (
    Step,
    execution_history,
    execution_name,
    start_execution,
    wait_for_execution,
)
from etcdops_local.aws.functions import (
    DEFAULT_EPHEMERAL_MB,
    REQUIRE_EPHEMERAL_LIMIT_ENV,
    LambdaContext,
    LocalFunction,
    run_handler,
)
from etcdops_local.aws.invoke import InvocationError, failure_record, invoke_async, invoke_local
from etcdops_local.aws.stack_record import (
    ACCOUNT_ID,
    DEFAULT_REGION,
    DEFAULT_STACK_NAME,
    STATE_FILE,
    LocalSession,
    LocalStack,
    client,
    load_local_stack,
    local_boto3_session,
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

__all__ = [  # what lives in the modules named above, still importable from here
    "ACCOUNT_ID",
    "CODE_BUCKET",
    "DEFAULT_EPHEMERAL_MB",
    "DEFAULT_REGION",
    "DEFAULT_STACK_NAME",
    "DUMMY_CREDENTIALS",
    "REQUIRE_EPHEMERAL_LIMIT_ENV",
    "SFN_CONFIG",
    "STATE_FILE",
    "InvocationError",
    "LambdaContext",
    "LocalAws",
    "LocalAwsError",
    "LocalFunction",
    "LocalSession",
    "LocalStack",
    "Step",
    "build_stack",
    "client",
    "effective_parameters",
    "execution_history",
    "execution_name",
    "failure_record",
    "function_code",
    "invoke_async",
    "invoke_local",
    "load_local_stack",
    "local_boto3_session",
    "prepare_for_translation",
    "read_template",
    "require_running",
    "run_handler",
    "start_execution",
    "substitute_definitions",
    "translate",
    "wait_for_execution",
]

log = logging.getLogger("etcdops_local.aws.stack")


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
