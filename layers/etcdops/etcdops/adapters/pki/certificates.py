"""Certificates for etcd: a small CA, server/peer/client certificates and their checks.

Keys are ECDSA P-256. The certificates are shaped for Go's ``crypto/tls`` (etcd) and BoringSSL
(grpcio): subject alternative names instead of a bare common name, extended key usages that match
what each side checks, and key identifiers so chains are found quickly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdops.adapters.pki.served import parse_ip
from etcdops.domain.errors import PkiError

__all__ = [
    "CertificateKind",
    "KeyPair",
    "check_ca",
    "check_is_ca",
    "create_ca",
    "issue_certificate",
    "same_public_key",
    "verify_chain",
]

CertificateKind = Literal["server", "peer", "client"]
_KINDS: tuple[str, ...] = get_args(CertificateKind)
_BACKDATE = timedelta(minutes=5)
_MAX_VALID_DAYS = 36500
_MAX_COMMON_NAME = 64  # upper bound of X.520 commonName
_EKUS: dict[str, tuple[x509.ObjectIdentifier, ...]] = {
    # etcd's grpc-gateway dials its own port presenting the server certificate, so a server
    # certificate has to be usable as a client certificate too.
    "server": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    "peer": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH,),
}
# CA keys we can sign with (an existing cluster's CA may be RSA or Ed25519).
_ISSUER_KEY_TYPES = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its unencrypted PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        try:
            return x509.load_pem_x509_certificate(self.cert_pem)
        except ValueError as exc:
            raise PkiError(f"certificate PEM cannot be parsed: {exc}") from exc

    @property
    def private_key(self) -> PrivateKeyTypes:
        """The parsed private key."""
        try:
            return serialization.load_pem_private_key(self.key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise PkiError(f"private key PEM cannot be parsed: {exc}") from exc

    @property
    def not_after(self) -> datetime:
        """End of the certificate's validity, as an aware UTC datetime."""
        return self.certificate.not_valid_after_utc


# ---- creating certificates ----------------------------------------------------------------


def create_ca(common_name: str, *, valid_days: int = 3650) -> KeyPair:
    """Create a self-signed CA that may sign leaf certificates only (path length 0)."""
    _check_common_name(common_name)
    _check_valid_days(valid_days)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_to_pem(key))


def issue_certificate(
    ca: KeyPair,
    common_name: str,
    *,
    kind: CertificateKind,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    valid_days: int = 365,
) -> KeyPair:
    """Issue a server, peer or client certificate signed by ``ca``.

    The certificate never outlives the CA: its end date is cut to the CA's if it would be later.
    """
    if kind not in _KINDS:
        raise PkiError(f"kind: {kind!r} is not one of {', '.join(_KINDS)}")
    _check_common_name(common_name)
    _check_valid_days(valid_days)
    san = _subject_alternative_names(dns_names, ip_addresses)

    ca_cert = ca.certificate
    ca_key = _issuer_key(ca)
    check_is_ca(ca_cert)
    now = _now()
    if ca_cert.not_valid_after_utc <= now:
        raise PkiError(f"ca: the CA certificate expired on {ca_cert.not_valid_after_utc.isoformat()}")
    not_after = min(now + timedelta(days=valid_days), ca_cert.not_valid_after_utc)

    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - _BACKDATE, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # ECDSA keys only sign in (EC)DHE handshakes; keyEncipherment is an RSA-only usage.
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(_EKUS[kind])), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_cert, ca_key), critical=False)
    )
    if san:
        # RFC 5280 forbids an empty SubjectAlternativeName, so it is only added when there are names.
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, _signature_hash(ca_key))
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_to_pem(key))


# ---- checks -------------------------------------------------------------------------------


def check_ca(ca: KeyPair) -> None:
    """Raise PkiError unless ``ca`` can issue certificates now: a CA certificate, valid today, and its own
    key, of a type that signs."""
    cert = ca.certificate
    check_is_ca(cert)
    _issuer_key(ca)
    now = _now()
    if cert.not_valid_after_utc <= now:
        raise PkiError(f"ca: the CA certificate {_subject(cert)!r} expired on {cert.not_valid_after_utc.isoformat()}")
    if cert.not_valid_before_utc > now:
        raise PkiError(f"ca: the CA certificate {_subject(cert)!r} is not valid before {cert.not_valid_before_utc}")


def verify_chain(ca: KeyPair, leaf: KeyPair) -> None:
    """Raise PkiError unless ``leaf`` is signed by ``ca``, both are valid now, and the leaf key fits."""
    ca_cert, leaf_cert = ca.certificate, leaf.certificate
    check_is_ca(ca_cert)
    try:
        leaf_cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        detail = "bad signature" if isinstance(exc, InvalidSignature) else str(exc)
        raise PkiError(
            f"certificate {_subject(leaf_cert)!r} is not signed by CA {_subject(ca_cert)!r}: {detail}"
        ) from exc
    now = _now()
    for label, cert in (("CA", ca_cert), ("certificate", leaf_cert)):
        if cert.not_valid_after_utc <= now:
            raise PkiError(f"{label} {_subject(cert)!r} expired on {cert.not_valid_after_utc.isoformat()}")
        if cert.not_valid_before_utc > now:
            raise PkiError(f"{label} {_subject(cert)!r} is not valid before {cert.not_valid_before_utc.isoformat()}")
    if not same_public_key(leaf_cert.public_key(), leaf.private_key):
        raise PkiError(f"certificate {_subject(leaf_cert)!r}: the private key does not belong to it")


# ---- helpers: building --------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _check_common_name(common_name: str) -> None:
    if not isinstance(common_name, str) or not common_name.strip():
        raise PkiError(f"common_name: must be a non-empty string, got {common_name!r}")
    if len(common_name) > _MAX_COMMON_NAME:
        raise PkiError(f"common_name: at most {_MAX_COMMON_NAME} characters, got {len(common_name)}")


def _check_valid_days(valid_days: int) -> None:
    if isinstance(valid_days, bool) or not isinstance(valid_days, int):
        raise PkiError(f"valid_days: must be an integer, got {valid_days!r}")
    if not 0 < valid_days <= _MAX_VALID_DAYS:
        raise PkiError(f"valid_days: must be between 1 and {_MAX_VALID_DAYS}, got {valid_days}")


def _subject_alternative_names(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> list[x509.GeneralName]:
    for label, values in (("dns_names", dns_names), ("ip_addresses", ip_addresses)):
        if isinstance(values, str | bytes):
            raise PkiError(f"{label}: must be a sequence of strings, not a single string {values!r}")
    names: list[x509.GeneralName] = []
    for dns_name in dict.fromkeys(dns_names):
        if not isinstance(dns_name, str) or not dns_name or dns_name != dns_name.strip():
            raise PkiError(f"dns_names: {dns_name!r} is not a DNS name")
        if parse_ip(dns_name) is not None:
            raise PkiError(f"dns_names: {dns_name!r} is an IP address; pass it in ip_addresses")
        try:
            names.append(x509.DNSName(dns_name))
        except ValueError as exc:
            raise PkiError(f"dns_names: {dns_name!r} is not a DNS name ({exc})") from exc
    seen_ips: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for value in ip_addresses:
        address = parse_ip(str(value))
        if address is None:
            raise PkiError(f"ip_addresses: {value!r} is not an IP address")
        if address not in seen_ips:
            seen_ips.add(address)
            names.append(x509.IPAddress(address))
    return names


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_identifier(
    ca_cert: x509.Certificate, ca_key: CertificateIssuerPrivateKeyTypes
) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _issuer_key(ca: KeyPair) -> CertificateIssuerPrivateKeyTypes:
    key = ca.private_key
    if not isinstance(key, _ISSUER_KEY_TYPES):
        raise PkiError(f"ca: a {type(key).__name__} key cannot sign certificates")
    if not same_public_key(ca.certificate.public_key(), key):
        raise PkiError("ca: the private key does not belong to the CA certificate")
    return key


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_is_ca(cert: x509.Certificate) -> None:
    if not is_ca(cert):
        raise PkiError(f"ca: certificate {_subject(cert)!r} is not a CA certificate")


def same_public_key(public_key: PublicKeyTypes, private_key: PrivateKeyTypes) -> bool:
    encoding, fmt = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return public_key.public_bytes(encoding, fmt) == private_key.public_key().public_bytes(encoding, fmt)
    except (ValueError, TypeError):
        return False


def _key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()
