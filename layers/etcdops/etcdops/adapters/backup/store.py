"""Where backups live: one small object-store interface with a local-directory and an S3 backend.

Both backends keep the same two promises:

* **Never overwrite.** Writing to a key that already exists raises :class:`BackupExistsError`, also
  when another writer wins a race between our existence check and our write.
* **Atomic.** Nothing is visible under the final key unless the whole stream was written. A failed
  or interrupted write leaves no object (S3: the multipart upload is aborted; files: the temporary
  file is removed).

Keys are relative, ``/``-separated paths (``"<id>.snapshot.enc"``); the store's URI supplies the
bucket/prefix or directory. Choose a backend with :func:`open_store`. The interface is in
:mod:`~etcdops.adapters.backup.store_base`, the S3 backend in :mod:`~etcdops.adapters.backup.s3store`.
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from etcdops.adapters.backup.s3store import DEFAULT_PART_SIZE, MIN_PART_SIZE, S3Store
from etcdops.adapters.backup.store_base import READ_CHUNK_SIZE, BackupStore, _check_key
from etcdops.domain.backup.errors import (
    BackupExistsError,
    BackupNotFoundError,
    BackupStoreError,
    StoreFullError,
    StorePermissionError,
)
from etcdops.domain.errors import ConfigError, UsageError

_LOG = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PART_SIZE",
    "MIN_PART_SIZE",
    "READ_CHUNK_SIZE",
    "BackupStore",
    "FileStore",
    "S3Store",
    "open_store",
]

_TEMP_INFIX = ".tmp-"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


# ---- local directory ------------------------------------------------------------------------


class FileStore(BackupStore):
    """Objects are files under ``root``; written to a temporary file, fsynced, then hard-linked.

    ``os.link`` fails if the target exists, so unlike ``rename`` it can never replace a backup,
    not even one created by a concurrent writer after our existence check. Temporary files are
    dot-files next to the target and are never listed.
    """

    def __init__(self, root: Path, *, read_chunk_size: int = READ_CHUNK_SIZE) -> None:
        if not root.is_absolute():
            raise ConfigError(f"backup directory {str(root)!r} must be an absolute path")
        self.root = root
        self.read_chunk_size = read_chunk_size

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def uri_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def _os_error(self, exc: OSError, key: str, doing: str, written: int | None = None) -> BackupStoreError:
        where = self.uri_for(key)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            progress = f" after {written} bytes" if written is not None else ""
            return StoreFullError(
                f"no space left on the file system of {self.root} while {doing} {where}{progress}; "
                "the partial file was removed"
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StorePermissionError(f"cannot {doing} {where}: {exc.strerror or exc}")
        return BackupStoreError(f"error while {doing} {where}: {exc.strerror or exc}")

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        final = self._path(key)
        if os.path.lexists(final):
            raise BackupExistsError(f"{self.uri_for(key)} already exists; backups are never overwritten")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_error(exc, key, "creating the directory of") from exc
        temp = final.parent / f".{final.name}{_TEMP_INFIX}{secrets.token_hex(6)}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._os_error(exc, key, "creating a temporary file for") from exc
        written = 0
        try:
            try:
                for chunk in chunks:  # an error raised by the producer propagates unchanged
                    written += self._write_all(fd, chunk, key, written)
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise self._os_error(exc, key, "flushing", written) from exc
            finally:
                os.close(fd)
            try:
                os.link(temp, final)
            except FileExistsError as exc:
                raise BackupExistsError(
                    f"{self.uri_for(key)} was created by another writer; backups are never overwritten"
                ) from exc
            except OSError as exc:
                raise self._os_error(exc, key, "publishing", written) from exc
        finally:
            _unlink_quietly(temp)
        _fsync_directory(final.parent)
        return written

    def _write_all(self, fd: int, chunk: bytes, key: str, written: int) -> int:
        total = 0
        with memoryview(chunk) as view:
            while total < len(view):
                try:
                    total += os.write(fd, view[total:])
                except OSError as exc:
                    raise self._os_error(exc, key, "writing", written + total) from exc
        return total

    def open_read(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BackupNotFoundError(f"{self.uri_for(key)} does not exist") from exc
        except OSError as exc:
            raise self._os_error(exc, key, "opening") from exc
        return self._read_chunks(handle, key)

    def _read_chunks(self, handle: IO[bytes], key: str) -> Iterator[bytes]:
        with handle:
            while True:
                try:
                    chunk = handle.read(self.read_chunk_size)
                except OSError as exc:
                    raise self._os_error(exc, key, "reading") from exc
                if not chunk:
                    return
                yield chunk

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> builtins.list[str]:
        if "\\" in prefix or any(part in (".", "..") for part in prefix.split("/")):
            raise UsageError(f"backup key prefix {prefix!r} must not contain '.', '..' or backslashes")
        directory, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*directory.split("/")) if directory else self.root
        keys: builtins.list[str] = []
        if not start.is_dir():
            return keys
        for current, dirnames, filenames in os.walk(start):
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            relative = Path(current).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue  # temporary files and other hidden files are not objects
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._os_error(exc, key, "deleting") from exc


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        _LOG.warning("could not remove temporary file %s", path)


def _fsync_directory(path: Path) -> None:
    """Persist the new directory entry; best effort (not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- the factory --------------------------------------------------------------------------------


def open_store(
    uri: str,
    *,
    s3_client: Any = None,
    sse_kms_key_id: str | None = None,
    part_size: int = DEFAULT_PART_SIZE,
) -> BackupStore:
    """Open the store named by ``uri``: ``s3://bucket[/prefix]`` or ``file:///absolute/path``.

    For S3 pass a boto3 S3 client; without one a default client is created now (never at import).
    ``sse_kms_key_id`` asks S3 to additionally encrypt objects at rest with that KMS key.
    """
    parts = urlsplit(uri)
    if parts.query or parts.fragment:
        raise ConfigError(f"backup destination {uri!r} must not have a query or fragment")
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not _BUCKET.match(bucket):
            raise ConfigError(f"backup destination {uri!r}: {bucket!r} is not a valid S3 bucket name")
        if s3_client is None:
            import boto3  # only now: the caller did not bring a client

            s3_client = boto3.client("s3")
        return S3Store(s3_client, bucket, unquote(parts.path), part_size=part_size, sse_kms_key_id=sse_kms_key_id)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"backup destination {uri!r} must be file:///absolute/path")
        return FileStore(Path(unquote(parts.path)))
    raise ConfigError(f"backup destination {uri!r} must be s3://bucket/prefix or file:///absolute/path")
