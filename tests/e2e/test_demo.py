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

    def etcdops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "etcdops_local.cli.main", *args], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip

    try:
        result = etcdops("demo", "--json")
        # what the operator reads afterwards: the screen, the messages sent (read twice), the replacement's story
        status, sent, again = etcdops("status"), etcdops("notifications", "--json"), etcdops("notifications")
        replaced = [e for e in json.loads(etcdops("runbook", "list", "--json").stdout) if e["runbook"] == "replace"]
        story = etcdops("runbook", "show", replaced[0]["name"], "--json")
        # one more cluster added (not twice), its runbooks kept apart from the others', removed again
        added, twice = etcdops("local", "cluster", "add", "c4", "--json"), etcdops("local", "cluster", "add", "c4")
        listed = etcdops("cluster", "list", "--json")
        c4_runs = etcdops("runbook", "list", "--cluster", "c4", "--json")
        elsewhere = etcdops("runbook", "show", replaced[0]["name"], "--cluster", "c4")
        removed, after = etcdops("local", "cluster", "remove", "c4"), etcdops("cluster", "list", "--json")
    finally:
        etcdops("local", "down")

    assert result.returncode == 0, result.stderr
    # the live screen's newest runbook is the restore that ended the tour
    newest = next(line for line in status.stdout.splitlines() if line.startswith("  newest: "))
    assert newest.startswith("  newest: restore-demo-") and "(restore) SUCCEEDED: succeeded" in newest, status.stdout
    # every message the stack sent, newest first, and reading them left them there
    subjects = [m["subject"] for m in json.loads(sent.stdout)]
    assert subjects and [m["sent_at"] for m in json.loads(sent.stdout)] == sorted(
        (m["sent_at"] for m in json.loads(sent.stdout)), reverse=True
    )
    assert any(s.startswith("etcdops: replaced member ") for s in subjects), subjects
    assert any("QUORUM LOST" in s for s in subjects), subjects
    assert again.stdout.splitlines()[-1] == f"{len(subjects)} messages, newest first; --full shows their text"
    told = json.loads(story.stdout)
    new = told["output"]["new_member"]
    assert told["outcome"] == f"succeeded: {told['input']['member_name']} replaced by {new['name']} ({new['id']})"
    events = [e["event"] for e in json.loads(result.stdout)]
    milestones = ["healthy cluster", "wrote 100 keys", "backup ", "killed member", "autopilot started ReplaceMember",
                  "ReplaceMember SUCCEEDED", "healthy again: 3/3 voters healthy", "all 100 keys read back",
                  "chapter 2", "two of three members killed", "escalation names backup", "RestoreCluster restore-demo",
                  "RestoreCluster SUCCEEDED", "restored: 3/3 voters healthy"]  # fmt: skip
    found = [next((i for i, e in enumerate(events) if e.startswith(m)), -1) for m in milestones]
    assert -1 not in found and found == sorted(found), events
    fleet = ["a fleet: clusters c2 and c3", "status --all: c2: healthy, 1/1 voters", "killed member",
             "c2 and c3 untouched: the same members, no runbook", "c2 and c3 leave the stack", "chapter 2"]  # fmt: skip
    found = [next((i for i, e in enumerate(events) if e.startswith(m)), -1) for m in fleet]
    assert -1 not in found and found == sorted(found), events

    assert added.returncode == 0 and json.loads(added.stdout)["members"] == 1, added.stderr
    assert twice.returncode == 2 and twice.stderr.startswith("etcdops: cluster c4 is in the local stack already")
    assert [row["cluster"] for row in json.loads(listed.stdout)] == ["local", "c4"]
    assert c4_runs.returncode == 0 and json.loads(c4_runs.stdout) == [], c4_runs.stderr  # its runbooks: none
    assert elsewhere.returncode == 1 and elsewhere.stderr.endswith("runs on cluster local, not c4\n")
    assert removed.returncode == 0 and "backups kept" in removed.stdout, removed.stderr
    assert [row["cluster"] for row in json.loads(after.stdout)] == ["local"]
