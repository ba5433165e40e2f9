"""How the local stack tells a member process's state from /proc (a fake /proc here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdops_local.cluster import process_state

MARKER = "/stack/members/m1/data"


def fake_proc(tmp_path: Path, *, name: str, state: str, cmdline: bytes) -> Path:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(f"42 ({name}) {state} 1 42 42 0 -1 4194304 1 0\n")
    (tmp_path / "42" / "cmdline").write_bytes(cmdline)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "state", "cmdline", "expected"),
    [
        ("etcd", "S", b"etcd\0--data-dir=" + MARKER.encode() + b"\0", "running"),
        ("etcd", "T", b"etcd\0--data-dir=" + MARKER.encode() + b"\0", "paused"),
        ("etcd", "Z", b"", "stopped"),
        # the pid now belongs to another program
        ("sleep", "S", b"sleep\0100\0", "stopped"),
        ("etcd", "S", b"etcd\0--data-dir=/other/stack/data\0", "stopped"),
        # caught mid-exec: the command line is empty for a moment, the name is already etcd's
        ("etcd", "R", b"", "running"),
        ("kworker/0:1", "I", b"", "stopped"),
        # a name with a parenthesis and spaces does not confuse the parser
        ("etcd (x) y", "S", b"etcd\0--data-dir=" + MARKER.encode() + b"\0", "running"),
    ],
)
def test_process_state_from_proc(tmp_path: Path, name: str, state: str, cmdline: bytes, expected: str) -> None:
    proc = fake_proc(tmp_path, name=name, state=state, cmdline=cmdline)
    assert process_state(42, MARKER, proc) == expected


def test_no_pid_or_no_process_is_stopped(tmp_path: Path) -> None:
    assert process_state(None, MARKER, tmp_path) == "stopped"
    assert process_state(42, MARKER, tmp_path) == "stopped"
