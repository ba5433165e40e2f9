"""The e2e tier runs on the oldest and the newest etcd under test (3.4.23 and 3.5.30), not on every
version: each e2e test starts whole stacks, and bin/test must stay within its time budget. The
integration tier covers 3.5.1 as well. Also: the fixture that requires the Lambda /tmp limit.

It is also the e2e tier's part in the IAM-coverage check (tools/iam_coverage.py). With
``ETCDOPS_IAM_RECORDS`` set (bin/test sets it), every emulated AWS writes the authorization decisions
of its stacks' functions and state machines there when it stops, and each pytest process (each xdist
worker, or the one process) writes ``e2e-run-<worker>.json`` when its session finishes: the e2e files
it collected, what was deselected or named alone, the e2e tests selected and those that finished. From
those the check decides whether the whole tier ran, and so whether "used by no test" can be said at
all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from etcd_versions import E2E_VERSIONS, etcd_flavour

from etcdops_local.aws import sandbox as localsandbox
from etcdops_local.aws.iam_records import RECORDS_ENV
from etcdops_local.aws.stack import REQUIRE_EPHEMERAL_LIMIT_ENV
from etcdops_local.cluster import EtcdBinaries


@pytest.fixture(scope="session", params=E2E_VERSIONS)
def etcd_binaries(request: pytest.FixtureRequest) -> EtcdBinaries:
    """Each etcd version of the e2e tier, in turn (overrides the whole matrix of tests/conftest.py)."""
    return etcd_flavour(request.param)


@pytest.fixture
def ephemeral_limit() -> None:
    """The /tmp limit needs a tmpfs mount; where that is impossible the test cannot prove it, and under
    ETCDOPS_REQUIRE_EPHEMERAL_LIMIT=1 (CI) that is a failure, never a skip."""
    if localsandbox.can_mount():
        return
    if os.environ.get(REQUIRE_EPHEMERAL_LIMIT_ENV) == "1":
        pytest.fail("the Lambda /tmp limit must be enforced here, but this process cannot mount a tmpfs")
    pytest.skip("cannot mount a tmpfs here (not root): the /tmp limit is not enforced")


HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class _E2eRun:
    def __init__(self) -> None:
        self.files: set[str] = set()
        self.selected: list[str] = []
        self.finished: set[str] = set()
        self.deselected = 0


_RUN = _E2eRun()


def _in_e2e(path: Path) -> bool:
    return HERE in path.resolve().parents


def pytest_deselected(items: list[pytest.Item]) -> None:
    _RUN.deselected += sum(1 for item in items if _in_e2e(item.path))


def pytest_collection_finish(session: pytest.Session) -> None:
    e2e = [item for item in session.items if _in_e2e(item.path)]
    _RUN.selected = [item.nodeid for item in e2e]
    _RUN.files = {str(item.path.resolve().relative_to(ROOT)) for item in e2e}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # finished: its call ran (passed or failed), or it was skipped, or its set-up failed
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _RUN.finished.add(report.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    directory = os.environ.get(RECORDS_ENV)
    if not directory or not _RUN.selected:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    run = {
        "worker": worker,
        "files": sorted(_RUN.files),
        "deselected": _RUN.deselected,
        "named_tests": any("::" in str(arg) for arg in session.config.args),
        "selected": _RUN.selected,
        "finished": sorted(_RUN.finished & set(_RUN.selected)),
    }
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"e2e-run-{worker}.json").write_text(json.dumps(run, indent=1) + "\n")
