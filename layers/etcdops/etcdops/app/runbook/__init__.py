"""The runbooks' steps (``replace``, ``restore``) and what they share."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_CAUSE_LIMIT = 1000
_MESSAGE_LIMIT = 8000  # our own error messages: a failed preflight lists every finding, one a line


def caught_error(error: Mapping[str, Any] | None) -> str:
    """``Error: message`` of a Catch's ``{"Error", "Cause"}``, for people.

    A Lambda task's Cause is the function's error document (``errorMessage``, ``errorType``,
    ``stackTrace``); only the message is kept: stack traces belong in the function's log, not in mail.
    """
    return f"{(error or {}).get('Error')}: {caught_message(error)}"


def caught_message(error: Mapping[str, Any] | None) -> str:
    """The message of a Catch's ``{"Error", "Cause"}`` (see :func:`caught_error`)."""
    error = error or {}
    cause = error.get("Cause")
    text = "" if cause is None else str(cause)
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    limit = _CAUSE_LIMIT
    if isinstance(document, dict) and "errorMessage" in document:
        text, limit = str(document["errorMessage"]), _MESSAGE_LIMIT
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
