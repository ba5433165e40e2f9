"""The EC2 provider's host commands: SSM Run Command documents sent to the hosts (or an identical one
still running joined), waited for under a deadline, their outcome per host."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error_code
from etcdops.adapters.compute.ec2_common import CONTROL_PLANE_TAG, _api_error
from etcdops.domain.compute.base import (
    DOCUMENTS,
    ActionResult,
    ActionStatus,
    Host,
    HostActionResult,
    InitialState,
    action_spec,
    check_initial_cluster,
    start_flags,
)
from etcdops.domain.compute.errors import (
    ActionParameterError,
    ComputeConfigError,
    HostCommandFailedError,
    HostCommandTimeoutError,
    HostNotFoundError,
    HostNotReadyError,
)

_TERMINAL: tuple[ActionStatus, ...] = ("Success", "Failed", "Cancelled", "TimedOut")
_IN_FLIGHT = ("Pending", "InProgress", "Delayed")


class Ec2Commands:
    """The host command part of :class:`etcdops.adapters.compute.ec2.Ec2ComputeProvider`."""

    cluster: str
    ssm: Any
    max_wait_seconds: float
    poll_seconds: float
    _sleep: Callable[[float], None]
    _clock: Callable[[], float]

    if TYPE_CHECKING:

        def document_name(self, key: str) -> str: ...
        def hosts(self) -> list[Host]: ...
        def _instances(self, filters: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]: ...
        def _host(self, instance: Mapping[str, Any]) -> Host: ...

    def start_etcd(
        self, host: Host, initial_cluster: str, initial_state: InitialState, flags: Mapping[str, int] | None = None
    ) -> None:
        check_initial_cluster(host, initial_cluster, initial_state)
        extra = start_flags(flags)  # StartEtcd writes them into etcd.env as ETCD_* variables
        parameters = DOCUMENTS["StartEtcd"].ssm_parameters(
            {
                "member_name": host.name,
                "peer_url": host.peer_url,
                "client_url": host.client_url,
                "initial_cluster": initial_cluster,
                "initial_state": initial_state,
                **({"extra_flags": " ".join(extra)} if extra else {}),
            }
        )
        self._command("StartEtcd", [host], parameters)

    def stop_etcd(self, host: Host) -> None:
        self._command("StopEtcd", [host], {})

    def run_action(
        self, action: str, hosts: Sequence[Host] | None = None, parameters: Mapping[str, str] | None = None
    ) -> ActionResult:
        spec = action_spec(action)
        ssm_parameters = spec.ssm_parameters(dict(parameters or {}))
        targets = self._group(spec.group) if hosts is None else list(hosts)
        if not targets:
            raise HostNotFoundError(f"{action}: no running {spec.group} hosts of {self.cluster} to run it on")
        return self._command(spec.key, targets, ssm_parameters, action)

    def _group(self, group: str) -> list[Host]:
        if group == "etcd":
            return [h for h in self.hosts() if h.state == "running"]
        return self.control_plane_hosts()

    def control_plane_hosts(self) -> list[Host]:
        """The running instances tagged ``etcdops:control-plane=<cluster>`` (where the Kubernetes hooks run)."""
        found = self._instances(
            [
                {"Name": f"tag:{CONTROL_PLANE_TAG}", "Values": [self.cluster]},
                {"Name": "instance-state-name", "Values": ["running"]},
            ]
        )
        return [self._host(instance) for instance, _ in found]

    def _command(
        self, key: str, hosts: Sequence[Host], parameters: Mapping[str, str], action: str | None = None
    ) -> ActionResult:
        """Send document ``key`` to ``hosts`` (or join the same command still running) and wait."""
        spec = DOCUMENTS[key]
        document = self.document_name(key)
        ids = sorted({h.host_id for h in hosts})
        names = {h.host_id: h.name for h in hosts}
        fingerprint = hashlib.sha256(json.dumps([document, ids, dict(parameters)], sort_keys=True).encode())
        comment = f"etcdops {self.cluster} {key} {fingerprint.hexdigest()[:16]}"[:100]
        command_id = self._in_flight(ids[0], document, comment) or self._send(key, document, ids, parameters, comment)
        deadline = self._clock() + min(spec.timeout_seconds + 60, self.max_wait_seconds)
        results: dict[str, HostActionResult] = {}
        while True:
            for instance_id in ids:
                if instance_id not in results:
                    result = self._invocation(command_id, instance_id, names.get(instance_id, ""))
                    if result is not None:
                        results[instance_id] = result
            if len(results) == len(ids):
                break
            if self._clock() >= deadline:
                waiting = ", ".join(i for i in ids if i not in results)
                raise HostCommandTimeoutError(
                    f"{document} (command {command_id}) still running on {waiting}; it is safe to wait again",
                    command_id,
                )
            self._sleep(self.poll_seconds)
        outcome = ActionResult(action or key, command_id, tuple(results[i] for i in ids))
        if not outcome.ok:
            failed = "; ".join(f"{h.name or h.host_id} {h.status}: {h.last_line('no output')}" for h in outcome.failed)
            raise HostCommandFailedError(f"{document} (command {command_id}) failed: {failed}", outcome)
        return outcome

    def _in_flight(self, instance_id: str, document: str, comment: str) -> str | None:
        """The id of the same command, sent by an earlier try and still running, if there is one."""
        try:
            commands = self.ssm.list_commands(InstanceId=instance_id)["Commands"]
        except (ClientError, BotoCoreError) as exc:
            raise _api_error(f"listing commands of {instance_id}", exc) from exc
        for command in commands:
            if (
                command.get("Comment") == comment
                and command.get("DocumentName") == document
                and command.get("Status") in _IN_FLIGHT
            ):
                return str(command["CommandId"])
        return None

    def _send(self, key: str, document: str, ids: list[str], parameters: Mapping[str, str], comment: str) -> str:
        try:
            response = self.ssm.send_command(
                InstanceIds=ids,
                DocumentName=document,
                Parameters={name: [value] for name, value in parameters.items()},
                Comment=comment,
                TimeoutSeconds=300,  # for delivery; the document bounds the run itself
            )
        except ClientError as exc:
            code = aws_error_code(exc)
            if code == "InvalidInstanceId":
                raise HostNotReadyError(
                    f"{document}: instance(s) {', '.join(ids)} not online in SSM yet (still booting?)"
                ) from None
            if code == "InvalidDocument":
                raise ComputeConfigError(
                    f"compute.ssm_documents.{key}: SSM document {document} does not exist"
                ) from None
            if code in ("InvalidParameters", "ValidationException"):
                raise ActionParameterError(f"{document}: {exc}") from None
            raise _api_error(f"sending {document}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"sending {document}", exc) from exc
        return str(response["Command"]["CommandId"])

    def _invocation(self, command_id: str, instance_id: str, name: str) -> HostActionResult | None:
        try:
            invocation = self.ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except ClientError as exc:
            if aws_error_code(exc) == "InvocationDoesNotExist":
                return None  # right after sending, the invocation is not visible yet
            raise _api_error(f"reading command {command_id} on {instance_id}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"reading command {command_id} on {instance_id}", exc) from exc
        status = invocation.get("Status")
        for terminal in _TERMINAL:
            if status == terminal:
                output = (invocation.get("StandardOutputContent") or "") + (
                    invocation.get("StandardErrorContent") or ""
                )
                return HostActionResult(instance_id, name, terminal, output[-4000:])
        return None
