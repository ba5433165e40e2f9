"""Adapters: everything that talks to the outside world (etcd over gRPC, snapshot files, the state
table, AWS services, the compute providers, backup stores and their encryption)."""
