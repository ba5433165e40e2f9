"""The host bootstrap contract: the documented SSM documents match the code, and the scripts parse."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from etcdops.adapters.compute.bootstrap import _FETCH_CERTS, BootstrapSettings, user_data
from etcdops.domain.compute.base import ACTIONS, DOCUMENTS, ActionResult, DocumentSpec, HostActionResult
from etcdops.domain.compute.errors import ActionParameterError, ComputeConfigError, HostCommandFailedError
from etcdops_local.cluster import LocalCluster
from etcdops_local.compute import LocalComputeProvider

DOC = Path(__file__).resolve().parents[2] / "docs" / "host-bootstrap.md"
SAMPLES = {
    "MemberName": "m4",
    "PeerUrl": "https://10.0.1.4:2380",
    "ClientUrl": "https://10.0.1.4:2379",
    "InitialCluster": "m1=https://10.0.1.1:2380,m4=https://10.0.1.4:2380",
    "InitialClusterState": "existing",
    "InitialClusterToken": "etcd-cluster",
    "SnapshotUri": "s3://bucket/restore/snap.db",
    "SnapshotSha256": "",
    "BumpRevision": "1000000000",
    "OldDataSuffix": "before-restore-x1",
    "ManifestDir": "/etc/kubernetes/manifests",
    "ParkedDir": "/etc/kubernetes/etcdops-parked",
    "Components": "kube-scheduler,kube-controller-manager",
    "RestartKubelet": "true",
    "Version": "3.5.30",
    "CheckOnly": "false",
    "ExtraFlags": "--max-txn-ops=200",
}


def documented() -> dict[str, dict[str, Any]]:
    """The documented SSM documents by key (``StartEtcd``...), CloudFormation tags in long form."""
    text = DOC.read_text()
    section = text[text.index("### As CloudFormation") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "no yaml block after '### As CloudFormation'"
    resources = yaml_parse(block.group(1))
    by_key: dict[str, dict[str, Any]] = {}
    for resource in resources.values():
        name = resource["Properties"]["Name"]
        assert set(name) == {"Fn::Sub"} and name["Fn::Sub"].startswith("${AWS::StackName}-"), name
        by_key[name["Fn::Sub"].removeprefix("${AWS::StackName}-")] = resource
    return by_key


def test_document_names_derive_from_the_stack() -> None:
    # two stacks in one account and region each have their own documents
    assert DOCUMENTS["StartEtcd"].default_name("etcdops-a") == "etcdops-a-StartEtcd"
    assert set(documented()) == set(DOCUMENTS)


@pytest.mark.parametrize("spec", DOCUMENTS.values(), ids=lambda s: s.key)
def test_documented_ssm_document_matches_the_code(spec: DocumentSpec) -> None:
    resource = documented()[spec.key]
    assert resource["Type"] == "AWS::SSM::Document"
    assert resource["Properties"]["DocumentType"] == "Command"
    content = resource["Properties"]["Content"]
    assert content["schemaVersion"] == "2.2"
    assert content["description"] == spec.description
    parameters = content.get("parameters", {})
    assert list(parameters) == [p.ssm_name for p in spec.parameters]
    for p in spec.parameters:
        declared = parameters[p.ssm_name]
        assert declared["type"] == "String"
        assert declared["allowedPattern"] == p.pattern, p.ssm_name
        assert declared.get("default") == p.default, p.ssm_name
        assert ("default" not in declared) == p.required, p.ssm_name
        if p.default is not None:
            assert re.fullmatch(p.pattern, p.default)
    (step,) = content["mainSteps"]
    assert step["action"] == "aws:runShellScript"
    assert step["inputs"]["timeoutSeconds"] == str(spec.timeout_seconds)
    script = "\n".join(step["inputs"]["runCommand"])
    used = set(re.findall(r"\{\{ (\w+) \}\}", script))
    assert used == set(parameters), "every parameter is used, and only declared ones"


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("key", sorted(DOCUMENTS))
def test_documented_scripts_are_valid_bash(key: str) -> None:
    (step,) = documented()[key]["Properties"]["Content"]["mainSteps"]
    script = re.sub(r"\{\{ (\w+) \}\}", lambda m: SAMPLES[m.group(1)], "\n".join(step["inputs"]["runCommand"]))
    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize(
    ("flags", "written"),
    [
        ("", []),
        ("--max-txn-ops=200 --max-request-bytes=2097152", ["ETCD_MAX_TXN_OPS=200", "ETCD_MAX_REQUEST_BYTES=2097152"]),
    ],
)
def test_start_etcd_writes_this_starts_flags_into_etcd_env(tmp_path: Path, flags: str, written: list[str]) -> None:
    """StartEtcd's loop over ExtraFlags, run as the host runs it: each flag becomes the ETCD_* variable etcd reads."""
    (step,) = documented()["StartEtcd"]["Properties"]["Content"]["mainSteps"]
    script = "\n".join(step["inputs"]["runCommand"])
    loop = script[script.index("for flag in {{ ExtraFlags }}") : script.index("done\n") + len("done")]
    env = tmp_path / "etcd.env.tmp"
    env.write_text("ETCD_NAME=m4\n")
    snippet = loop.replace("{{ ExtraFlags }}", flags).replace("/etc/etcdops/etcd.env.tmp", str(env))
    ran = subprocess.run(["bash", "-c", "set -euo pipefail\n" + snippet], capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    assert env.read_text().splitlines() == ["ETCD_NAME=m4", *written]
    assert re.fullmatch(DOCUMENTS["StartEtcd"].parameters[-1].pattern, flags)


def test_every_action_has_a_document() -> None:
    assert set(ACTIONS.values()) <= set(DOCUMENTS)
    assert {"StartEtcd", "StopEtcd"} <= set(DOCUMENTS)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_user_data_is_valid_bash_and_installs_a_valid_fetcher() -> None:
    script = user_data(BootstrapSettings("prod", "m4", "etcdops/prod/members/m4", "eu-west-1"))

    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    compile(_FETCH_CERTS, "etcdops-fetch-certs", "exec")
    assert _FETCH_CERTS in script


def test_the_fetcher_writes_the_trust_bundle_of_a_ca_rotation_as_it_is(tmp_path: Path) -> None:
    """ca.crt holds every CA the member secret's ``ca`` field holds (both during a CA rotation)."""
    import json

    from etcdops.adapters import pki

    bundle = "".join(pki.create_ca(f"CA {n}").cert_pem.decode() for n in (1, 2))
    secret = {"certificate": "CERT\n", "private_key": "KEY\n", "ca": bundle, "member": "m4"}
    fake_aws = tmp_path / "bin" / "aws"
    fake_aws.parent.mkdir()
    fake_aws.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(secret)}\nEOF\n")
    fake_aws.chmod(0o755)
    env_file = tmp_path / "member.env"
    env_file.write_text(f"ETCDOPS_MEMBER=m4\nETCDOPS_REGION=eu-west-1\nETCDOPS_SECRET_ID=s\nETCDOPS_PKI_DIR={tmp_path}/pki\n")
    script = _FETCH_CERTS.replace("/etc/etcdops/member.env", str(env_file))
    env = {"PATH": f"{fake_aws.parent}:/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script, "5"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pki" / "ca.crt").read_text() == bundle
    assert (tmp_path / "pki" / "member.key").read_text() == "KEY\n"


def test_user_data_refuses_values_a_host_file_cannot_take() -> None:
    with pytest.raises(ActionParameterError, match="ETCDOPS_SECRET_ID"):
        user_data(BootstrapSettings("prod", "m4", "etcdops/prod/members/m4\nrm -rf /", "eu-west-1"))


# ---- local control-plane hooks (no Kubernetes in the local stack) --------------------------------


def test_local_hooks_run_their_command_with_the_parameters(tmp_path: Path) -> None:
    out = tmp_path / "hook.out"
    hook = [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write(os.environ['ETCDOPS_MANIFEST_DIR'])"]
    compute = LocalComputeProvider(LocalCluster(tmp_path), hooks={"stop-apiserver": hook})

    result = compute.run_action("stop-apiserver", None, {"manifest_dir": "/tmp/manifests"})

    assert result.ok and out.read_text() == "/tmp/manifests"
    assert compute.run_action("start-apiserver").ok  # no hook: nothing to do, successfully


def test_local_hooks_fail_by_name(tmp_path: Path) -> None:
    failing = LocalComputeProvider(
        LocalCluster(tmp_path), hooks={"restart-control-plane": [sys.executable, "-c", "raise SystemExit('no')"]}
    )
    with pytest.raises(HostCommandFailedError) as failed:
        failing.run_action("restart-control-plane")
    assert str(failed.value) == "restart-control-plane failed on localhost: no"  # the host, its last line
    assert failed.value.result is not None and failed.value.result.hosts[0].status == "Failed"

    with pytest.raises(ComputeConfigError, match="restore-data-dir"):
        LocalComputeProvider(LocalCluster(tmp_path), hooks={"restore-data-dir": ["true"]})


def test_an_action_result_names_the_hosts_that_failed_and_the_last_line_each_wrote() -> None:
    result = ActionResult(
        "stop-etcd",
        "c-1",
        (
            HostActionResult("i-1", "m1", "Success", "stopped\n"),
            HostActionResult("i-2", "m2", "Failed", "stopping\nunit etcd.service not loaded\n\n"),
            HostActionResult("i-3", "m3", "TimedOut"),
        ),
    )

    assert not result.ok and [h.host_id for h in result.failed] == ["i-2", "i-3"]
    assert [h.last_line("none") for h in result.failed] == ["unit etcd.service not loaded", "none"]
    assert ActionResult("stop-etcd", None, result.hosts[:1]).ok


def test_template_defines_exactly_the_documented_ssm_documents() -> None:
    from etcdops_local.aws.stack import read_template

    template = read_template(Path(__file__).resolve().parents[2] / "template.yaml")
    in_template = {
        resource["Properties"]["Name"]["Fn::Sub"].removeprefix("${AWS::StackName}-"): resource
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::SSM::Document"
    }
    assert in_template == documented()
