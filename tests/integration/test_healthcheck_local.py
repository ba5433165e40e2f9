"""The local stack's health loop and ``etcdops status --watch`` on a real cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from etcdops.app.healthcheck import HealthRoundResult
from etcdops.domain.policy import Action
from etcdops_local.cluster import LocalCluster
from etcdops_local.health_loop import LAST_ROUND, read_last_round, run_local_health_loop

pytestmark = pytest.mark.integration


def test_the_local_loop_runs_rounds_on_its_timer_and_writes_the_last_decision(cluster: LocalCluster) -> None:
    seen: list[HealthRoundResult] = []

    loop = run_local_health_loop(cluster.state_dir, 0.2, rounds=3, on_round=seen.append)

    assert loop.interval == 0.2 and len(seen) == 3
    assert all(r.decision is not None and r.decision.action in (Action.NONE, Action.NOTIFY) for r in seen)
    last = read_last_round(cluster.state_dir)
    assert last is not None and (cluster.state_dir / LAST_ROUND).is_file()
    assert last["cluster"] == "local" and last["decision"]["reason"] == seen[-1].decision.reason  # type: ignore[union-attr]
    assert last["health"]["has_quorum"] is True and last["metrics"]["HasLeader"] == 1
    # each incident is announced in the round that found it, never again
    subjects = [subject for subject, _, _ in loop.notifier.messages]
    assert len(subjects) == len(set(subjects))


def test_the_loop_stops_when_asked(cluster: LocalCluster) -> None:
    stop = threading.Event()
    rounds: list[HealthRoundResult] = []

    def one_then_stop(result: HealthRoundResult) -> None:
        rounds.append(result)
        stop.set()

    run_local_health_loop(cluster.state_dir, "rate(1 hour)", stop=stop, on_round=one_then_stop)

    assert len(rounds) == 1  # it did not wait an hour for the next firing


def test_status_watch_refreshes_with_the_last_decision_until_ctrl_c(cluster: LocalCluster) -> None:
    run_local_health_loop(cluster.state_dir, 0.2, rounds=1)
    command = [sys.executable, "-m", "etcdops_local.cli.main", "status", "--watch", "--json", "--interval", "0.5"]
    command += ["--state-dir", str(cluster.state_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first, second = json.loads(process.stdout.readline()), json.loads(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert code == 0
    assert first["status"]["has_quorum"] is True and len(first["status"]["members"]) == 3
    assert second["last_round"]["decision"]["action"] in ("NONE", "NOTIFY")
    assert second["last_round"]["decision"]["reason"].startswith("Cluster local")


def test_status_watch_ends_on_ctrl_c_while_its_reads_hang(cluster: LocalCluster) -> None:
    # two members frozen: every round then waits on reads that never answer (the probe's gRPC
    # calls, the /version read) until the probe deadline, so Ctrl-C lands while they are in flight
    command = [sys.executable, "-m", "etcdops_local.cli.main", "status", "--watch", "--json", "--interval", "0.5"]
    command += ["--state-dir", str(cluster.state_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["status"]["has_quorum"] is True
        cluster.pause("m1")
        cluster.pause("m2")
        while json.loads(process.stdout.readline())["status"]["has_quorum"]:
            pass  # a round that began before the members froze
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)  # a hang detector, not a measure of promptness
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        cluster.resume("m1")
        cluster.resume("m2")

    assert code == 0


def test_status_watch_for_people_shows_the_reason(cluster: LocalCluster) -> None:
    run_local_health_loop(cluster.state_dir, 0.2, rounds=1)
    command = [sys.executable, "-m", "etcdops_local.cli.main", "status", "--watch", "--interval", "0.5"]
    command += ["--state-dir", str(cluster.state_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        while not any(line.startswith("  reason: ") for line in lines):
            line = process.stdout.readline()
            assert line, "status --watch ended early"
            lines.append(line)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    text = "".join(lines)
    assert "QUORUM, leader" in text and "quorum margin 1" in text
    assert "local timer every 0.2 s): " in text  # the last decision, and which firing made it
