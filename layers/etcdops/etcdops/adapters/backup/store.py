"""Where backups live: one small object-store interface with a local-directory and an S3 backend.

Both backends keep the same two promises:

* **Never overwrite.** Writing to a key that already exists raises :class:`BackupExistsError`, also
  when another writer wins a race between our existence check and our write.
* **Atomic.** Nothing is visible under the final key unless the whole stream was written. A failed
  or interrupted write leaves no object (S3: the multipart upload is aborted; files: the temporary
  file is removed).

Keys are relative, ``/``-separated paths (``"<id>.snapshot.enc"``); the store's URI supplies the
bucket/prefix or directory. Choose a backend with :func:`open_store`.
"""

from __future__ import annotations

import abc
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

from etcdops.adapters.awserrors import AWS_SDK_ERRORS, aws_error, aws_error_code
from etcdops.domain.backup.errors import (
    BackupExistsError,
    BackupNotFoundError,
    BackupStoreError,
    StoreFullError,
    StorePermissionError,
)
from etcdops.domain.errors import ConfigError, UsageError

_LOG = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Size of every multipart part but the last. Memory use of an upload is about two parts.
DEFAULT_PART_SIZE = 8 * MiB
#: S3 refuses parts smaller than this (except the last one).
MIN_PART_SIZE = 5 * MiB
#: S3 allows at most this many parts; with 8 MiB parts that is ~78 GiB, far above etcd's 8 GiB cap.
MAX_PARTS = 10_000
#: Size of the chunks :meth:`BackupStore.open_read` yields.
READ_CHUNK_SIZE = 1 * MiB

_TEMP_INFIX = ".tmp-"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_EXISTS_CODES = frozenset({"412", "PreconditionFailed"})


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


# ---- S3 -----------------------------------------------------------------------------------------


class S3Store(BackupStore):
    """Objects under ``s3://bucket/prefix/``.

    Streams larger than one part are sent as a multipart upload with fixed ``part_size`` parts,
    buffering one part at a time; smaller ones as a single PutObject. Overwrites are prevented
    twice: a HeadObject before the upload (so a doomed upload is not even started), and
    ``If-None-Match: *`` on PutObject/CompleteMultipartUpload (so a racing writer cannot be
    overwritten either). Set ``conditional_writes=False`` only for S3-compatible servers that do
    not implement conditional writes; the HeadObject check alone is not race-free.

    ``client`` is a boto3 S3 client created by the caller.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = DEFAULT_PART_SIZE,
        sse_kms_key_id: str | None = None,
        conditional_writes: bool = True,
        read_chunk_size: int = READ_CHUNK_SIZE,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ConfigError(f"S3 part_size {part_size} is below the S3 minimum of {MIN_PART_SIZE} bytes")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.sse_kms_key_id = sse_kms_key_id
        self.conditional_writes = conditional_writes
        self.read_chunk_size = read_chunk_size

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _full_key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def _error(self, exc: Exception, key: str, doing: str) -> Exception:
        """Translate a botocore error into one of ours."""
        where = self.uri_for(key) if key else self.uri
        code = aws_error_code(exc)
        if code in _EXISTS_CODES:
            return BackupExistsError(f"{where} was created by another writer; backups are never overwritten")
        if code in _NOT_FOUND_CODES:
            return BackupNotFoundError(f"{where} does not exist")
        return aws_error(f"S3: {doing} {where}", exc, refused=StorePermissionError, unavailable=BackupStoreError)

    def _sse(self) -> dict[str, str]:
        if self.sse_kms_key_id is None:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.sse_kms_key_id}

    def _conditional(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self.conditional_writes else {}

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        full = self._full_key(key)
        if self.exists(key):
            raise BackupExistsError(f"{self.uri_for(key)} already exists; backups are never overwritten")
        buffer = bytearray()
        total = 0
        upload_id: str | None = None
        parts: builtins.list[dict[str, Any]] = []
        try:
            for chunk in chunks:  # an error raised by the producer propagates unchanged
                buffer += chunk
                total += len(chunk)
                # Strictly greater: the last part is sent after the loop and is never empty.
                while len(buffer) > self.part_size:
                    if upload_id is None:
                        upload_id = self._create_upload(key, full)
                    parts.append(self._upload_part(key, full, upload_id, len(parts) + 1, buffer))
            if upload_id is None:
                self._put_object(key, full, bytes(buffer))
            else:
                parts.append(self._upload_part(key, full, upload_id, len(parts) + 1, buffer))
                self._complete(key, full, upload_id, parts)
        except BaseException:
            if upload_id is not None:
                self._abort(full, upload_id)
            raise
        return total

    def _create_upload(self, key: str, full: str) -> str:
        try:
            response = self.client.create_multipart_upload(Bucket=self.bucket, Key=full, **self._sse())
        except AWS_SDK_ERRORS as exc:
            raise self._error(exc, key, "starting an upload to") from exc
        return str(response["UploadId"])

    def _upload_part(self, key: str, full: str, upload_id: str, number: int, buffer: bytearray) -> dict[str, Any]:
        if number > MAX_PARTS:
            raise BackupStoreError(f"{self.uri_for(key)} would need more than {MAX_PARTS} parts")
        size = min(self.part_size, len(buffer))
        with memoryview(buffer) as view, view[:size] as head:
            body = bytes(head)
        del buffer[:size]
        try:
            response = self.client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
            )
        except AWS_SDK_ERRORS as exc:
            raise self._error(exc, key, f"uploading part {number} of") from exc
        part: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
        for name in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"):
            if name in response:
                part[name] = response[name]
        return part

    def _complete(self, key: str, full: str, upload_id: str, parts: builtins.list[dict[str, Any]]) -> None:
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **self._conditional(),
            )
        except AWS_SDK_ERRORS as exc:
            raise self._error(exc, key, "completing the upload of") from exc

    def _put_object(self, key: str, full: str, body: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=body, **self._sse(), **self._conditional())
        except AWS_SDK_ERRORS as exc:
            raise self._error(exc, key, "writing") from exc

    def _abort(self, full: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        except Exception:
            # Not fatal for correctness (nothing was published), but the parts cost money until a
            # bucket lifecycle rule (AbortIncompleteMultipartUpload) removes them.
            _LOG.exception("could not abort multipart upload %s of s3://%s/%s", upload_id, self.bucket, full)

    def open_read(self, key: str) -> Iterator[bytes]:
        full = self._full_key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
        except AWS_SDK_ERRORS as exc:
            raise self._error(exc, key, "reading") from exc
        return self._read_chunks(response["Body"], key)

    def _read_chunks(self, body: Any, key: str) -> Iterator[bytes]:
        try:
            while True:
                try:
                    chunk = body.read(self.read_chunk_size)
                except (*AWS_SDK_ERRORS, OSError) as exc:
                    raise self._error(exc, key, "reading") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        full = self._full_key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
        except AWS_SDK_ERRORS as exc:
            if aws_error_code(exc) in _NOT_FOUND_CODES:
                return False
            raise self._error(exc, key, "checking") from exc
        return True

    def list(self, prefix: str = "") -> builtins.list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        keys: builtins.list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix):
                keys.extend(item["Key"][len(root) :] for item in page.get("Contents", ()))
        except AWS_SDK_ERRORS as exc:
            raise self._error(exc, "", "listing") from exc
        return sorted(keys)

    def abort_uploads(self, prefix: str) -> builtins.list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        aborted: builtins.list[str] = []
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix):
                for upload in page.get("Uploads", ()):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted.append(upload["Key"][len(root) :])
        except AWS_SDK_ERRORS as exc:
            raise self._error(exc, "", f"aborting the unfinished uploads under {prefix!r} of") from exc
        return aborted

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except AWS_SDK_ERRORS as exc:
            if aws_error_code(exc) in _NOT_FOUND_CODES:
                return
            raise self._error(exc, key, "deleting") from exc




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
