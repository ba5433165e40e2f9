"""etcdops: an autopilot for self-managed etcd clusters on AWS."""

__version__ = "0.1.0"
