"""The local stack's own error."""

from __future__ import annotations

from etcdops.domain.errors import EtcdopsError


class LocalAwsError(EtcdopsError):
    """The emulated AWS side of the local stack could not be built or reached."""
