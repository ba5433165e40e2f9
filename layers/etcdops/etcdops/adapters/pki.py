"""Certificates for etcd: a small CA, server/peer/client certificates, PEM files and expiry checks.

Keys are ECDSA P-256. The certificates are shaped for Go's ``crypto/tls`` (etcd) and BoringSSL
(grpcio): subject alternative names instead of a bare common name, extended key usages that match
what each side checks, and key identifiers so chains are found quickly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

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

from etcdops.domain.errors import PkiError

__all__ = [
    "CertificateKind",
    "KeyPair",
    "certificate_expiry",
    "certificate_serial",
    "create_ca",
    "issue_certificate",
    "load_pem",
    "served_certificate",
    "served_certificate_expiry",
    "verify_chain",
    "write_pem",
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
# TLS record and handshake message types used when reading a failed TLS 1.2 handshake.
_RECORD_CHANGE_CIPHER_SPEC = 20
_RECORD_HANDSHAKE = 22
_HANDSHAKE_CERTIFICATE = 11


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
    _check_is_ca(ca_cert)
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


# ---- files --------------------------------------------------------------------------------


def write_pem(pair: KeyPair, cert_path: Path, key_path: Path) -> None:
    """Write the certificate (mode 0644) and key (mode 0600), each replaced atomically.

    The two files are replaced one after the other, key first; a crash in between can leave a new
    key next to an old certificate, which :func:`load_pem` reports.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    if cert_path.resolve() == key_path.resolve():
        raise PkiError(f"cert_path and key_path are the same file: {cert_path}")
    _atomic_write(key_path, pair.key_pem, 0o600)
    _atomic_write(cert_path, pair.cert_pem, 0o644)


def write_trusted(path: Path, cert_pems: Sequence[bytes]) -> None:
    """A trust bundle: the CA certificates ``cert_pems`` (each checked to be a CA) in one file, replaced
    atomically (mode 0644), as etcd's ``--trusted-ca-file`` and clients' CA file read it."""
    for pem in cert_pems:
        _check_is_ca(_parse_certificate_file(Path(path), pem))
    _atomic_write(Path(path), b"".join(p if p.endswith(b"\n") else p + b"\n" for p in cert_pems), 0o644)


def load_pem(cert_path: Path, key_path: Path) -> KeyPair:
    """Read a certificate and its key, checking both parse and belong together."""
    cert_path, key_path = Path(cert_path), Path(key_path)
    cert_pem = _read(cert_path)
    key_pem = _read(key_path)
    cert = _parse_certificate_file(cert_path, cert_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:
        raise PkiError(f"{key_path}: the private key is encrypted; an unencrypted key is needed") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{key_path}: not a PEM private key ({exc})") from exc
    if not _same_public_key(cert.public_key(), key):
        raise PkiError(f"{key_path}: the private key does not belong to the certificate {cert_path}")
    return KeyPair(cert_pem=cert_pem, key_pem=key_pem)


def certificate_serial(cert_path: Path) -> int:
    """The serial number of the first certificate in a PEM file."""
    cert_path = Path(cert_path)
    return _parse_certificate_file(cert_path, _read(cert_path)).serial_number


def certificate_expiry(cert_path: Path) -> datetime:
    """The end of validity (aware UTC) of the first certificate in a PEM file."""
    cert_path = Path(cert_path)
    return _parse_certificate_file(cert_path, _read(cert_path)).not_valid_after_utc


# ---- checks -------------------------------------------------------------------------------


def check_ca(ca: KeyPair) -> None:
    """Raise PkiError unless ``ca`` can issue certificates now: a CA certificate, valid today, and its own
    key, of a type that signs."""
    cert = ca.certificate
    _check_is_ca(cert)
    _issuer_key(ca)
    now = _now()
    if cert.not_valid_after_utc <= now:
        raise PkiError(f"ca: the CA certificate {_subject(cert)!r} expired on {cert.not_valid_after_utc.isoformat()}")
    if cert.not_valid_before_utc > now:
        raise PkiError(f"ca: the CA certificate {_subject(cert)!r} is not valid before {cert.not_valid_before_utc}")


def verify_chain(ca: KeyPair, leaf: KeyPair) -> None:
    """Raise PkiError unless ``leaf`` is signed by ``ca``, both are valid now, and the leaf key fits."""
    ca_cert, leaf_cert = ca.certificate, leaf.certificate
    _check_is_ca(ca_cert)
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
    if not _same_public_key(leaf_cert.public_key(), leaf.private_key):
        raise PkiError(f"certificate {_subject(leaf_cert)!r}: the private key does not belong to it")


def served_certificate_expiry(
    endpoint: str, *, timeout: float = 2.0, cert: Path | None = None, key: Path | None = None
) -> datetime:
    """The end of validity of the certificate a TLS endpoint presents, without verifying it.

    ``endpoint`` is ``https://host:port`` or ``host:port``. ``cert``/``key`` optionally present a
    client certificate (servers requiring one otherwise log a rejected handshake). A server that
    rejects us after sending its certificate still gives an answer.
    """
    return served_certificate(endpoint, timeout=timeout, cert=cert, key=key).not_valid_after_utc


def served_certificate(
    endpoint: str, *, timeout: float = 2.0, cert: Path | None = None, key: Path | None = None
) -> x509.Certificate:
    """The certificate a TLS endpoint presents in a fresh handshake (see :func:`served_certificate_expiry`)."""
    host, port = _host_port(endpoint)
    context = _probe_context(endpoint, cert, key)
    der = _served_certificate_der(endpoint, host, port, context, timeout)
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PkiError(f"{endpoint}: the served certificate cannot be parsed: {exc}") from exc


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
        if _parse_ip(dns_name) is not None:
            raise PkiError(f"dns_names: {dns_name!r} is an IP address; pass it in ip_addresses")
        try:
            names.append(x509.DNSName(dns_name))
        except ValueError as exc:
            raise PkiError(f"dns_names: {dns_name!r} is not a DNS name ({exc})") from exc
    seen_ips: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for value in ip_addresses:
        address = _parse_ip(str(value))
        if address is None:
            raise PkiError(f"ip_addresses: {value!r} is not an IP address")
        if address not in seen_ips:
            seen_ips.add(address)
            names.append(x509.IPAddress(address))
    return names


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


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
    if not _same_public_key(ca.certificate.public_key(), key):
        raise PkiError("ca: the private key does not belong to the CA certificate")
    return key


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _check_is_ca(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PkiError(f"ca: certificate {_subject(cert)!r} is not a CA certificate")


def _same_public_key(public_key: PublicKeyTypes, private_key: PrivateKeyTypes) -> bool:
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


# ---- helpers: files -----------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write via a private temporary file in the same directory, fsync, chmod, then rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600, so a key is never readable by others.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise PkiError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise PkiError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"{path}: file not found") from exc
    except OSError as exc:
        raise PkiError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _parse_certificate_file(path: Path, data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM certificate ({exc})") from exc


# ---- helpers: reading a served certificate ------------------------------------------------


def _host_port(endpoint: str) -> tuple[str, int]:
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise PkiError(f"endpoint: must be a non-empty string, got {endpoint!r}")
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    if parts.scheme not in ("", "https"):
        raise PkiError(f"{endpoint}: not a TLS endpoint (scheme {parts.scheme!r}; expected https)")
    try:
        port = parts.port
    except ValueError as exc:
        raise PkiError(f"{endpoint}: bad port ({exc})") from exc
    if not parts.hostname or port is None:
        raise PkiError(f"{endpoint}: expected host:port")
    return parts.hostname, port


def _probe_context(endpoint: str, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # We want whatever certificate the server has, even an untrusted or expired one.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if (cert is None) != (key is None):
        raise PkiError(f"{endpoint}: cert and key must be given together")
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(certfile=cert, keyfile=key)
        except (OSError, ssl.SSLError) as exc:
            raise PkiError(f"{endpoint}: cannot load client certificate {cert} / key {key}: {exc}") from exc
    return context


def _served_certificate_der(endpoint: str, host: str, port: int, context: ssl.SSLContext, timeout: float) -> bytes:
    """Run a TLS handshake over memory buffers, keeping the raw bytes the server sent.

    If the handshake fails (a TLS 1.2 server refusing our missing client certificate fails it
    after sending its own), the certificate is read from the plaintext handshake records.
    """
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise PkiError(f"{endpoint}: connection timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise PkiError(f"{endpoint}: cannot connect: {exc.strerror or exc}") from exc
    with sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        server_hostname = None if _parse_ip(host) is not None else host
        tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_hostname)
        received = bytearray()
        failure = ""
        done = False
        try:
            while True:
                try:
                    tls.do_handshake()
                    done = True
                    break
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    failure = str(exc)
                    break
                sock.sendall(outgoing.read())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    failure = "the server closed the connection during the TLS handshake"
                    break
                received += chunk
                incoming.write(chunk)
        except TimeoutError as exc:
            raise PkiError(f"{endpoint}: TLS handshake timed out after {timeout:g}s") from exc
        except OSError as exc:
            failure = exc.strerror or str(exc)
        if done:
            # Send our last handshake flight so the server sees a complete handshake.
            with contextlib.suppress(OSError):
                sock.sendall(outgoing.read())
            der = tls.getpeercert(binary_form=True)
            if der:
                return der
            raise PkiError(f"{endpoint}: the server presented no certificate")
    der = _certificate_from_records(bytes(received))
    if der is None:
        raise PkiError(f"{endpoint}: TLS handshake failed before a certificate was received: {failure}")
    return der


def _certificate_from_records(data: bytes) -> bytes | None:
    """The first certificate of a plaintext (TLS 1.2 or older) Certificate message, if present."""
    handshake = bytearray()
    pos = 0
    while pos + 5 <= len(data):
        record_type = data[pos]
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        body = data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if record_type == _RECORD_CHANGE_CIPHER_SPEC:
            break  # everything after this is encrypted
        if record_type == _RECORD_HANDSHAKE:
            handshake += body
    pos = 0
    while pos + 4 <= len(handshake):
        message_type = handshake[pos]
        length = int.from_bytes(handshake[pos + 1 : pos + 4], "big")
        message = bytes(handshake[pos + 4 : pos + 4 + length])
        if len(message) < length:
            return None
        pos += 4 + length
        if message_type == _HANDSHAKE_CERTIFICATE:
            # certificate_list<3 bytes length> { cert_data<3 bytes length> ... }
            if len(message) < 6:
                return None
            first_length = int.from_bytes(message[3:6], "big")
            der = message[6 : 6 + first_length]
            return der if der and len(der) == first_length else None
    return None
