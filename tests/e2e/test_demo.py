"""`etcdops demo` as a user runs it: the whole tour, in a process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etcdops_local.cluster import EtcdBinaries

pytestmark = pytest.mark.e2e


def test_the_demo_tells_the_whole_story(tmp_path: Path, etcd3530: EtcdBinaries) -> None:
    env = {**os.environ, "ETCD_BIN_DIR": str(etcd3530.bin_dir)}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "etcdops_local.cli.main", "demo", "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        subprocess.run(
            [sys.executable, "-m", "etcdops_local.cli.main", "local", "down"], cwd=tmp_path, env=env, timeout=120
        )

    assert result.returncode == 0, result.stderr
    events = [e["event"] for e in json.loads(result.stdout)]
    milestones = ["healthy cluster", "wrote 100 keys", "backup ", "killed member", "autopilot started ReplaceMember",
                  "ReplaceMember SUCCEEDED", "healthy again: 3/3 voters healthy", "all 100 keys read back",
                  "chapter 2", "two of three members killed", "escalation names backup", "RestoreCluster restore-demo",
                  "RestoreCluster SUCCEEDED", "restored: 3/3 voters healthy"]  # fmt: skip
    found = [next((i for i, e in enumerate(events) if e.startswith(m)), -1) for m in milestones]
    assert -1 not in found and found == sorted(found), events
