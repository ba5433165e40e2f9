"""Shared fixtures: the etcd versions under test (tests/etcd_versions.py) and real local clusters.

Integration tests run once per etcd version: 3.4.23, 3.5.1 and 3.5.30 (the e2e tier narrows this to
3.4.23 and 3.5.30 in its own conftest).

Property tests run under one hypothesis profile, chosen with ``ETCDOPS_HYPOTHESIS``: ``fast`` (the
default: a few dozen examples per property, for every run) or ``thorough`` (hundreds, for a nightly
run or before landing a change to a property's subject). Tests set no example counts of their own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest
from builders import discard
from etcd_versions import ETCD_VERSIONS, etcd_flavour
from hypothesis import settings

from etcdops_local.cluster import EtcdBinaries, LocalCluster

settings.register_profile("fast", max_examples=40, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("ETCDOPS_HYPOTHESIS", "fast"))  # an unknown name fails the run by name

# moto starts every mock with a fresh default boto3 session, and each new botocore session parses the
# endpoint and service-model JSON again (about 0.3 s of CPU per session, seconds on a busy machine; the
# unit tier makes hundreds). One loader per search path serves every session of the process: the data
# is read-only (the clients of one session share it too), only the parsing is saved.
botocore.session.create_loader = functools.lru_cache(maxsize=None)(botocore.session.create_loader)


@pytest.fixture(scope="session", params=sorted(ETCD_VERSIONS))
def etcd_binaries(request: pytest.FixtureRequest) -> EtcdBinaries:
    """Each etcd version under test, in turn."""
    return etcd_flavour(request.param)


@pytest.fixture(scope="session")
def etcd351() -> EtcdBinaries:
    """etcd 3.5.1: its etcdutl restores without --bump-revision."""
    return etcd_flavour("etcd351")


@pytest.fixture(scope="session")
def etcd3530() -> EtcdBinaries:
    """etcd 3.5.30, the newest under test (and the local stack's default)."""
    return etcd_flavour("etcd3530")


def _start(path: Path, binaries: EtcdBinaries, members: int = 3, extra: tuple[str, ...] = ()) -> LocalCluster:
    cluster = LocalCluster(path)
    cluster.up(members, binaries=binaries, extra_args=extra)
    return cluster


@pytest.fixture
def cluster(tmp_path: Path, etcd_binaries: EtcdBinaries) -> Iterator[LocalCluster]:
    """A fresh 3-member TLS cluster for one test; its members killed afterwards (:func:`builders.discard`)."""
    c = _start(tmp_path / "stack", etcd_binaries)
    try:
        yield c
    finally:
        discard(c)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory, etcd_binaries: EtcdBinaries) -> Iterator[LocalCluster]:
    """A 3-member TLS cluster shared by the read-only tests of one module."""
    c = _start(tmp_path_factory.mktemp("stack"), etcd_binaries)
    try:
        yield c
    finally:
        discard(c)


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[object]:
    """A factory for clusters with extra etcd flags; every cluster it made is stopped afterwards."""
    made: list[LocalCluster] = []

    def start(binaries: EtcdBinaries, members: int = 3, extra: tuple[str, ...] = ()) -> LocalCluster:
        c = _start(tmp_path / f"stack{len(made)}", binaries, members, extra)
        made.append(c)
        return c

    yield start
    for c in made:
        discard(c)
