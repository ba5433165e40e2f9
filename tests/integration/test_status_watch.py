"""``etcdops status --watch`` on a real cluster, with no autopilot beside it (``local up --no-autopilot``).

What it shows of the autopilot's last decision (the stack's HealthCheck, read from its state table) is
tested with the emulated stack in tests/e2e/test_cli_stack.py and tests/e2e/test_autopilot.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.integration


@contextmanager
def status_watch(
    cluster: LocalCluster, *options: str, stderr: int = subprocess.PIPE
) -> Iterator[subprocess.Popen[str]]:
    """``etcdops status --watch`` on ``cluster`` (refreshed every 0.5 s) as a process of its own, its
    output a text pipe; the process is killed on the way out unless it has ended."""
    command = [sys.executable, "-m", "etcdops_local.cli.main", "status", "--watch", *options, "--interval", "0.5"]
    command += ["--state-dir", str(cluster.state_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_status_watch_refreshes_until_ctrl_c_and_makes_up_no_decision(cluster: LocalCluster) -> None:
    with status_watch(cluster, "--json") as process:
        assert process.stdout is not None
        first, second = json.loads(process.stdout.readline()), json.loads(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)

    assert code == 0
    assert first["status"]["has_quorum"] is True and len(first["status"]["members"]) == 3
    assert second["status"]["has_quorum"] is True
    assert first["last_round"] is None and second["last_round"] is None  # no autopilot here: none to show


def test_status_watch_ends_on_ctrl_c_while_its_reads_hang(cluster: LocalCluster) -> None:
    # two members frozen: every round then waits on reads that never answer (the probe's gRPC
    # calls, the /version read) until the probe deadline, so Ctrl-C lands while they are in flight
    try:
        with status_watch(cluster, "--json", stderr=subprocess.DEVNULL) as process:
            assert process.stdout is not None
            assert json.loads(process.stdout.readline())["status"]["has_quorum"] is True
            cluster.pause("m1")
            cluster.pause("m2")
            while json.loads(process.stdout.readline())["status"]["has_quorum"]:
                pass  # a round that began before the members froze
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=30)  # a hang detector, not a measure of promptness
    finally:
        cluster.resume("m1")
        cluster.resume("m2")

    assert code == 0


def test_status_watch_for_people_says_there_is_no_decision_without_the_autopilot(cluster: LocalCluster) -> None:
    lines: list[str] = []
    with status_watch(cluster) as process:
        assert process.stdout is not None
        while not any(line.startswith("last decision: ") for line in lines):
            line = process.stdout.readline()
            assert line, "status --watch ended early"
            lines.append(line)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0

    text = "".join(lines)
    assert "QUORUM, leader" in text and "quorum margin 1" in text
    assert "last decision: none yet (the autopilot runs with `etcdops local up`, unless --no-autopilot)\n" in text
