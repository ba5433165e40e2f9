"""tests/etcd_versions.py: which versions restore with a revision bump (test_cli_unit checks that
`etcdops --version` names exactly the versions of the matrix)."""

from __future__ import annotations

from etcd_versions import restore_bumps_revision

from etcdops_local.cluster import EtcdBinaries


def test_which_versions_restore_with_a_revision_bump() -> None:
    def of(version: str) -> EtcdBinaries:
        return EtcdBinaries(etcd=None, etcdctl=None, etcdutl=None, version=version)  # type: ignore[arg-type]

    bumps = {v: restore_bumps_revision(of(v)) for v in ("3.4.23", "3.5.1", "3.5.9", "3.5.10", "3.5.30", "3.6.0")}
    assert bumps == {"3.4.23": False, "3.5.1": False, "3.5.9": False, "3.5.10": True, "3.5.30": True, "3.6.0": True}
