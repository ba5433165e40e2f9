"""``pki issue-client`` and ``pki list``: client certificates from the cluster CA, and every certificate.

A client certificate is issued by the cluster's CA (the one every member trusts with
``--trusted-ca-file`` and ``--client-cert-auth``), so etcd accepts it from the next connection on.
etcd has no revocation list it reloads: a client is cut off only by rotating the CA (RotateCertificates).
"""

from __future__ import annotations

from etcdops.adapters import pki
from etcdops.adapters.pki_store import CertificateInfo, PkiStore, describe
from etcdops.domain.compute.base import check_host_name
from etcdops.domain.compute.errors import InvalidHostNameError
from etcdops.domain.errors import UsageError

MAX_CLIENT_DAYS = 3650


def check_client_name(name: str) -> str:
    """A client's name goes into a file name, a secret id and the certificate's subject: the member name rules."""
    try:
        return check_host_name(name)
    except InvalidHostNameError:
        raise UsageError(
            f"client name {name!r}: use 1-63 letters, digits, '.', '_' or '-', starting and ending with a letter "
            "or digit"
        ) from None


def check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= MAX_CLIENT_DAYS:
        raise UsageError(f"--days: must be a whole number of days from 1 to {MAX_CLIENT_DAYS}, got {days!r}")
    return days


def issue_client(store: PkiStore, name: str, *, days: int = 365, force: bool = False) -> CertificateInfo:
    """Issue client ``name``'s certificate from the cluster CA and store it; an existing one is kept
    unless ``force``. Everything is checked before anything is written."""
    check_client_name(name)
    check_days(days)
    ca = store.read_ca()
    pki.check_ca(ca)
    existing = store.client_location(name)
    if existing is not None and not force:
        raise UsageError(f"client {name} already has a certificate ({existing}); --force replaces it")
    pair = pki.issue_certificate(ca, name, kind="client", valid_days=days)
    location = store.put_client(name, pair, ca.cert_pem, replace=force)
    return describe(pair.cert_pem, role="client", name=name, location=location)


def list_certificates(store: PkiStore) -> list[CertificateInfo]:
    return store.certificates()
