"""The S3 backend of the backup store: multipart uploads that never overwrite (a HeadObject first,
then ``If-None-Match: *``) and leave no object when they fail (the upload is aborted)."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from etcdops.adapters.awserrors import AWS_SDK_ERRORS, aws_error, aws_error_code
from etcdops.adapters.backup.store_base import READ_CHUNK_SIZE, BackupStore, MiB, _check_key
from etcdops.domain.backup.errors import (
    BackupExistsError,
    BackupNotFoundError,
    BackupStoreError,
    StorePermissionError,
)
from etcdops.domain.errors import ConfigError

_LOG = logging.getLogger("etcdops.adapters.backup.store")

#: Size of every multipart part but the last. Memory use of an upload is about two parts.
DEFAULT_PART_SIZE = 8 * MiB
#: S3 refuses parts smaller than this (except the last one).
MIN_PART_SIZE = 5 * MiB
#: S3 allows at most this many parts; with 8 MiB parts that is ~78 GiB, far above etcd's 8 GiB cap.
MAX_PARTS = 10_000

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_EXISTS_CODES = frozenset({"412", "PreconditionFailed"})


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
