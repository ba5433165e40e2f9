"""Compute providers: where etcd members run (EC2 instances, or local processes), behind one interface.

Choose one with :func:`etcdops.adapters.compute.factory.open_compute`; the runbooks use only
:class:`etcdops.domain.compute.base.ComputeProvider`.
"""
