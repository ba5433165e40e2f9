"""The local volume copy's pause: the process is continued whatever happens to the copy, and by the
watchdog when the process that paused it dies (real processes: a ``sleep`` stands in for etcd)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etcdops_local.cluster import LocalClusterError, process_state
from etcdops_local.compute import _wait_stopped, paused_copy


@pytest.fixture
def sleeper() -> object:
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def _state(pid: int) -> str:
    return process_state(pid, "sleep")


def test_the_copy_is_taken_while_paused_and_the_process_runs_again(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    source, target = tmp_path / "db", tmp_path / "copy"
    source.write_bytes(b"x" * 10_000)
    # the copy command sees the process paused
    probe = tmp_path / "seen"
    command = (
        "sh",
        "-c",
        f'grep -q "^State:.*T" /proc/{sleeper.pid}/status && echo paused > {probe}; cp -- "$1" "$2"',
        "c",
    )
    paused = paused_copy(sleeper.pid, source, target, command=command)
    assert probe.read_text().strip() == "paused"
    assert target.read_bytes() == source.read_bytes() and paused >= 0
    assert _state(sleeper.pid) == "running"


def test_a_failed_copy_leaves_no_file_and_the_process_running(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    source, target = tmp_path / "db", tmp_path / "copy"
    source.write_bytes(b"x" * 10_000)
    command = ("sh", "-c", 'head -c 100 "$1" > "$2"; echo "disk full" >&2; exit 1', "c")
    with pytest.raises(LocalClusterError, match="disk full"):
        paused_copy(sleeper.pid, source, target, command=command)
    assert not target.exists() and _state(sleeper.pid) == "running"


def test_a_copy_running_over_its_bound_is_given_up_and_the_process_continued(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    (tmp_path / "db").write_bytes(b"x")
    with pytest.raises(LocalClusterError, match="timed out"):
        paused_copy(
            sleeper.pid, tmp_path / "db", tmp_path / "copy", command=("sh", "-c", "exec sleep 30", "c"), max_pause=0.5
        )
    assert _state(sleeper.pid) == "running"


def test_the_watchdog_continues_the_process_when_the_copier_dies(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    # Given a process that pauses the sleeper for a copy that never ends
    (tmp_path / "db").write_bytes(b"x")
    copier = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys; from pathlib import Path; from etcdops_local.compute import _wait_stopped, paused_copy; "
            f"paused_copy({sleeper.pid}, Path(sys.argv[1]), Path(sys.argv[2]), "
            f"command=('sh', '-c', 'echo $$ > {tmp_path / 'copy.pid'}; exec sleep 300', 'c'), max_pause=1.0)",
            str(tmp_path / "db"), str(tmp_path / "copy"),
        ]
    )  # fmt: skip
    copy_pid = tmp_path / "copy.pid"
    while not copy_pid.exists() or not copy_pid.read_text().strip():  # the copy runs: the sleeper is paused
        assert copier.poll() is None
        time.sleep(0.01)
    orphan = int(copy_pid.read_text())
    assert _state(sleeper.pid) == "paused"
    # When it is killed with the sleeper paused (no finally runs)
    os.kill(copier.pid, signal.SIGKILL)
    copier.wait()
    try:
        # Then the watchdog continues the sleeper once the bound has passed
        while _state(sleeper.pid) != "running":
            time.sleep(0.05)
    finally:
        os.kill(orphan, signal.SIGKILL)  # the orphaned copy


def test_the_copy_waits_until_every_thread_has_stopped(tmp_path: Path) -> None:
    # a thread still inside a write (D) is not stopped yet, though SIGSTOP was sent and the others stopped
    for tid, state in (("100", "T"), ("101", "D")):
        (tmp_path / "100" / "task" / tid).mkdir(parents=True)
        (tmp_path / "100" / "task" / tid / "stat").write_text(f"{tid} (etcd) {state} 1 2 3")
    with pytest.raises(TimeoutError, match="not every thread"):
        _wait_stopped(100, time.monotonic() + 0.05, proc=tmp_path)
    (tmp_path / "100" / "task" / "101" / "stat").write_text("101 (etcd (a name) with spaces) t 1 2 3")
    _wait_stopped(100, time.monotonic() + 0.05, proc=tmp_path)
