"""Where a cluster's backups go and which key protects them: the one factory for both."""

from __future__ import annotations

from typing import Any

from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.keys import open_key_provider
from etcdops.adapters.backup.store import BackupStore, open_store
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import ConfigError


def open_backup_target(
    config: ClusterConfig,
    *,
    s3_client: Any = None,
    kms_client: Any = None,
    create_local_key: bool = False,
) -> tuple[BackupStore, KeyProvider]:
    """The store and key of ``config.backup``; a local key file may be created (mode 0600)."""
    store = open_backup_store(config, s3_client=s3_client)
    assert config.backup is not None  # open_backup_store refused a config without one
    keyring = open_key_provider(config.backup.encryption_key, create=create_local_key, kms_client=kms_client)
    return store, keyring


def open_backup_store(config: ClusterConfig, *, s3_client: Any = None) -> BackupStore:
    """Only the store of ``config.backup``: listing the store reads manifests, never the key."""
    if config.backup is None:
        raise ConfigError("backup: this cluster has no backup section")
    return open_store(config.backup.destination, s3_client=s3_client)
