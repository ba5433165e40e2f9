"""The e2e tier runs on the oldest and the newest etcd under test (3.4.23 and 3.5.30), not on every
version: each e2e test starts whole stacks, and bin/test must stay within its time budget. The
integration tier covers 3.5.1 as well."""

from __future__ import annotations

import pytest
from etcd_versions import E2E_VERSIONS, etcd_flavour

from etcdops.local import EtcdBinaries


@pytest.fixture(scope="session", params=E2E_VERSIONS)
def etcd_binaries(request: pytest.FixtureRequest) -> EtcdBinaries:
    """Each etcd version of the e2e tier, in turn (overrides the whole matrix of tests/conftest.py)."""
    return etcd_flavour(request.param)
