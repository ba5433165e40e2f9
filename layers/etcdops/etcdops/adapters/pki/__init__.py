"""Certificates for etcd: a small CA, server/peer/client certificates, PEM files and expiry checks.

The package is used as one module (``from etcdops.adapters import pki``; ``pki.issue_certificate``);
its parts: :mod:`.certificates` (the CA, issuing, checks), :mod:`.files` (PEM files, written
atomically) and :mod:`.served` (the certificate a TLS endpoint serves).
"""

from __future__ import annotations

from etcdops.adapters.pki.certificates import (
    CertificateKind,
    KeyPair,
    check_ca,
    create_ca,
    issue_certificate,
    verify_chain,
)
from etcdops.adapters.pki.files import (
    ca_expiries,
    certificate_expiry,
    certificate_serial,
    load_pem,
    write_pem,
    write_trusted,
)
from etcdops.adapters.pki.served import served_certificate, served_certificate_expiry

__all__ = [
    "CertificateKind",
    "KeyPair",
    "ca_expiries",
    "certificate_expiry",
    "certificate_serial",
    "check_ca",
    "create_ca",
    "issue_certificate",
    "load_pem",
    "served_certificate",
    "served_certificate_expiry",
    "verify_chain",
    "write_pem",
    "write_trusted",
]
