"""The host bootstrap contract (docs/host-bootstrap.md), as the user data an EC2 host receives.

The user data is a bash script for cloud-init. It writes the member's identity to
``/etc/etcdops/member.env``, creates the ``etcd`` user and directories, installs the certificate
fetcher and the systemd unit, and fetches the certificates once. It does not start etcd: the
runbook adds the member to the cluster first and then sends the StartEtcd document (via SSM), which
writes ``/etc/etcdops/etcd.env`` (the ``ETCD_*`` settings, with ``--initial-cluster-state``) and
starts ``etcd.service``.

The AMI (from the launch template) provides: bash, python3, the AWS CLI, the SSM agent, systemd,
and etcd's binaries in ``/usr/local/bin`` (``etcd``, ``etcdctl`` and, for 3.5+, ``etcdutl``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from etcdops.domain.compute.base import check_host_name
from etcdops.domain.compute.errors import ActionParameterError

CONTRACT_VERSION = 1
MEMBER_ENV = "/etc/etcdops/member.env"
ETCD_ENV = "/etc/etcdops/etcd.env"
PKI_DIR = "/etc/etcd/pki"
DATA_DIR = "/var/lib/etcd"
FETCH_CERTS = "/usr/local/sbin/etcdops-fetch-certs"
UNIT = "/etc/systemd/system/etcd.service"
ETCD_BIN = "/usr/local/bin/etcd"
SECRET_FIELDS = ("certificate", "private_key", "ca", "member")  # the member secret's JSON keys

_SAFE = re.compile(r"^[A-Za-z0-9._/@+=-]+$")  # values written into member.env and the script


@dataclass(frozen=True)
class BootstrapSettings:
    cluster: str
    member: str
    secret_id: str
    region: str
    client_port: int = 2379
    peer_port: int = 2380

    def env(self) -> dict[str, str]:
        values = {
            "ETCDOPS_CONTRACT": str(CONTRACT_VERSION),
            "ETCDOPS_CLUSTER": self.cluster,
            "ETCDOPS_MEMBER": self.member,
            "ETCDOPS_SECRET_ID": self.secret_id,
            "ETCDOPS_REGION": self.region,
            "ETCDOPS_CLIENT_PORT": str(self.client_port),
            "ETCDOPS_PEER_PORT": str(self.peer_port),
            "ETCDOPS_DATA_DIR": DATA_DIR,
            "ETCDOPS_PKI_DIR": PKI_DIR,
        }
        for key, value in values.items():
            if not _SAFE.match(value):
                raise ActionParameterError(f"user data: {key}={value!r} has characters a host file cannot take")
        return values


_FETCH_CERTS = r'''#!/usr/bin/env python3
"""etcdops: fetch this member's certificate secret (only this one) and write it for etcd."""
import json, os, pwd, subprocess, sys, time

conf = {}
with open("/etc/etcdops/member.env") as f:
    for line in f:
        if "=" in line and not line.startswith("#"):
            key, value = line.strip().split("=", 1)
            conf[key] = value
wait = int(sys.argv[1]) if len(sys.argv) > 1 else 600
deadline = time.monotonic() + wait
command = ["aws", "secretsmanager", "get-secret-value", "--region", conf["ETCDOPS_REGION"],
           "--secret-id", conf["ETCDOPS_SECRET_ID"], "--query", "SecretString", "--output", "text"]
while True:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        break
    if time.monotonic() > deadline:
        sys.exit("etcdops: cannot read %s: %s" % (conf["ETCDOPS_SECRET_ID"], done.stderr.strip()[-300:]))
    time.sleep(5)  # not created or not tagged for this instance yet
secret = json.loads(done.stdout)
if secret.get("member") != conf["ETCDOPS_MEMBER"]:
    sys.exit("etcdops: secret is for member %r, this host is %r" % (secret.get("member"), conf["ETCDOPS_MEMBER"]))
pki = conf["ETCDOPS_PKI_DIR"]
os.makedirs(pki, mode=0o700, exist_ok=True)
try:
    owner = pwd.getpwnam("etcd")
except KeyError:
    owner = None
for name, field, mode in (("ca.crt", "ca", 0o644), ("member.crt", "certificate", 0o644),
                          ("member.key", "private_key", 0o600)):
    path = os.path.join(pki, name)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(secret[field])
    os.chmod(tmp, mode)
    if owner:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    os.replace(tmp, path)
print("etcdops: certificates of %s written to %s" % (conf["ETCDOPS_MEMBER"], pki))
'''

_UNIT = f"""[Unit]
Description=etcd member (managed by etcdops)
Documentation=https://etcd.io/docs/
Wants=network-online.target
After=network-online.target
# written by the StartEtcd command once the member was added to the cluster
ConditionPathExists={ETCD_ENV}

[Service]
Type=notify
User=etcd
EnvironmentFile={ETCD_ENV}
ExecStart={ETCD_BIN}
Restart=on-failure
RestartSec=5s
# a joining member may need long to receive the leader's snapshot
TimeoutStartSec=0
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def user_data(settings: BootstrapSettings) -> str:
    """The user data script for a new member host (plain text; boto3 base64-encodes it)."""
    check_host_name(settings.member)
    env = "".join(f"{key}={value}\n" for key, value in settings.env().items())
    return f"""#!/bin/bash
# etcdops host bootstrap, contract version {CONTRACT_VERSION} (docs/host-bootstrap.md).
# etcd is NOT started here: the runbook adds the member, then sends the StartEtcd SSM document.
set -euo pipefail
umask 022
install -d -m 0755 /etc/etcdops
cat > {MEMBER_ENV} <<'ETCDOPS_EOF'
{env}ETCDOPS_EOF
chmod 0644 {MEMBER_ENV}
id etcd >/dev/null 2>&1 || useradd --system --home-dir {DATA_DIR} --shell /sbin/nologin etcd
install -d -m 0700 -o etcd -g etcd {DATA_DIR} {PKI_DIR}
cat > {FETCH_CERTS} <<'ETCDOPS_EOF'
{_FETCH_CERTS}ETCDOPS_EOF
chmod 0755 {FETCH_CERTS}
cat > {UNIT} <<'ETCDOPS_EOF'
{_UNIT}ETCDOPS_EOF
systemctl daemon-reload
# prefetch; StartEtcd fetches again (the certificate gains the host's address after launch)
{FETCH_CERTS} 900 || echo "etcdops: certificates not fetched yet; StartEtcd will fetch them" >&2
"""
