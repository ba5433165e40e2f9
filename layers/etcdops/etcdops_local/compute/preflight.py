"""The local provider's preflight: what would stop a runbook, found before it changes anything."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from etcdops.adapters import pki
from etcdops.domain.compute.base import ACTIONS, DOCUMENTS, PreflightPlan
from etcdops.domain.errors import EtcdopsError, PkiError
from etcdops.domain.findings import Check, Finding
from etcdops_local.cluster import EtcdBinaries

if TYPE_CHECKING:
    from etcdops_local.compute import LocalComputeProvider


def local_preflight(provider: LocalComputeProvider, plan: PreflightPlan) -> list[Finding]:
    """What would stop a runbook on the local stack, found before it changes anything (see the package's
    docstring: the CA signs, the etcd binaries run, the state directory and cluster.yaml can be written,
    the commanded members exist, the hooks' programs are there)."""
    findings: list[Finding] = []
    cluster = provider.cluster
    etcd_commands = [k for k in plan.documents if DOCUMENTS[k].group == "etcd"]
    if plan.launch or "RenewCertificates" in plan.documents:  # both issue certificates from the CA
        try:
            pki.check_ca(pki.load_pem(cluster.pki_dir / "ca.crt", cluster.pki_dir / "ca.key"))
        except PkiError as exc:
            findings.append(
                Finding(
                    "ca",
                    f"CA {cluster.pki_dir / 'ca.crt'}",
                    f"cannot issue member certificates: {str(exc).removeprefix('ca: ')}.",
                    "restore pki/ca.crt and pki/ca.key of this local stack (or recreate it: etcdops local up).",
                )
            )
        findings += _writable("launch", cluster.pki_dir, "new members' certificates are written there")
    if plan.launch:
        findings += _writable("launch", cluster.state_dir, "new members are recorded in local.json there")
    if plan.launch or etcd_commands:
        try:
            EtcdBinaries.locate(cluster.state().bin_dir)  # runs etcd --version
        except EtcdopsError as exc:
            findings.append(
                Finding(
                    "host-command",
                    f"etcd binaries of {cluster.state_dir}",
                    f"cannot run: {exc}.",
                    "install etcd where local.json's bin_dir points (or set ETCD_BIN_DIR and recreate the stack).",
                )
            )
    for name in plan.commanded:
        if provider.find(name) is None:
            findings.append(
                Finding(
                    "host",
                    f"member host {name}",
                    "has no record in the local stack, but the runbook will send it host commands.",
                    "restore onto new hosts (mode new-hosts), or start the runbook with the current members.",
                )
            )
    for action, argv in provider.hooks.items():
        used = plan.control_plane and ACTIONS[action] in plan.documents
        if used and argv and shutil.which(argv[0]) is None:
            findings.append(
                Finding(
                    "control-plane",
                    f"hook {action}",
                    f"its program {argv[0]} is not an executable file.",
                    f"install {argv[0]}, or change the {action} hook.",
                )
            )
    if plan.repoint:
        findings += _writable("target-group", cluster.config_file.parent, "clients are repointed in cluster.yaml")
    return findings


def _writable(check: Check, directory: Path, why: str) -> list[Finding]:
    """[] when a file can be created in ``directory`` (a real write, removed at once), else a finding."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".etcdops-preflight-"):
            pass
    except OSError as exc:
        return [
            Finding(
                check,
                f"directory {directory}",
                f"cannot be written ({exc.strerror or exc}), but {why}.",
                "give the etcdops user write access to it (and free space).",
            )
        ]
    return []
