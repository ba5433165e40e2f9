"""One translation of AWS SDK errors (etcdops.adapters.awserrors): every adapter classifies a failure the same way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from etcdops.adapters.awserrors import TRANSIENT_CODES, AwsUnavailableError, aws_error, aws_error_message, is_transient
from etcdops.adapters.backup.crypto import KeyProvider, _key_error
from etcdops.adapters.backup.store import S3Store
from etcdops.domain.backup.errors import BackupStoreError, EncryptionError, KeyUnavailableError, StorePermissionError

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "etcdops" / "etcdops"


def _client_error(code: str, message: str = "m") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Operation")


CASES = [("ThrottlingException", True), ("SlowDown", True), ("KMSInternalException", True), ("503", True),
         ("InsufficientInstanceCapacity", True), ("AccessDenied", False), ("ValidationException", False)]  # fmt: skip


@pytest.mark.parametrize(("code", "transient"), CASES)
def test_the_s3_store_and_the_key_classify_by_the_one_list(code: str, transient: bool) -> None:
    failure = _client_error(code)
    assert is_transient(failure) is transient
    stored = S3Store(object(), "bucket")._error(failure, "a/b", "writing")
    assert type(stored) is (BackupStoreError if transient else StorePermissionError)
    assert isinstance(stored, BackupStoreError) and stored.retryable is transient
    assert "s3://bucket/a/b" in str(stored) and code in str(stored)
    key = _key_error(RuntimeError("wrapped"), KeyProvider("arn:key", "kms", object()))
    assert type(key) is EncryptionError  # not an AWS failure: no code to judge by
    wrapped = RuntimeError("sdk")
    wrapped.__cause__ = failure
    key = _key_error(wrapped, KeyProvider("arn:key", "kms", object()))
    assert type(key) is (KeyUnavailableError if transient else EncryptionError) and "arn:key" in str(key)


def test_a_failure_without_a_code_is_transient_and_the_message_is_one_line() -> None:
    network = EndpointConnectionError(endpoint_url="https://s3")
    assert is_transient(network) and not is_transient(ValueError("not AWS"))
    error = aws_error("reading x", _client_error("AccessDenied", "no\n  way"))
    assert str(error) == (
        "reading x: AccessDenied: An error occurred (AccessDenied) when calling the Operation operation: no way"
    )
    assert type(aws_error("reading x", network)) is AwsUnavailableError
    assert aws_error_message(_client_error("X", " a \n b ")) == "a b" and aws_error_message(network) == ""


def test_no_other_module_keeps_its_own_list_of_transient_codes() -> None:
    # the local stack emulates AWS and may name codes; the Lambda layer decides in one place
    codes = re.compile(r'"(Throttling|ThrottlingException|SlowDown)"')
    owners = sorted(
        path.name
        for path in PACKAGE.rglob("*.py")
        if not path.name.startswith("local") and codes.search(path.read_text())
    )
    assert owners == ["awserrors.py"]
    assert "Throttling" in TRANSIENT_CODES
