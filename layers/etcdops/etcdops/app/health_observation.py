"""What a health round observes before it decides: the member list (invariant 10), every member probed,
the certificate each serves (app.health_certificates) and its /metrics, all under the probe deadline
(a frozen member stalls none of them)."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.connect import tls_files
from etcdops.adapters.etcd.membership import read_membership
from etcdops.adapters.state import StateStore
from etcdops.app.health_certificates import certificate_names, served_certificates
from etcdops.app.member_metrics import start_scrapes
from etcdops.app.probe import probe_cluster
from etcdops.domain.config import ClusterConfig
from etcdops.domain.health import ClusterHealth, discount_alarm_reports

log = logging.getLogger("etcdops.app.healthcheck")


@dataclass(frozen=True)
class Observation:
    health: ClusterHealth
    served: dict[str, datetime]  # "member (url)" -> the end of the certificate it served
    texts: dict[str, str]  # url -> the member's /metrics text


def observe(
    client: EtcdClient, config: ClusterConfig, state: StateStore, certificate_timeout: float | None, now: datetime
) -> Observation:
    """Probe the cluster, read the served certificates and the members' /metrics in parallel, and keep
    the client URLs seen as the next round's seeds."""
    deadline = config.health.probe_deadline_seconds
    started = time.monotonic()
    # invariant 10: the members come from the member list (the seeds only have to reach one of them)
    membership = read_membership(client, deadline / 2)
    urls = membership.client_urls or list(client.endpoints)
    pool = ThreadPoolExecutor(max_workers=max(1, 2 * len(urls)), thread_name_prefix="cert")
    try:
        collect = served_certificates(urls, config, certificate_timeout or deadline, pool)
        remaining = max(0.05, deadline - (time.monotonic() - started))
        scraped = start_scrapes(urls, tls_files(config), remaining, pool)
        health = discount_alarm_reports(probe_cluster(client, deadline=remaining, membership=membership))
        served = certificate_names(collect(), health)
        texts = scraped()
    finally:
        # a frozen member's handshake ends by its own timeout; do not wait for it here
        pool.shutdown(wait=False, cancel_futures=True)
    if membership.members is not None and membership.client_urls != state.load_endpoints(config.name):
        state.save_endpoints(config.name, membership.client_urls, now)  # the next round's seeds
    return Observation(health, served, texts)
