"""The etcd versions `etcdops --version` names are exactly the ones the tests run on."""

from __future__ import annotations

from etcd_versions import ETCD_VERSIONS, restore_bumps_revision

from etcdops.cli_options import TESTED_ETCD_VERSIONS
from etcdops.local import EtcdBinaries


def test_the_versions_named_are_the_versions_tested() -> None:
    assert sorted(version for version, _ in ETCD_VERSIONS.values()) == sorted(TESTED_ETCD_VERSIONS)


def test_which_versions_restore_with_a_revision_bump() -> None:
    def of(version: str) -> EtcdBinaries:
        return EtcdBinaries(etcd=None, etcdctl=None, etcdutl=None, version=version)  # type: ignore[arg-type]

    bumps = {v: restore_bumps_revision(of(v)) for v in ("3.4.23", "3.5.1", "3.5.9", "3.5.10", "3.5.30", "3.6.0")}
    assert bumps == {"3.4.23": False, "3.5.1": False, "3.5.9": False, "3.5.10": True, "3.5.30": True, "3.6.0": True}
