"""Building blocks of etcd backups: object stores, envelope encryption, manifests and retention.

The modules are imported explicitly (``from etcdops.adapters.backup.store import open_store``); this package
file imports nothing so that loading one block never pulls in the dependencies of another.
"""
