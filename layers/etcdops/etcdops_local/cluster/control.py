"""Process control of a local cluster's members: list them, kill, pause, resume and stop them."""

from __future__ import annotations

import os
import signal
import time

from etcdops.domain.errors import UsageError
from etcdops_local.cluster.files import ClusterFiles
from etcdops_local.cluster.processes import MemberProcess, ProcessState


class ProcessControl(ClusterFiles):
    """Signals to the members' processes, as a host is lost, hangs or is shut down."""

    def ps(self) -> list[MemberProcess]:
        return [
            MemberProcess(
                name=m.name,
                pid=m.pid if self._state_of(m) != "stopped" else None,
                client_urls=(m.client_url,),
                peer_urls=(m.peer_url,),
                data_dir=str(self.data_dir(m.name)),
                state=self._state_of(m),
            )
            for m in self.state().members
        ]

    def _signal(self, name: str, signum: signal.Signals, expect: tuple[ProcessState, ...]) -> MemberProcess:
        member = self.member(name)
        current = self._state_of(member)
        if current not in expect:
            raise UsageError(f"member {name} is {current}")
        assert member.pid is not None
        os.kill(member.pid, signum)
        if signum == signal.SIGKILL:
            _wait_for(lambda: self._state_of(member) == "stopped", 5.0)
        return next(p for p in self.ps() if p.name == name)

    def kill(self, name: str) -> MemberProcess:
        """SIGKILL a member, as if its host was lost."""
        return self._signal(name, signal.SIGKILL, ("running", "paused"))

    def pause(self, name: str) -> MemberProcess:
        """SIGSTOP a member: it keeps its sockets but answers nothing, like a hung host."""
        return self._signal(name, signal.SIGSTOP, ("running",))

    def resume(self, name: str) -> MemberProcess:
        return self._signal(name, signal.SIGCONT, ("paused",))

    def stop_member(self, name: str, *, timeout: float = 10.0) -> None:
        member = self.member(name)
        if self._state_of(member) == "stopped" or member.pid is None:
            return
        os.kill(member.pid, signal.SIGTERM)
        os.kill(member.pid, signal.SIGCONT)  # a paused member must run to handle SIGTERM
        if not _wait_for(lambda: self._state_of(member) == "stopped", timeout):
            os.kill(member.pid, signal.SIGKILL)
            _wait_for(lambda: self._state_of(member) == "stopped", 5.0)


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False
