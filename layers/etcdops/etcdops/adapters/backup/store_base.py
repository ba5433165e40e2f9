"""The object-store interface backups live in (:class:`BackupStore`), its key rule and its sizes;
the backends are :class:`~etcdops.adapters.backup.store.FileStore` and
:class:`~etcdops.adapters.backup.s3store.S3Store`, chosen by
:func:`~etcdops.adapters.backup.store.open_store` (see :mod:`etcdops.adapters.backup.store` for the
promises every backend keeps)."""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterable, Iterator

from etcdops.domain.errors import UsageError

MiB = 1024 * 1024
#: Size of the chunks :meth:`BackupStore.open_read` yields.
READ_CHUNK_SIZE = 1 * MiB


def _check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`UsageError`."""
    if not isinstance(key, str) or not key:
        raise UsageError("a backup object key must be a non-empty string")
    if "\x00" in key or "\\" in key:
        raise UsageError(f"backup object key {key!r} contains a NUL or backslash")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise UsageError(f"backup object key {key!r} must be a relative path without empty, . or .. parts")
        if part.startswith("."):
            raise UsageError(f"backup object key {key!r}: parts must not start with '.' (reserved)")
    return key


class BackupStore(abc.ABC):
    """A flat namespace of immutable objects addressed by relative keys."""

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """The URI of the store's root (what :func:`open_store` was given, normalised)."""

    @abc.abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write the concatenated ``chunks`` under ``key`` atomically; return the number of bytes.

        Raises :class:`BackupExistsError` if ``key`` exists (nothing is overwritten). An exception
        raised by ``chunks`` itself propagates unchanged after the partial write was discarded.
        """

    def put_bytes(self, key: str, data: bytes) -> int:
        """Write a small object (a manifest) with the same guarantees as :meth:`put_stream`."""
        return self.put_stream(key, [data])

    @abc.abstractmethod
    def open_read(self, key: str) -> Iterator[bytes]:
        """Open ``key`` for reading and return an iterator of chunks of at most ~1 MiB.

        Raises :class:`BackupNotFoundError` right away (not on the first ``next``) if it is missing.
        """

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole."""
        return b"".join(self.open_read(key))

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> builtins.list[str]:
        """The sorted keys that start with ``prefix`` (a string prefix, not only a directory)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""

    @abc.abstractmethod
    def uri_for(self, key: str) -> str:
        """The full URI of ``key`` (for manifests, logs and messages)."""

    def abort_uploads(self, prefix: str) -> builtins.list[str]:
        """Abort the unfinished uploads of keys that start with ``prefix`` (a writer that died mid-stream
        left them); returns those keys. A directory has none: a dead writer's temporary file is a
        dot-file, never listed."""
        return []
