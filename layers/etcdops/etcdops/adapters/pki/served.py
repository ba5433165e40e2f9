"""The certificate a TLS endpoint serves, read in a handshake that trusts nothing (an untrusted or
expired certificate is still an answer): the health round's certificate expiry metric and the
certificate rotation's check that a member serves its new certificate."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from etcdops.domain.errors import PkiError

__all__ = ["parse_ip", "served_certificate", "served_certificate_expiry"]

# TLS record and handshake message types used when reading a failed TLS 1.2 handshake.
_RECORD_CHANGE_CIPHER_SPEC = 20
_RECORD_HANDSHAKE = 22
_HANDSHAKE_CERTIFICATE = 11


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
    der = served_certificate_der(endpoint, host, port, context, timeout)
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PkiError(f"{endpoint}: the served certificate cannot be parsed: {exc}") from exc


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``value`` as an IP address, or None when it is a name."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


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


def served_certificate_der(endpoint: str, host: str, port: int, context: ssl.SSLContext, timeout: float) -> bytes:
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
        server_hostname = None if parse_ip(host) is not None else host
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
    der = certificate_from_records(bytes(received))
    if der is None:
        raise PkiError(f"{endpoint}: TLS handshake failed before a certificate was received: {failure}")
    return der


def certificate_from_records(data: bytes) -> bytes | None:
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
