"""Time to repair on the local stack: from `kill -9` of a member to 3 healthy voters again.

    python bench/bench_repair.py [--etcd-bin-dir DIR]

Starts the local stack with its defaults (`etcdops local up`: the autopilot checks every 10 s and
declares a member failed after K=3 failed probes spanning T=20 s) in a temporary directory, kills
a follower with SIGKILL, polls until the cluster has 3 healthy voters without it, and prints the
total with its breakdown: detection (kill until the ReplaceMember execution started), each
runbook step, and the wait for health afterwards. Target: 90 s. Stops the stack at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any


def etcdops(cwd: Path, env: dict[str, str], *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "etcdops_local.cli.main", *args, "--json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode not in (0, 1) or not out.stdout:
        raise SystemExit(f"etcdops {' '.join(args)} failed: {out.stderr}")
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--etcd-bin-dir", default=os.environ.get("ETCD_BIN_DIR"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="etcdops-repair-"))
    env = {**os.environ, **({"ETCD_BIN_DIR": args.etcd_bin_dir} if args.etcd_bin_dir else {})}
    try:
        etcdops(work, env, "local", "up")
        time.sleep(12)  # a first health round or two, as a running stack would have had
        status = etcdops(work, env, "status")
        victim = next(m for m in status["members"] if m["id"] != status["leader"])
        killed_at = time.time()
        etcdops(work, env, "local", "kill", victim["name"])
        while True:
            status = etcdops(work, env, "status")
            voters = [m for m in status["members"] if not m["is_learner"]]
            if (
                status["has_quorum"]
                and len(voters) == 3
                and all(m["healthy"] for m in voters)
                and victim["id"] not in {m["id"] for m in voters}
            ):
                break
            if time.time() - killed_at > 600:
                raise SystemExit("not repaired within 10 minutes")
            time.sleep(0.5)
        repaired_at = time.time()
        runs = etcdops(work, env, "runbook", "list")
        show = etcdops(work, env, "runbook", "show", runs[0]["name"])
        while not show["stopped"]:  # healthy already; the runbook still records the change and notifies
            time.sleep(0.5)
            show = etcdops(work, env, "runbook", "show", runs[0]["name"])
        started = datetime.fromisoformat(show["started"]).timestamp()
        stopped = datetime.fromisoformat(show["stopped"]).timestamp()
        print(f"victim {victim['name']}, runbook {show['name']}: {show['status']}")
        print(f"{'detection (kill -> runbook started)':42} {started - killed_at:6.1f} s")
        for step in show["steps"]:
            if step["ended"] and step["type"] == "Task":
                took = (
                    datetime.fromisoformat(step["ended"]).timestamp()
                    - datetime.fromisoformat(step["started"]).timestamp()
                )
                print(f"  {step['name']:40} {took:6.1f} s")
        print(f"{'runbook total':42} {stopped - started:6.1f} s")
        print(f"{'runbook end -> 3 healthy voters seen':42} {max(0.0, repaired_at - stopped):6.1f} s")
        total = repaired_at - killed_at
        print(f"{'time to repair (target 90 s)':42} {total:6.1f} s  ({total / 90:.2f}x the target)")
    finally:
        subprocess.run(
            [sys.executable, "-m", "etcdops_local.cli.main", "local", "down"], cwd=work, env=env, capture_output=True
        )
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
