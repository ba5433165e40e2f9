"""Where a cluster's certificates live, and what each one is.

Two stores hold the same things under the same roles:

- :class:`FilePki`, the local stack's ``pki/`` folder: ``ca.crt``/``ca.key``, one ``<member>.crt``/``.key``
  per member (its server and peer certificate), the operator's ``client.crt`` and the client certificates
  ``pki issue-client`` made, in ``clients/<name>.crt``/``.key`` (keys mode 0600); during a CA rotation
  ``ca-next.*``/``ca-old.*`` and the record ``ca-rotation.json``;
- :class:`SecretsPki`, Secrets Manager in AWS: the CA in ``etcdops/<cluster>/ca`` (its ``rotation`` field the
  record of a CA rotation under way, ``ca-next``/``ca-old`` beside it), each member's in
  ``etcdops/<cluster>/members/<name>`` (written by the EC2 provider) and each client's in
  ``etcdops/<cluster>/clients/<name>`` as ``{"certificate", "private_key", "ca", "client"}``.

:func:`describe` reads a certificate into a :class:`CertificateInfo` (serial, subject, SANs, expiry);
:func:`follow_ca_rotation` keeps the issued clients working across a CA rotation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from etcdops.adapters import pki
from etcdops.adapters.awserrors import aws_error, aws_error_code
from etcdops.domain.errors import PkiError
from etcdops.domain.fleet_tags import FLEET_TAG

Role = Literal["ca", "ca-next", "ca-old", "member", "client", "operator"]
CA_ROLES = ("ca", "ca-next", "ca-old")
ROTATION_RECORD = "ca-rotation.json"  # the local stack's record of a CA rotation, in its pki/ folder


@dataclass(frozen=True)
class CertificateInfo:
    """One certificate as ``pki list`` shows it."""

    role: Role
    name: str
    serial: str  # hex, as openssl prints it
    subject: str
    sans: tuple[str, ...]
    not_after: str  # ISO 8601, UTC
    issuer: str
    location: str  # a file path or a Secrets Manager secret id
    rotation: dict[str, int] | None = None  # on the CAs' rows while a CA rotation is under way: its record

    def to_json(self) -> dict[str, Any]:
        data = asdict(self) | {"sans": list(self.sans)}
        if self.rotation is None:
            data.pop("rotation")
        return data


def parse_rotation(value: object) -> dict[str, int] | None:
    """A CA rotation record (``{"begun": n, "finished": m}``; nothing: none under way) as numbers; None
    when it cannot be read."""
    if not value:
        return {"begun": 0, "finished": 0}
    try:
        return {"begun": int(value.get("begun", 0)), "finished": int(value.get("finished", 0))}  # type: ignore[attr-defined]
    except (TypeError, ValueError, AttributeError):
        return None


def with_rotation(found: list[CertificateInfo], record: dict[str, int]) -> list[CertificateInfo]:
    """The CAs' rows carry the record of the rotation under way (none: unchanged)."""
    if not record["begun"]:
        return found
    return [replace(c, rotation=dict(record)) if c.role in CA_ROLES else c for c in found]


def describe(cert_pem: bytes, *, role: Role, name: str, location: str) -> CertificateInfo:
    """The first certificate of ``cert_pem`` as a :class:`CertificateInfo`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise PkiError(f"{location}: not a PEM certificate ({exc})") from exc
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(
            [f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)]
            + [f"IP:{a}" for a in names.get_values_for_type(x509.IPAddress)]
        )
    except x509.ExtensionNotFound:
        sans = ()
    return CertificateInfo(
        role=role,
        name=name,
        serial=f"{cert.serial_number:x}",
        subject=cert.subject.rfc4514_string(),
        sans=sans,
        not_after=cert.not_valid_after_utc.isoformat(),
        issuer=cert.issuer.rfc4514_string(),
        location=location,
    )


class PkiStore(Protocol):
    """A cluster's CA and certificates, wherever they are kept."""

    def read_ca(self) -> pki.KeyPair: ...

    def client_location(self, name: str) -> str | None:
        """Where client ``name``'s certificate is kept, or None when there is none."""

    def put_client(self, name: str, pair: pki.KeyPair, ca_pem: bytes, *, replace: bool) -> str:
        """Store client ``name``'s certificate and key; returns where."""

    def certificates(self) -> list[CertificateInfo]:
        """Every certificate: the CA (and a CA rotation's next and old CA), the members', the clients'."""

    def clients(self) -> dict[str, tuple[pki.KeyPair, bytes | None]]:
        """Each client ``pki issue-client`` made: its certificate and key, and the CA it is given to trust
        (None where the clients share one trust file)."""


# ---- the local stack's files ---------------------------------------------------------------


class FilePki:
    """The ``pki/`` folder of a local stack; ``members`` are the names of the cluster's members."""

    def __init__(self, pki_dir: Path, members: list[str]) -> None:
        self.pki_dir = Path(pki_dir)
        self.members = members

    @property
    def clients_dir(self) -> Path:
        return self.pki_dir / "clients"

    def read_ca(self) -> pki.KeyPair:
        return pki.load_pem(self.pki_dir / "ca.crt", self.pki_dir / "ca.key")

    def client_location(self, name: str) -> str | None:
        cert = self.clients_dir / f"{name}.crt"
        return str(cert) if cert.exists() else None

    def put_client(self, name: str, pair: pki.KeyPair, ca_pem: bytes, *, replace: bool) -> str:
        cert = self.clients_dir / f"{name}.crt"
        if cert.exists() and not replace:
            raise PkiError(f"client {name}: {cert} exists")
        self.clients_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pki.write_pem(pair, cert, self.clients_dir / f"{name}.key")
        return str(cert)

    def rotation(self) -> dict[str, int]:
        """``{"begun": n, "finished": m}`` of the CA rotation under way; both 0 when none is."""
        path = self.pki_dir / ROTATION_RECORD
        try:
            record = parse_rotation(json.loads(path.read_text()))
        except FileNotFoundError:
            return {"begun": 0, "finished": 0}
        except (OSError, ValueError) as exc:
            raise PkiError(f"{path}: unreadable CA rotation record ({exc})") from None
        if record is None:
            raise PkiError(f"{path}: unreadable CA rotation record")
        return record

    def certificates(self) -> list[CertificateInfo]:
        found = [self._file("ca", "ca", self.pki_dir / "ca.crt")]
        for role in ("ca-next", "ca-old"):
            if (self.pki_dir / f"{role}.crt").exists():
                found.append(self._file(role, role, self.pki_dir / f"{role}.crt"))
        found += [self._file("member", m, self.pki_dir / f"{m}.crt") for m in self.members]
        found.append(self._file("operator", "etcdops", self.pki_dir / "client.crt"))
        if self.clients_dir.is_dir():
            found += [self._file("client", p.stem, p) for p in sorted(self.clients_dir.glob("*.crt"))]
        return with_rotation(found, self.rotation())

    def clients(self) -> dict[str, tuple[pki.KeyPair, bytes | None]]:
        if not self.clients_dir.is_dir():
            return {}
        return {  # the clients trust pki/trusted-ca.crt, which the rotation itself writes
            p.stem: (pki.load_pem(p, p.with_suffix(".key")), None) for p in sorted(self.clients_dir.glob("*.crt"))
        }

    @staticmethod
    def _file(role: Role, name: str, path: Path) -> CertificateInfo:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PkiError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        return describe(data, role=role, name=name, location=str(path))


# ---- Secrets Manager -----------------------------------------------------------------------


class SecretsPki:
    """Cluster ``cluster``'s certificates in Secrets Manager (``secrets``: a secretsmanager client).

    ``fleet``: the deployment (stack) whose fleet the cluster is of, when known (``pki issue-client
    --stack-name``): the client secrets it writes carry ``etcdops:fleet=<fleet>``, which the stack's grants
    on a registered cluster's issued clients require (README: IAM for a fleet)."""

    def __init__(self, secrets: Any, cluster: str, fleet: str | None = None) -> None:
        self.secrets = secrets
        self.cluster = cluster
        self.fleet = fleet

    @property
    def prefix(self) -> str:
        return f"etcdops/{self.cluster}/"

    def client_secret_id(self, name: str) -> str:
        return f"{self.prefix}clients/{name}"

    def read_ca(self) -> pki.KeyPair:
        from etcdops.adapters.compute.ec2 import parse_ca

        secret_id = f"{self.prefix}ca"
        text = self._text(secret_id)
        if text is None:
            raise PkiError(f"cluster {self.cluster}: no CA secret {secret_id} (is the cluster's name right?)")
        return parse_ca(f"secret {secret_id}", text)

    def client_location(self, name: str) -> str | None:
        secret_id = self.client_secret_id(name)
        return secret_id if self._text(secret_id) is not None else None

    def put_client(self, name: str, pair: pki.KeyPair, ca_pem: bytes, *, replace: bool) -> str:
        secret_id = self.client_secret_id(name)
        value = json.dumps(
            {
                "certificate": pair.cert_pem.decode(),
                "private_key": pair.key_pem.decode(),
                "ca": ca_pem.decode(),
                "client": name,
            }
        )
        tags = [{"Key": "etcdops:cluster", "Value": self.cluster}, {"Key": "etcdops:client", "Value": name}]
        if self.fleet:
            tags.append({"Key": FLEET_TAG, "Value": self.fleet})
        try:
            if replace:  # an existing secret is written in place (a CA rotation may only put values)
                try:
                    self.secrets.put_secret_value(SecretId=secret_id, SecretString=value)
                    if self.fleet:  # one issued before it knew its fleet gets the tag (never a rotation's put)
                        self.secrets.tag_resource(SecretId=secret_id, Tags=tags)
                    return secret_id
                except ClientError as exc:
                    if aws_error_code(exc) != "ResourceNotFoundException":
                        raise
            self.secrets.create_secret(
                Name=secret_id,
                SecretString=value,
                Description=f"etcd client certificate {name} of {self.cluster} (etcdops pki issue-client)",
                Tags=tags,
            )
        except (ClientError, BotoCoreError) as exc:
            if aws_error_code(exc) == "ResourceExistsException":
                raise PkiError(f"client {name}: secret {secret_id} exists") from None
            raise aws_error(f"writing {secret_id}", exc) from None
        return secret_id

    def rotation(self) -> dict[str, int]:
        """The record of the CA rotation under way (the CA secret's ``rotation`` field); both 0 when none is."""
        secret_id = f"{self.prefix}ca"
        try:
            data = json.loads(self._text(secret_id) or "")
        except ValueError:
            data = {}  # one PEM text: no rotation was ever recorded in it
        record = parse_rotation(data.get("rotation") if isinstance(data, dict) else None)
        if record is None:
            raise PkiError(f"{secret_id}: unreadable CA rotation record; fix or remove its rotation field")
        return record

    def certificates(self) -> list[CertificateInfo]:
        ca = self.read_ca()
        found = [describe(ca.cert_pem, role="ca", name="ca", location=f"{self.prefix}ca")]
        for role in ("ca-next", "ca-old"):
            secret_id = f"{self.prefix}{role}"
            pems = self._certificate(secret_id)
            if pems is not None:
                found.append(describe(pems[0], role=role, name=role, location=secret_id))
        for kind, role in (("members", "member"), ("clients", "client")):
            for secret_id in self._names(f"{self.prefix}{kind}/"):
                pems = self._certificate(secret_id)
                if pems is None:
                    continue  # deleted between the listing and the read
                name = secret_id.rsplit("/", 1)[1]
                found.append(describe(pems[0], role=role, name=name, location=secret_id))  # type: ignore[arg-type]
        return with_rotation(found, self.rotation())

    def clients(self) -> dict[str, tuple[pki.KeyPair, bytes | None]]:
        found: dict[str, tuple[pki.KeyPair, bytes | None]] = {}
        for secret_id in self._names(f"{self.prefix}clients/"):
            pems = self._certificate(secret_id)
            if pems is None:
                continue
            cert_pem, data = pems
            key, ca = data.get("private_key"), data.get("ca")
            if not isinstance(key, str):
                raise PkiError(f"{secret_id}: a client secret without its private_key field")
            trust = ca.encode() if isinstance(ca, str) else None
            found[secret_id.rsplit("/", 1)[1]] = (pki.KeyPair(cert_pem, key.encode()), trust)
        return found

    def _certificate(self, secret_id: str) -> tuple[bytes, dict[str, Any]] | None:
        """The secret's certificate (PEM) and its JSON; None when it does not exist."""
        text = self._text(secret_id)
        if text is None:
            return None
        try:
            data = json.loads(text)
            return data["certificate"].encode(), data
        except (ValueError, KeyError, TypeError, AttributeError):
            raise PkiError(f"{secret_id}: not a certificate secret (JSON with a certificate field)") from None

    def _names(self, prefix: str) -> Iterator[str]:
        try:
            pages = self.secrets.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}])
            names = sorted(s["Name"] for page in pages for s in page["SecretList"] if s["Name"].startswith(prefix))
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"listing secrets {prefix}*", exc) from None
        yield from names

    def _text(self, secret_id: str) -> str | None:
        """The secret's text; None when it does not exist or is scheduled for deletion."""
        try:
            value = self.secrets.get_secret_value(SecretId=secret_id)
        except ClientError as exc:
            if aws_error_code(exc) in ("ResourceNotFoundException", "InvalidRequestException"):
                return None
            raise aws_error(f"reading {secret_id}", exc) from None
        except BotoCoreError as exc:
            raise aws_error(f"reading {secret_id}", exc) from None

        text = value.get("SecretString")
        return text if isinstance(text, str) else None


# ---- across a CA rotation ------------------------------------------------------------------


def _issued_by(ca: pki.KeyPair, pair: pki.KeyPair) -> bool:
    try:
        pair.certificate.verify_directly_issued_by(ca.certificate)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _days(pair: pki.KeyPair) -> int:
    """The certificate's validity in whole days (at least 1): what its reissue is given again."""
    cert = pair.certificate
    return max(1, min((cert.not_valid_after_utc - cert.not_valid_before_utc).days, 3650))


def follow_ca_rotation(store: PkiStore, ca: pki.KeyPair, trust_pem: bytes, *, reissue: bool) -> list[str]:
    """The clients ``pki issue-client`` made follow a CA rotation where they are kept: each is given
    ``trust_pem`` (what the members trust now) where a client keeps its own, and with ``reissue`` (phase 2:
    ``ca`` issues now) a certificate of ``ca`` with the same name and as many days of validity, unless it
    holds one already or its certificate has expired. Converges when called again; returns the names
    reissued."""
    reissued = []
    for name, (pair, trust) in store.clients().items():
        renewed = pair
        if reissue and not _issued_by(ca, pair) and pair.not_after > datetime.now(UTC):  # an expired one stays so
            renewed = pki.issue_certificate(ca, name, kind="client", valid_days=_days(pair))
            reissued.append(name)
        if renewed is not pair or trust not in (None, trust_pem):
            store.put_client(name, renewed, trust_pem, replace=True)
    return reissued
