"""The live membership is the source of truth (invariant 10); configured endpoints are only seeds.

A cluster's members change with every replacement and restore, so any list of endpoints written
down goes stale. etcdops therefore asks for the member list at the start of everything it does:
every seed at once (the configured endpoints, and the ones last seen), the first answer wins, so a
seed that is gone costs nothing and a frozen one costs no more than the deadline. What it then talks
to are the client URLs of the members in that list.

After every membership change the stored configuration is brought up to date wherever it lives
(:func:`record_membership`: the SSM parameter in AWS; the local stack's parameter and
``cluster.yaml`` locally), so that the next seeds are the live members again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from typing import Protocol

from etcdops.adapters.etcd.client import EtcdClient, Member
from etcdops.domain.config import rewrite_endpoints
from etcdops.domain.errors import EtcdError

log = logging.getLogger("etcdops.adapters.etcd.membership")


@dataclass(frozen=True)
class Membership:
    """The member list as one seed served it (``members`` None: no seed answered in time)."""

    members: tuple[Member, ...] | None
    answered_by: str | None = None
    failures: dict[str, str] = field(default_factory=dict)  # seed -> why it did not answer

    @property
    def client_urls(self) -> list[str]:
        """The client URLs of every started member (a member added but not started has none)."""
        return merge_endpoints(*(m.client_urls for m in self.members or () if m.started))

    def endpoints(self, seeds: Sequence[str] = ()) -> list[str]:
        """Whom to ask: the seed that just answered first (it is alive), then every member, then the
        seeds (a last resort when the membership is unknown)."""
        return merge_endpoints([self.answered_by] if self.answered_by else [], self.client_urls, seeds)


def merge_endpoints(*groups: Iterable[str]) -> list[str]:
    """The endpoints of every group, in order, each once."""
    return list(dict.fromkeys(e for group in groups for e in group))


def read_membership(client: EtcdClient, budget: float) -> Membership:
    """The member list from whichever of ``client.endpoints`` answers first within ``budget`` seconds.

    All seeds are asked at once (the member list is served locally, without quorum), so a seed that
    is gone or frozen neither stalls nor blinds the caller while another one answers.
    """
    failures: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=len(client.endpoints), thread_name_prefix="members")
    try:
        futures = {pool.submit(client.member_list, e, timeout=budget): e for e in client.endpoints}
        try:
            for future in as_completed(futures, timeout=budget + 0.1):
                try:
                    return Membership(tuple(future.result()), futures[future], failures)
                except EtcdError as exc:
                    failures[futures[future]] = str(exc)
        except FuturesTimeout:
            pass
        for future, endpoint in futures.items():
            if not future.done():
                failures.setdefault(endpoint, f"{endpoint}: deadline exceeded")
        return Membership(None, None, failures)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def endpoints_after_change(configured: Sequence[str], live: Sequence[str]) -> list[str]:
    """The endpoints to store once the membership changed: the live members' client URLs, those
    already configured first in their configured order, then the new ones. Configured endpoints that
    are no member's client URL any more are dropped (etcdops talks to members directly)."""
    kept = [e for e in configured if e in live]
    return merge_endpoints(kept, live)


class ConfigStore(Protocol):
    """Where a cluster's configuration document lives (an SSM parameter, a file)."""

    @property
    def where(self) -> str: ...

    def read(self) -> str: ...

    def write(self, text: str) -> None: ...


@dataclass(frozen=True)
class RecordedMembership:
    endpoints: list[str]
    updated: list[str]  # where the document was rewritten
    unchanged: list[str]  # where it already said so (a retried step converges)


def record_membership(stores: Sequence[ConfigStore], live: Sequence[str]) -> RecordedMembership:
    """Bring the endpoints of every stored configuration up to date with the live members.

    Idempotent: a store that already lists exactly these endpoints is not written. Each store's own
    write is atomic (a file: temporary file and rename; SSM: one PutParameter).
    """
    if not live:
        raise ValueError("no live client URLs to record")
    updated: list[str] = []
    unchanged: list[str] = []
    endpoints: list[str] = list(live)
    for store in stores:
        text = store.read()
        rewritten, endpoints = rewrite_endpoints(
            text, lambda configured: endpoints_after_change(configured, live), source=store.where
        )
        if rewritten == text:
            unchanged.append(store.where)
            continue
        store.write(rewritten)
        updated.append(store.where)
        log.info("stored endpoints of %s are now %s", store.where, ", ".join(endpoints))
    return RecordedMembership(endpoints, updated, unchanged)

