"""State machine definitions checked once per process and shape: moto's Step Functions parses a definition
with its ANTLR grammar to validate it on every CreateStateMachine (our five definitions take about a second
of CPU per stack, half of a stack's creation), and every stack creates the same five again.

They differ between stacks only in the function ARNs the stack substituted into them (each stack's
functions have names of their own). Such an ARN is a plain string to the grammar, one of the same form is
the same token, so a definition is remembered by its text with every Lambda function ARN in it written
as one placeholder: a definition that parsed makes every definition of that shape valid. One that does not
parse is refused every time, with moto's own error, as AWS refuses it. Each execution still parses its
definition afresh (what it runs is never shared between executions).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

FUNCTION_ARN = re.compile(r"arn:aws:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+")
PLACEHOLDER = "arn:aws:lambda:us-east-1:123456789012:function:F"

_VALID: set[str] = set()
_LOCK = threading.Lock()


def shape(definition: str) -> str:
    """``definition`` with each Lambda function ARN written as one placeholder ARN."""
    return FUNCTION_ARN.sub(PLACEHOLDER, definition)


def install() -> Callable[[], None]:
    """Validate each definition shape once (moto's own check, the first time); returns the undo."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original: Any = StepFunctionsParserBackend.__dict__["_validate_definition"]
    validate = original.__func__

    def validate_once(definition: str) -> None:
        key = shape(definition)
        with _LOCK:
            if key in _VALID:
                return
        validate(definition)  # raises moto's InvalidDefinition for a definition AWS would refuse
        with _LOCK:
            _VALID.add(key)

    StepFunctionsParserBackend._validate_definition = staticmethod(validate_once)  # type: ignore[method-assign]

    def undo() -> None:
        StepFunctionsParserBackend._validate_definition = original  # type: ignore[method-assign]

    return undo
