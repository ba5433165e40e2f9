"""The RestoreDataDir host document's script, run as the host contract says a host runs it, on a volume
made from a member's EBS snapshot (``SnapshotUri`` ``ebs://vol-...``): the real etcd restore tool of each
version, the block devices, mount and systemd played by small stand-ins on PATH (no root here)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from etcd_versions import restore_bumps_revision
from samtranslator.yaml_helper import yaml_parse

from etcdops_local.cluster import EtcdBinaries

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VOLUME = "vol-0a1b2c3d4e5f60718"


def restore_script() -> str:
    text = (ROOT / "docs" / "host-bootstrap.md").read_text()
    section = text[text.index("### As CloudFormation") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block
    resource = yaml_parse(block.group(1))["RestoreDataDirDocument"]
    (step,) = resource["Properties"]["Content"]["mainSteps"]
    return "\n".join(step["inputs"]["runCommand"])


def stand_ins(bin_dir: Path, volume_files: Path, attached: bool) -> None:
    """lsblk lists the volume's NVMe device (serial: the volume id without its dash) only when attached;
    mount copies the volume's files to the mount point, umount empties it; etcd is not running."""
    serial = VOLUME.replace("-", "")
    scripts = {
        "lsblk": f'case "$*" in *SERIAL*) {"echo /dev/nvme1n1 " + serial if attached else "true"} ;; '
        '*TYPE*) echo "/dev/nvme1n1 disk" ;; esac',
        "mount": f'[ "$3" = /dev/nvme1n1 ] && cp -a {volume_files}/. "$4"',
        "umount": '[ -d "$1" ] && find "$1" -mindepth 1 -delete',
        "systemctl": "exit 3",
        "chown": "exit 0",
        "sleep": "exit 0",
    }
    bin_dir.mkdir()
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)


def run(tmp_path: Path, binaries: EtcdBinaries, *, attached: bool = True) -> subprocess.CompletedProcess[str]:
    # the member's data volume as its snapshot holds it: etcd's data directory below a mount point, the
    # database as a crash left it (no sha256 trailer: a copy, not a snapshot stream)
    volume = tmp_path / "volume"
    (volume / "etcd" / "member" / "snap").mkdir(parents=True)
    snap = (ROOT / "tests" / "data" / "bbolt-etcd35.snap").read_bytes()
    (volume / "etcd" / "member" / "snap" / "db").write_bytes(snap[:-32])
    (volume / "etcd" / "member" / "wal").mkdir()
    stand_ins(tmp_path / "bin", volume, attached)
    data = tmp_path / "data"
    data.mkdir()
    env_file = tmp_path / "member.env"
    env_file.write_text(f"ETCDOPS_MEMBER=m1-s1\nETCDOPS_DATA_DIR={data}\nETCDOPS_REGION=eu-west-1\n")
    tool = binaries.etcdutl or binaries.etcdctl
    values = {
        "SnapshotUri": f"ebs://{VOLUME}", "SnapshotSha256": "", "InitialClusterToken": "restore-x1",
        "InitialCluster": "m1-s1=https://10.0.1.4:2380,m2-s1=https://10.0.2.4:2380", "BumpRevision": "1000",
        "OldDataSuffix": "before-restore-x1",
    }  # fmt: skip
    script = re.sub(r"\{\{ (\w+) \}\}", lambda m: values[m.group(1)], restore_script())
    script = script.replace("/etc/etcdops/member.env", str(env_file))
    script = script.replace("/usr/local/bin/etcdutl", str(binaries.etcdutl or tmp_path / "none"))
    script = script.replace("/usr/local/bin/etcdctl", str(binaries.etcdctl))
    env = {"PATH": f"{tmp_path / 'bin'}:{tool.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=False)


def test_a_member_restores_a_new_cluster_from_a_volume_made_of_another_members_snapshot(
    tmp_path: Path, etcd_binaries: EtcdBinaries
) -> None:
    done = run(tmp_path, etcd_binaries)

    assert done.returncode == 0, done.stderr
    # a data directory of the new cluster for this member (its own WAL), from the volume's database
    member = tmp_path / "data" / "member"
    assert (member / "snap" / "db").is_file() and any((member / "wal").iterdir())
    status = subprocess.run(
        [str(etcd_binaries.etcdutl or etcd_binaries.etcdctl), "snapshot", "status", str(member / "snap" / "db"), "-w",
         "json"], capture_output=True, text=True, check=False, env={"ETCDCTL_API": "3"},
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    bumped = restore_bumps_revision(etcd_binaries)
    assert ("revision bumped by 1000" if bumped else "revision not bumped") in done.stdout
    # nothing of the copy is left behind: no plain database, no mount point
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["etcdops-restored-by", "member"]


def test_a_volume_that_is_not_attached_is_refused_and_changes_nothing(tmp_path: Path, etcd3530: EtcdBinaries) -> None:
    done = run(tmp_path, etcd3530, attached=False)

    assert done.returncode == 4 and f"no block device of volume {VOLUME}" in done.stderr
    assert list((tmp_path / "data").iterdir()) == []
