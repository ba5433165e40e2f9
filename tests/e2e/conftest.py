"""The e2e tier runs on the oldest and the newest etcd under test (3.4.23 and 3.5.30), not on every
version: each e2e test starts whole stacks, and bin/test must stay within its time budget. The
integration tier covers 3.5.1 as well. Also: the fixture that requires the Lambda /tmp limit."""

from __future__ import annotations

import os

import pytest
from etcd_versions import E2E_VERSIONS, etcd_flavour

from etcdops import localsandbox
from etcdops.local import EtcdBinaries
from etcdops.localaws import REQUIRE_EPHEMERAL_LIMIT_ENV


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
