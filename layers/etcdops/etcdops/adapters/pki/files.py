"""Certificates and keys as PEM files: written atomically (keys 0600), read back with their checks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from etcdops.adapters.pki.certificates import KeyPair, check_is_ca, is_ca, same_public_key
from etcdops.domain.errors import PkiError

__all__ = [
    "atomic_write",
    "ca_expiries",
    "certificate_expiry",
    "certificate_serial",
    "load_pem",
    "write_pem",
    "write_trusted",
]


def write_pem(pair: KeyPair, cert_path: Path, key_path: Path) -> None:
    """Write the certificate (mode 0644) and key (mode 0600), each replaced atomically.

    The two files are replaced one after the other, key first; a crash in between can leave a new
    key next to an old certificate, which :func:`load_pem` reports.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    if cert_path.resolve() == key_path.resolve():
        raise PkiError(f"cert_path and key_path are the same file: {cert_path}")
    atomic_write(key_path, pair.key_pem, 0o600)
    atomic_write(cert_path, pair.cert_pem, 0o644)


def write_trusted(path: Path, cert_pems: Sequence[bytes]) -> None:
    """A trust bundle: the CA certificates ``cert_pems`` (each checked to be a CA) in one file, replaced
    atomically (mode 0644), as etcd's ``--trusted-ca-file`` and clients' CA file read it."""
    for pem in cert_pems:
        check_is_ca(_parse_certificate_file(Path(path), pem))
    atomic_write(Path(path), b"".join(p if p.endswith(b"\n") else p + b"\n" for p in cert_pems), 0o644)


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
    if not same_public_key(cert.public_key(), key):
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


def ca_expiries(bundle_path: Path) -> dict[str, datetime]:
    """Each CA certificate of a PEM file (one CA, or a bundle during a CA rotation), named by its subject
    and serial, and its end of validity (aware UTC)."""
    bundle_path = Path(bundle_path)
    try:
        certs = x509.load_pem_x509_certificates(_read(bundle_path))
    except ValueError as exc:
        raise PkiError(f"{bundle_path}: not a PEM certificate file ({exc})") from None
    return {
        f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x})": cert.not_valid_after_utc
        for cert in certs
        if is_ca(cert)
    }


def atomic_write(path: Path, data: bytes, mode: int) -> None:
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
