"""Parsing Lambda events into typed models, with one named error for anything malformed."""

from __future__ import annotations

from typing import Any, TypeVar

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ValidationError

from etcdops.config import describe_validation_error
from etcdops.errors import EtcdopsError

M = TypeVar("M", bound=BaseModel)


class InvalidEventError(EtcdopsError):
    """The event does not have the shape this function accepts; nothing was done."""


def parse_event(event: Any, model: type[M]) -> M:
    if not isinstance(event, dict):
        raise InvalidEventError(f"{model.__name__}: expected a JSON object, got {type(event).__name__}")
    try:
        return parse(event=event, model=model)
    except ValidationError as exc:
        raise InvalidEventError(f"{model.__name__}: {describe_validation_error(exc)}") from None


class VerifyDetail(BaseModel):
    """BackupVerify's optional input: a backup id (default: the newest backup)."""

    backup_id: str | None = None


class VerifyEvent(EventBridgeModel):
    detail: VerifyDetail
