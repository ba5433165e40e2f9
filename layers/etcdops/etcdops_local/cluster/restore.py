"""Restoring a snapshot into a stopped member's data directory (``etcdutl``/``etcdctl snapshot restore``)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from etcdops.domain.errors import NotFoundError
from etcdops_local.cluster.binaries import EtcdBinaries, restore_supports_bump
from etcdops_local.cluster.files import OLD_DATA_PREFIX, ClusterFiles, LocalClusterError
from etcdops_local.cluster.processes import LocalMember


class MemberRestore(ClusterFiles):
    """A member's data restored from a snapshot, its old data set aside."""

    def restore_member_data(
        self,
        name: str,
        snapshot: Path,
        *,
        initial_cluster: str,
        token: str | None = None,
        bump_revision: int = 0,
        old_data_suffix: str | None = None,
    ) -> Path:
        """Restore ``snapshot`` into a fresh data directory of the stopped member ``name``.

        The old data directory is moved aside (``data.before-restore-<time>``, returned) rather than
        deleted. Uses ``etcdutl`` where it exists (3.5+), else ``etcdctl snapshot restore`` (3.4).

        ``bump_revision`` > 0 adds ``--bump-revision N --mark-compacted`` when the tool's ``--help``
        lists both flags (etcd 3.6, 3.5.10+); older tools restore at the snapshot's revision.
        ``old_data_suffix`` names the moved-aside directory ``data.<suffix>`` instead: a directory of
        that name is never touched again, so a retry (the same suffix) redoes only the restore, and a
        restore already finished with the same ``token`` and suffix is not repeated.
        """
        member = self.member(name)
        if self._state_of(member) != "stopped":
            raise LocalClusterError(f"member {name} is running; stop it before restoring its data")
        if not snapshot.is_file():
            raise NotFoundError(f"snapshot {snapshot} does not exist")
        binaries = self.binaries()
        data = self.data_dir(name)
        marker = self.member_dir(name) / "restored-by"
        if old_data_suffix:
            aside = data.with_name(f"data.{old_data_suffix}")
            if data.exists() and marker.exists() and marker.read_text().strip() == f"{token} {old_data_suffix}":
                return aside  # restored already with this token and suffix
            if aside.exists() and data.exists():
                shutil.rmtree(data)  # a partial restore of an earlier try; the old data is in aside
        else:
            aside = data.with_name(f"{OLD_DATA_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}")
        if data.exists():
            data.rename(aside)
            os.utime(aside)  # its age, for `local gc`, counts from the moment it was set aside
        token_used = token or self.state().token
        self._run_restore(binaries, member, snapshot, initial_cluster, token_used, bump_revision, aside)
        if old_data_suffix:
            marker.write_text(f"{token} {old_data_suffix}\n")
        return aside

    def _run_restore(
        self,
        binaries: EtcdBinaries,
        member: LocalMember,
        snapshot: Path,
        initial_cluster: str,
        token: str,
        bump_revision: int,
        aside: Path,
    ) -> None:
        """The restore tool run into the member's (empty) data directory; on failure the old data is put back."""
        name, data = member.name, self.data_dir(member.name)
        tool = [str(binaries.etcdutl)] if binaries.etcdutl else [str(binaries.etcdctl)]
        env = {**os.environ, "ETCDCTL_API": "3"}
        bump: list[str] = []
        if bump_revision > 0 and restore_supports_bump(tool, env):
            bump = [f"--bump-revision={bump_revision}", "--mark-compacted"]
        command = [
            *tool,
            "snapshot",
            "restore",
            str(snapshot),
            f"--name={name}",
            f"--data-dir={data}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-token={token}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            *bump,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=300)
        if result.returncode != 0:
            if data.exists():
                shutil.rmtree(data)
            if aside.exists():
                aside.rename(data)
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise LocalClusterError(f"restoring {snapshot} for member {name} failed: {last[0]}")
