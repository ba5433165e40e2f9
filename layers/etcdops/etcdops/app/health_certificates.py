"""The certificates a health round watches: those the members serve (read in fresh TLS handshakes, in
parallel with the probe), the client certificate the configuration names, and the CAs the clients trust
(``tls.ca``: the cluster CA, or both CAs during a CA rotation)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime
from pathlib import Path

from etcdops.adapters.etcd.connect import tls_files
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import EtcdopsError
from etcdops.domain.health import ClusterHealth

log = logging.getLogger("etcdops.app.healthcheck")


def served_certificates(
    endpoints: Sequence[str], config: ClusterConfig, timeout: float, pool: ThreadPoolExecutor
) -> Callable[[], dict[str, datetime]]:
    """Start reading each endpoint's served certificate; the returned function collects what
    arrived within ``timeout`` of the start (a frozen member is left out, never waited for)."""
    tls = tls_files(config)
    if tls is None:
        return dict
    from etcdops.adapters.pki import served_certificate_expiry

    futures = {
        pool.submit(served_certificate_expiry, endpoint, timeout=timeout, cert=tls.cert, key=tls.key): endpoint
        for endpoint in endpoints
    }

    def collect() -> dict[str, datetime]:
        done, _ = wait(futures, timeout=timeout + 0.25)
        found: dict[str, datetime] = {}
        for future in done:
            try:
                found[futures[future]] = future.result()
            except (EtcdopsError, OSError) as exc:
                log.info("certificate of %s not read: %s", futures[future], exc)
        return found

    return collect


def certificate_names(served: Mapping[str, datetime], health: ClusterHealth) -> dict[str, datetime]:
    by_url = {url: m for m in health.members for url in m.client_urls}
    named: dict[str, datetime] = {}
    for endpoint, not_after in served.items():
        member = by_url.get(endpoint)
        named[f"{member.name} ({endpoint})" if member and member.name else endpoint] = not_after
    return named


def own_certificates(
    config: ClusterConfig, served: Mapping[str, datetime]
) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """The certificates whose expiry the round watches (those the members served, and the client certificate
    the configuration names) and the CAs the clients trust (``tls.ca``: the CA, or a rotation's bundle)."""
    certificates, trusted_cas = dict(served), dict[str, datetime]()
    if config.tls is None or config.plaintext:
        return certificates, trusted_cas
    from etcdops.adapters.pki import ca_expiries, certificate_expiry

    if config.tls.cert:
        try:
            certificates["client certificate (tls.cert)"] = certificate_expiry(Path(config.tls.cert))
        except EtcdopsError as exc:
            log.warning("client certificate expiry unknown: %s", exc)
    if config.tls.ca:
        try:
            trusted_cas = ca_expiries(Path(config.tls.ca))
        except EtcdopsError as exc:
            log.warning("CA expiry unknown: %s", exc)
    return certificates, trusted_cas
