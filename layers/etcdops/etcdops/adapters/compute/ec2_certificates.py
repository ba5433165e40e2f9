"""The EC2 provider's certificates: the cluster CA from its secret, and each member's certificate, key
and trusted CAs in its own secret (``etcdops/<cluster>/members/<name>``), issued when missing, no longer
good or lacking a name, tagged so that only its instance may read it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters import pki
from etcdops.adapters.awserrors import aws_error_code, is_transient
from etcdops.adapters.compute import ec2_ca
from etcdops.adapters.compute.ec2_common import (
    _DENIED_CODES,
    FLEET_TAG,
    INSTANCE_ARN_TAG,
    MEMBER_TAG,
    SecretState,
    _api_error,
)
from etcdops.domain.compute.base import ActionResult, Host, check_host_name
from etcdops.domain.compute.errors import CertificateAuthorityError, ComputeApiError, HostNotFoundError
from etcdops.domain.errors import PkiError
from etcdops.domain.findings import Finding

if TYPE_CHECKING:
    from etcdops.adapters.compute.ec2 import Ec2ComputeProvider


class Ec2Certificates:
    """The certificate part of :class:`etcdops.adapters.compute.ec2.Ec2ComputeProvider`."""

    cluster: str
    stack_name: str
    secrets: Any
    certificate_days: int
    renew_before_days: int
    _ca_pair: pki.KeyPair | None

    if TYPE_CHECKING:

        @property
        def ca_secret_id(self) -> str: ...
        @property
        def owner_tags(self) -> dict[str, str]: ...
        def member_secret_id(self, name: str) -> str: ...
        def _find_instance(self, name: str) -> dict[str, Any] | None: ...
        def _host(self, instance: Mapping[str, Any]) -> Host: ...
        def _instance_arn(self, instance_id: str, owner: str) -> str: ...
        def run_action(
            self, action: str, hosts: Sequence[Host] | None = None, parameters: Mapping[str, str] | None = None
        ) -> ActionResult: ...

    def issue_certificates(self, name: str, address_sans: Sequence[str] = ()) -> str:
        instance = self._find_instance(check_host_name(name))
        host = self._host(instance) if instance else None
        return self._ensure_certificate(name, address_sans, host, instance.get("_owner", "") if instance else "")

    def renew_certificates(self, host: Host) -> str:
        """A new certificate in the member's secret, then RenewCertificates: the host fetches and writes it."""
        instance = self._find_instance(check_host_name(host.name))
        if instance is None:
            raise HostNotFoundError(f"no live instance for member {host.name} of cluster {self.cluster}")
        current = self._host(instance)
        secret_id = self._ensure_certificate(host.name, (), current, instance.get("_owner", ""), renew=True)
        pair, _ = self._read_member(secret_id)
        if pair is None:
            raise ComputeApiError(f"{secret_id}: the certificate just written cannot be read back")
        self.run_action("renew-certificates", [current], {"member_name": host.name})
        return f"{pair.certificate.serial_number:x}"

    def fetch_certificates(self, host: Host) -> None:
        """RenewCertificates: the host writes what its secret holds now (the trusted CAs included)."""
        instance = self._find_instance(check_host_name(host.name))
        if instance is None:
            raise HostNotFoundError(f"no live instance for member {host.name} of cluster {self.cluster}")
        self.run_action("renew-certificates", [self._host(instance)], {"member_name": host.name})

    def _ca(self) -> pki.KeyPair:
        if self._ca_pair is None:
            self._ca_pair = self.read_ca()
        return self._ca_pair

    def read_ca(self) -> pki.KeyPair:
        """The cluster CA from its secret, checked: CertificateAuthorityError says what is wrong and the fix."""
        subject = f"secret {self.ca_secret_id}"
        try:
            secret = self.secrets.get_secret_value(SecretId=self.ca_secret_id)
        except ClientError as exc:
            code = aws_error_code(exc)
            if is_transient(exc):
                raise _api_error(f"reading {self.ca_secret_id}", exc) from exc
            if code == "ResourceNotFoundException":
                problem = "does not exist."
            elif code in _DENIED_CODES:
                problem = f"the RunbookStep role may not read it ({code})."
                fix = (
                    f"allow secretsmanager:GetSecretValue on {self.ca_secret_id} (and kms:Decrypt on the secret's "
                    "KMS key if it has its own) to the RunbookStep role only."
                )
                raise CertificateAuthorityError(Finding("ca", subject, problem, fix)) from None
            elif code == "DecryptionFailure":
                problem = "Secrets Manager could not decrypt it with its KMS key (DecryptionFailure)."
            else:
                problem = f"reading it failed: {code}: {exc}."
            raise CertificateAuthorityError(Finding("ca", subject, problem, CA_SECRET_FIX)) from None
        except BotoCoreError as exc:
            raise _api_error(f"reading {self.ca_secret_id}", exc) from exc
        text = secret.get("SecretString")
        if not isinstance(text, str):
            raise CertificateAuthorityError(Finding("ca", subject, "holds binary data, not text.", CA_SECRET_FIX))
        return parse_ca(subject, text)

    def _read_member(self, secret_id: str) -> tuple[pki.KeyPair | None, SecretState]:
        """The member's key pair (None if missing or unreadable) and whether its secret exists."""
        try:
            text = self.secrets.get_secret_value(SecretId=secret_id)["SecretString"]
        except ClientError as exc:
            if aws_error_code(exc) == "ResourceNotFoundException":
                return None, "missing"
            if aws_error_code(exc) == "InvalidRequestException":  # scheduled for deletion
                return None, "deleted"
            if aws_error_code(exc) in _DENIED_CODES:
                return None, "denied"
            raise _api_error(f"reading {secret_id}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"reading {secret_id}", exc) from exc
        try:
            data = json.loads(text)
            return pki.KeyPair(data["certificate"].encode(), data["private_key"].encode()), "present"
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, "present"  # unreadable: it is replaced

    def _ensure_certificate(
        self, name: str, address_sans: Sequence[str], host: Host | None, owner: str, *, renew: bool = False
    ) -> str:
        """The member's certificate, issued when missing, not good any more or lacking a name (``renew``:
        issued in any case, with the names the old one had)."""
        secret_id = self.member_secret_id(name)
        ca = self._ca()
        current, secret_state = self._read_member(secret_id)
        ips, dns = _split_sans(["127.0.0.1", "localhost", name, *address_sans, *([host.address] if host else [])])
        if current is not None:
            have_ips, have_dns = _sans_of(current)
            wanted = set(ips) | set(dns)
            if not renew and wanted <= set(have_ips) | set(have_dns) and self._still_good(ca, current):
                ips, dns = [], []  # nothing to issue
            else:
                ips, dns = _merge(have_ips, ips), _merge(have_dns, dns)
        if ips or dns:
            pair = pki.issue_certificate(
                ca, name, kind="peer", dns_names=dns, ip_addresses=ips, valid_days=self.certificate_days
            )
            value = json.dumps(
                {
                    "certificate": pair.cert_pem.decode(),
                    "private_key": pair.key_pem.decode(),
                    "ca": ec2_ca.trusted(cast("Ec2ComputeProvider", self)),  # both CAs while a rotation trusts both
                    "member": name,
                }
            )
            self._write_secret(secret_id, name, value, secret_state)
        if host is not None and owner:
            try:
                self.secrets.tag_resource(
                    SecretId=secret_id,
                    Tags=[{"Key": INSTANCE_ARN_TAG, "Value": self._instance_arn(host.host_id, owner)}],
                )
            except (ClientError, BotoCoreError) as exc:
                raise _api_error(f"tagging {secret_id} for {host.host_id}", exc) from exc
        return secret_id

    def _still_good(self, ca: pki.KeyPair, pair: pki.KeyPair) -> bool:
        try:
            pki.verify_chain(ca, pair)
        except PkiError:
            return False
        left = pair.not_after.timestamp() - time.time()
        return left > self.renew_before_days * 86400

    def _write_secret(self, secret_id: str, name: str, value: str, state: SecretState) -> None:
        try:
            if state in ("missing", "denied"):
                try:
                    self.secrets.create_secret(
                        Name=secret_id,
                        SecretString=value,
                        Description=f"etcd member {name} of {self.cluster}: certificate, key, CA (etcdops)",
                        Tags=[
                            *({"Key": k, "Value": v} for k, v in self.owner_tags.items()),
                            {"Key": MEMBER_TAG, "Value": name},
                        ],
                    )
                    return
                except ClientError as exc:
                    if aws_error_code(exc) != "ResourceExistsException":
                        raise
                    if state == "denied":
                        raise ComputeApiError(
                            f"{secret_id} exists but this function may not read it: a registered cluster's secrets "
                            f"must be tagged {FLEET_TAG}={self.stack_name} (README: IAM for a fleet)"
                        ) from None
            if state == "deleted":
                self.secrets.restore_secret(SecretId=secret_id)  # retired with an earlier host of this name
            self.secrets.put_secret_value(SecretId=secret_id, SecretString=value)
        except (ClientError, BotoCoreError) as exc:
            raise _api_error(f"writing {secret_id}", exc) from exc

    def _delete_member_secret(self, name: str) -> None:
        secret_id = self.member_secret_id(name)
        try:
            self.secrets.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)
        except ClientError as exc:
            if aws_error_code(exc) not in ("ResourceNotFoundException", "InvalidRequestException"):
                raise _api_error(f"deleting {secret_id}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"deleting {secret_id}", exc) from exc


CA_SECRET_FIX = (
    'store the cluster CA\'s certificate and key as JSON {"certificate": "<ca.crt PEM>", '
    '"private_key": "<ca.key PEM>"} (or both PEM blocks in one text); see README "Deploying to AWS".'
)
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


def parse_ca(subject: str, text: str) -> pki.KeyPair:
    """``{"certificate": PEM, "private_key": PEM}``, or one PEM text holding both blocks; a CA valid now."""

    def refuse(problem: str) -> CertificateAuthorityError:
        return CertificateAuthorityError(Finding("ca", subject, problem, CA_SECRET_FIX))

    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise refuse("is not valid JSON.") from None
        if not isinstance(data, dict):
            raise refuse("is JSON but not an object.")
        missing = [f for f in ("certificate", "private_key") if not isinstance(data.get(f), str) or not data[f].strip()]
        if missing:
            raise refuse(f"has no {' and no '.join(missing)} field.")
        cert_pem, key_pem = data["certificate"], data["private_key"]
    else:
        blocks = list(_PEM_BLOCK.finditer(text))
        cert = next((b for b in blocks if b.group(1) == "CERTIFICATE"), None)
        key = next((b for b in blocks if b.group(1).endswith("PRIVATE KEY")), None)
        if cert is None:
            raise refuse("holds no PEM certificate.")
        if key is None:
            raise refuse("holds a certificate but no private key (was only ca.crt stored?).")
        if key.group(1) == "ENCRYPTED PRIVATE KEY":
            raise refuse("holds an encrypted private key; etcdops needs it unencrypted (Secrets Manager encrypts it).")
        cert_pem, key_pem = cert.group(0) + "\n", key.group(0) + "\n"
    pair = pki.KeyPair(cert_pem.encode(), key_pem.encode())
    try:
        pki.check_ca(pair)
    except PkiError as exc:
        raise refuse(f"is not a usable CA: {str(exc).removeprefix('ca: ')}.") from None
    return pair


def _split_sans(values: Sequence[str]) -> tuple[list[str], list[str]]:
    import ipaddress

    ips: list[str] = []
    dns: list[str] = []
    for value in values:
        if not value:
            continue
        try:
            ips.append(str(ipaddress.ip_address(value)))
        except ValueError:
            dns.append(value)
    return list(dict.fromkeys(ips)), list(dict.fromkeys(dns))


def _sans_of(pair: pki.KeyPair) -> tuple[list[str], list[str]]:
    from cryptography import x509

    try:
        san = pair.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)], list(san.get_values_for_type(x509.DNSName))


def _merge(first: list[str], second: list[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))
