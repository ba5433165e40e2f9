"""A volume copy of a local member: its database file copied while its process is SIGSTOPped, so the copy
is what a crash at that moment would leave (the local ``snapshot_volume``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from etcdops_local.cluster import LocalClusterError

#: the longest a member stays SIGSTOPped for a volume copy: then the copy is given up and, should this
#: process have died, the watchdog resumes the member anyway
MAX_PAUSE_SECONDS = 60.0
COPY_COMMAND = ("cp", "--")
_WATCHDOG = (
    "import os, signal, sys, time\n"
    "time.sleep(float(sys.argv[2]))\n"
    "try:\n    os.kill(int(sys.argv[1]), signal.SIGCONT)\nexcept OSError:\n    pass\n"
)


def _wait_stopped(pid: int, deadline: float, proc: Path = Path("/proc")) -> None:
    """Wait until every thread of ``pid`` is stopped: SIGSTOP is delivered asynchronously, and a thread
    inside a write keeps running until the write returns; only then is the data what a crash would leave."""
    while True:
        states = []
        for stat in (proc / str(pid) / "task").glob("*/stat"):
            with contextlib.suppress(OSError):
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        if not states and not (proc / str(pid)).exists():
            raise ProcessLookupError(f"process {pid} is gone")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every thread of process {pid} stopped within the pause bound")
        time.sleep(0.001)


def paused_copy(
    pid: int, source: Path, target: Path, *, command: Sequence[str] = COPY_COMMAND, max_pause: float = MAX_PAUSE_SECONDS
) -> float:
    """Copy ``source`` to ``target`` (``command SOURCE TARGET``) while process ``pid`` is SIGSTOPped, so the
    copy is what a crash at that moment would leave; returns how long the process was held.

    The process is always continued: in ``finally`` when the copy ends, fails, is killed or runs over
    ``max_pause``, and by a detached watchdog process after ``max_pause`` should this process die
    meanwhile (it is killed once the member runs again). A failed copy leaves no ``target``.
    """
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(pid), str(max_pause)],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    started = time.monotonic()
    try:
        try:
            os.kill(pid, signal.SIGSTOP)
            _wait_stopped(pid, started + max_pause)
            done = subprocess.run(
                [*command, str(source), str(target)], capture_output=True, text=True, check=False, timeout=max_pause
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            paused = time.monotonic() - started
    except (OSError, subprocess.TimeoutExpired) as exc:
        target.unlink(missing_ok=True)
        raise LocalClusterError(f"copying {source} while its member was paused failed: {exc}") from exc
    finally:
        watchdog.kill()
        watchdog.wait()
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise LocalClusterError(f"copying {source} while its member was paused failed: {why[0]}")
    return paused
