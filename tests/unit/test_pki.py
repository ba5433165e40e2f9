"""Certificates made by etcdops.adapters.pki: their shape, their files, and the errors for bad input."""

from __future__ import annotations

import ipaddress
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdops.adapters import pki
from etcdops.adapters.pki.served import certificate_from_records
from etcdops.domain.errors import PkiError

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("unit test CA")


@pytest.fixture(scope="module")
def server(ca: pki.KeyPair) -> pki.KeyPair:
    return pki.issue_certificate(
        ca,
        "member-1",
        kind="server",
        dns_names=["localhost", "member-1.etcd"],
        ip_addresses=["127.0.0.1", "::1"],
    )


E = TypeVar("E", bound=x509.ExtensionType)


def extension(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sign_by_hand(
    ca: pki.KeyPair | None,
    *,
    not_before: datetime,
    not_after: datetime,
    ca_flag: bool = False,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    name: str = "by hand",
    key_format: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
) -> pki.KeyPair:
    """A certificate with arbitrary dates or key, which issue_certificate and create_ca would never make:
    issued by ``ca`` (None: self-signed), for ``key`` (by default a new P-256 key)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer = key if ca is None else ca.private_key
    assert isinstance(signer, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if ca is None else ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())
    return pki.KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


# ---- the CA -------------------------------------------------------------------------------


def test_ca_is_a_self_signed_p256_ca_for_leaves_only(ca: pki.KeyPair) -> None:
    cert = ca.certificate
    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign and not usage.value.digital_signature
    ski = extension(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "unit test CA"
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    cert.verify_directly_issued_by(cert)


def test_ca_validity_matches_valid_days() -> None:
    before = datetime.now(UTC)
    ca = pki.create_ca("short CA", valid_days=10)
    assert ca.not_after.tzinfo is not None
    assert abs(ca.not_after - (before + timedelta(days=10))) < timedelta(minutes=1)
    assert ca.certificate.not_valid_before_utc <= before - timedelta(minutes=4)


# ---- leaves -------------------------------------------------------------------------------


def test_leaf_signature_checks_out_with_the_ca_public_key(ca: pki.KeyPair, server: pki.KeyPair) -> None:
    leaf = server.certificate
    ca_public_key = ca.certificate.public_key()
    assert isinstance(ca_public_key, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    ca_public_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm))
    assert leaf.issuer == ca.certificate.subject
    pki.verify_chain(ca, server)


def test_leaf_extensions(ca: pki.KeyPair, server: pki.KeyPair) -> None:
    cert = server.certificate
    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = extension(cert, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    assert not usage.key_encipherment  # an RSA-only usage; the key is ECDSA
    aki = extension(cert, x509.AuthorityKeyIdentifier).value
    ca_ski = extension(ca.certificate, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    ski = extension(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "member-1"
    assert cert.serial_number != ca.certificate.serial_number
    assert 0 < cert.serial_number < 2**159


def test_subject_alternative_names(server: pki.KeyPair) -> None:
    san = extension(server.certificate, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "member-1.etcd"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_duplicate_names_are_listed_once(ca: pki.KeyPair) -> None:
    pair = pki.issue_certificate(
        ca, "m", kind="peer", dns_names=["a", "a"], ip_addresses=["10.0.0.1", "10.0.0.1", "::1", "0:0::1"]
    )
    san = extension(pair.certificate, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a"]
    assert len(san.get_values_for_type(x509.IPAddress)) == 2


def test_a_certificate_without_names_has_no_san_extension(ca: pki.KeyPair) -> None:
    pair = pki.issue_certificate(ca, "operator", kind="client")
    with pytest.raises(x509.ExtensionNotFound):
        pair.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("server", [SERVER_AUTH, CLIENT_AUTH]), ("peer", [SERVER_AUTH, CLIENT_AUTH]), ("client", [CLIENT_AUTH])],
)
def test_extended_key_usage_per_kind(ca: pki.KeyPair, kind: pki.CertificateKind, expected: list[object]) -> None:
    pair = pki.issue_certificate(ca, "x", kind=kind, dns_names=["localhost"])
    assert list(extension(pair.certificate, x509.ExtendedKeyUsage).value) == expected


@pytest.mark.parametrize("days", [1, 30, 365])
def test_expiry_matches_valid_days(ca: pki.KeyPair, days: int) -> None:
    before = datetime.now(UTC)
    pair = pki.issue_certificate(ca, "x", kind="client", valid_days=days)
    assert abs(pair.not_after - (before + timedelta(days=days))) < timedelta(minutes=1)
    assert pair.not_after.utcoffset() == timedelta(0)
    not_before = pair.certificate.not_valid_before_utc
    assert before - timedelta(minutes=6) < not_before <= before - timedelta(minutes=4)


def test_a_leaf_never_outlives_its_ca() -> None:
    short_ca = pki.create_ca("short CA", valid_days=30)
    pair = pki.issue_certificate(short_ca, "x", kind="client", valid_days=365)
    assert pair.not_after == short_ca.not_after
    assert pair.certificate.not_valid_before_utc >= short_ca.certificate.not_valid_before_utc


def test_rfc5280_verifier_accepts_server_and_peer_for_their_names(ca: pki.KeyPair, server: pki.KeyPair) -> None:
    store = verification.Store([ca.certificate])
    verifier = verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("localhost"))
    chain = verifier.verify(server.certificate, [])
    assert chain[-1] == ca.certificate
    by_ip = (
        verification.PolicyBuilder()
        .store(store)
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    by_ip.verify(server.certificate, [])
    peer = pki.issue_certificate(ca, "p", kind="peer", ip_addresses=["10.1.2.3"])
    peer_ip = (
        verification.PolicyBuilder()
        .store(store)
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("10.1.2.3")))
    )
    peer_ip.verify(peer.certificate, [])
    # server and peer certificates also authenticate as clients (grpc-gateway, peer dialing)
    client_verifier = verification.PolicyBuilder().store(store).build_client_verifier()
    client_verifier.verify(server.certificate, [])
    client_verifier.verify(peer.certificate, [])


def test_rfc5280_verifier_accepts_client_only_as_client(ca: pki.KeyPair) -> None:
    store = verification.Store([ca.certificate])
    client = pki.issue_certificate(ca, "operator", kind="client", dns_names=["localhost"])
    verification.PolicyBuilder().store(store).build_client_verifier().verify(client.certificate, [])
    server_verifier = verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("localhost"))
    with pytest.raises(verification.VerificationError):
        server_verifier.verify(client.certificate, [])


def test_an_rsa_ca_can_issue() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    rsa_ca = sign_by_hand(
        None,
        key=key,
        name="legacy RSA CA",
        ca_flag=True,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=100),
        key_format=serialization.PrivateFormat.TraditionalOpenSSL,
    )
    leaf = pki.issue_certificate(rsa_ca, "m", kind="server", dns_names=["localhost"])
    pki.verify_chain(rsa_ca, leaf)
    aki = extension(leaf.certificate, x509.AuthorityKeyIdentifier).value
    assert aki == x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())


# ---- files --------------------------------------------------------------------------------


def test_write_pem_modes_and_round_trip(tmp_path: Path, server: pki.KeyPair) -> None:
    cert_path, key_path = tmp_path / "pki" / "sub" / "m.crt", tmp_path / "pki" / "sub" / "m.key"
    pki.write_pem(server, cert_path, key_path)
    assert mode_of(key_path) == 0o600
    assert mode_of(cert_path) == 0o644
    assert sorted(p.name for p in cert_path.parent.iterdir()) == ["m.crt", "m.key"]  # no temp files left
    assert pki.load_pem(cert_path, key_path) == server
    assert pki.certificate_expiry(cert_path) == server.not_after


def test_modes_do_not_depend_on_umask(tmp_path: Path, server: pki.KeyPair) -> None:
    old = os.umask(0)
    try:
        pki.write_pem(server, tmp_path / "m.crt", tmp_path / "m.key")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "m.key") == 0o600
    assert mode_of(tmp_path / "m.crt") == 0o644


def test_key_is_private_before_it_appears(tmp_path: Path, server: pki.KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replacing a world-readable key: the new file is 0600 (and complete) when it is renamed in."""
    key_path = tmp_path / "m.key"
    key_path.write_bytes(b"old")
    key_path.chmod(0o644)
    real_replace = os.replace
    seen: dict[str, tuple[int, bytes]] = {}

    def spy(src: str, dst: str | Path) -> None:
        seen[Path(dst).name] = (mode_of(Path(src)), Path(src).read_bytes())
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    pki.write_pem(server, tmp_path / "m.crt", key_path)
    assert seen["m.key"] == (0o600, server.key_pem)
    assert seen["m.crt"] == (0o644, server.cert_pem)
    assert mode_of(key_path) == 0o600
    assert key_path.read_bytes() == server.key_pem


def test_write_pem_refuses_one_path_for_both(tmp_path: Path, server: pki.KeyPair) -> None:
    with pytest.raises(PkiError, match="same file"):
        pki.write_pem(server, tmp_path / "both.pem", tmp_path / "both.pem")


def test_write_pem_reports_an_unwritable_path(tmp_path: Path, server: pki.KeyPair) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PkiError, match="cannot write"):
        pki.write_pem(server, blocker / "m.crt", blocker / "m.key")


def test_load_pem_names_a_missing_file(tmp_path: Path, server: pki.KeyPair) -> None:
    pki.write_pem(server, tmp_path / "m.crt", tmp_path / "m.key")
    with pytest.raises(PkiError, match=r"missing\.key: file not found"):
        pki.load_pem(tmp_path / "m.crt", tmp_path / "missing.key")
    with pytest.raises(PkiError, match=r"missing\.crt: file not found"):
        pki.load_pem(tmp_path / "missing.crt", tmp_path / "m.key")


def test_load_pem_names_an_unparseable_file(tmp_path: Path, server: pki.KeyPair) -> None:
    pki.write_pem(server, tmp_path / "m.crt", tmp_path / "m.key")
    (tmp_path / "junk").write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(PkiError, match="junk: not a PEM certificate"):
        pki.load_pem(tmp_path / "junk", tmp_path / "m.key")
    with pytest.raises(PkiError, match="junk: not a PEM private key"):
        pki.load_pem(tmp_path / "m.crt", tmp_path / "junk")
    with pytest.raises(PkiError, match="junk: not a PEM certificate"):
        pki.certificate_expiry(tmp_path / "junk")
    with pytest.raises(PkiError, match=r"nothing\.crt: file not found"):
        pki.certificate_expiry(tmp_path / "nothing.crt")


def test_load_pem_rejects_a_key_of_another_certificate(tmp_path: Path, ca: pki.KeyPair, server: pki.KeyPair) -> None:
    pki.write_pem(server, tmp_path / "m.crt", tmp_path / "m.key")
    pki.write_pem(ca, tmp_path / "ca.crt", tmp_path / "ca.key")
    with pytest.raises(PkiError, match="does not belong"):
        pki.load_pem(tmp_path / "m.crt", tmp_path / "ca.key")


def test_load_pem_rejects_an_encrypted_key(tmp_path: Path, server: pki.KeyPair) -> None:
    key = serialization.load_pem_private_key(server.key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "m.key").write_bytes(encrypted)
    (tmp_path / "m.crt").write_bytes(server.cert_pem)
    with pytest.raises(PkiError, match=r"m\.key: the private key is encrypted"):
        pki.load_pem(tmp_path / "m.crt", tmp_path / "m.key")


# ---- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"valid_days": 0}, "valid_days"),
        ({"valid_days": -5}, "valid_days"),
        ({"valid_days": 1.5}, "valid_days"),
        ({"valid_days": True}, "valid_days"),
        ({"valid_days": 10**6}, "valid_days"),
        ({"ip_addresses": ["not-an-ip"]}, "ip_addresses"),
        ({"ip_addresses": ["10.0.0.256"]}, "ip_addresses"),
        ({"ip_addresses": "127.0.0.1"}, "ip_addresses"),
        ({"dns_names": "localhost"}, "dns_names"),
        ({"dns_names": ["10.0.0.1"]}, "dns_names"),
        ({"dns_names": [""]}, "dns_names"),
        ({"dns_names": ["bücher.example"]}, "dns_names"),
        ({"kind": "admin"}, "kind"),
        ({"common_name": ""}, "common_name"),
        ({"common_name": "x" * 65}, "common_name"),
    ],
)
def test_bad_arguments_raise_a_one_line_pki_error(ca: pki.KeyPair, kwargs: dict[str, object], named: str) -> None:
    arguments: dict[str, object] = {"common_name": "m", "kind": "server"} | kwargs
    with pytest.raises(PkiError) as caught:
        pki.issue_certificate(ca, **arguments)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{named}:")
    assert "\n" not in message


@pytest.mark.parametrize("valid_days", [0, -1])
def test_create_ca_rejects_bad_valid_days(valid_days: int) -> None:
    with pytest.raises(PkiError, match=r"^valid_days:"):
        pki.create_ca("ca", valid_days=valid_days)


def test_issuing_from_a_leaf_is_refused(server: pki.KeyPair) -> None:
    with pytest.raises(PkiError, match="not a CA certificate"):
        pki.issue_certificate(server, "m", kind="client")


def test_issuing_from_a_ca_with_the_wrong_key_is_refused(ca: pki.KeyPair) -> None:
    other = pki.create_ca("other CA")
    with pytest.raises(PkiError, match="does not belong"):
        pki.issue_certificate(pki.KeyPair(ca.cert_pem, other.key_pem), "m", kind="client")


def test_unparseable_pem_in_a_key_pair_is_a_pki_error() -> None:
    with pytest.raises(PkiError):
        _ = pki.KeyPair(b"junk", b"junk").certificate
    with pytest.raises(PkiError):
        _ = pki.KeyPair(b"junk", b"junk").private_key


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:2379", "127.0.0.1", "https://127.0.0.1", "https://host:port", "", "unix:///x"],
)
def test_served_certificate_expiry_rejects_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(PkiError) as caught:
        pki.served_certificate_expiry(endpoint, timeout=0.1)
    assert "\n" not in str(caught.value)


def test_served_certificate_expiry_wants_cert_and_key_together(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="together"):
        pki.served_certificate_expiry("127.0.0.1:1", cert=tmp_path / "c.crt")


# ---- verify_chain -------------------------------------------------------------------------


def test_verify_chain_rejects_a_leaf_of_another_ca(ca: pki.KeyPair) -> None:
    other_ca = pki.create_ca("unit test CA")  # same name, different key
    stranger = pki.issue_certificate(other_ca, "m", kind="server", dns_names=["localhost"])
    with pytest.raises(PkiError, match="not signed by"):
        pki.verify_chain(ca, stranger)
    named_differently = pki.issue_certificate(pki.create_ca("another CA"), "m", kind="client")
    with pytest.raises(PkiError, match="not signed by"):
        pki.verify_chain(ca, named_differently)


def test_verify_chain_rejects_expired_and_future_leaves(ca: pki.KeyPair) -> None:
    now = datetime.now(UTC)
    expired = sign_by_hand(ca, not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    with pytest.raises(PkiError, match="expired"):
        pki.verify_chain(ca, expired)
    future = sign_by_hand(ca, not_before=now + timedelta(days=1), not_after=now + timedelta(days=10))
    with pytest.raises(PkiError, match="not valid before"):
        pki.verify_chain(ca, future)


def test_verify_chain_rejects_a_non_ca_and_a_wrong_key(ca: pki.KeyPair, server: pki.KeyPair) -> None:
    client = pki.issue_certificate(ca, "c", kind="client")
    with pytest.raises(PkiError, match="not a CA"):
        pki.verify_chain(server, client)
    with pytest.raises(PkiError, match="does not belong"):
        pki.verify_chain(ca, pki.KeyPair(server.cert_pem, client.key_pem))


# ---- reading a certificate out of raw TLS 1.2 records -------------------------------------


def _record(content_type: int, body: bytes) -> bytes:
    return bytes([content_type, 3, 3]) + len(body).to_bytes(2, "big") + body


def _handshake(message_type: int, body: bytes) -> bytes:
    return bytes([message_type]) + len(body).to_bytes(3, "big") + body


def test_certificate_is_found_in_handshake_records_split_anyhow(server: pki.KeyPair, ca: pki.KeyPair) -> None:
    leaf = server.certificate.public_bytes(serialization.Encoding.DER)
    issuer = ca.certificate.public_bytes(serialization.Encoding.DER)
    entries = b"".join(len(der).to_bytes(3, "big") + der for der in (leaf, issuer))
    messages = _handshake(2, b"\x03\x03" + bytes(34)) + _handshake(11, len(entries).to_bytes(3, "big") + entries)
    middle = len(messages) // 2
    data = _record(22, messages[:middle]) + _record(22, messages[middle:]) + _record(21, b"\x02\x2a")
    assert certificate_from_records(data) == leaf
    assert certificate_from_records(data[:-40]) is None  # truncated
    assert certificate_from_records(_record(20, b"\x01") + data) is None  # encrypted after CCS
    assert certificate_from_records(b"HTTP/1.1 400 Bad Request\r\n\r\n") is None
