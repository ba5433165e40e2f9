"""The emulated Step Functions checks each definition shape once per process, and still refuses every
definition AWS would refuse (etcdops_local/aws/definitions.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto.stepfunctions.parser.api import InvalidDefinition
from moto.stepfunctions.parser.asl.parse import asl_parser
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from etcdops_local.aws import definitions

ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}-RunbookStepFunction-{}"


def machine(function: str, next_state: str = "Done") -> str:
    return json.dumps(
        {
            "StartAt": "Step",
            "States": {
                "Step": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": function, "Payload.$": "$"},
                    "Next": next_state,
                },
                "Done": {"Type": "Succeed"},
            },
        }
    )


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The definitions moto's grammar parsed while the check-once patch was installed."""
    seen: list[str] = []
    parse = asl_parser.AmazonStateLanguageParser.parse

    def counted(definition: str) -> Any:
        seen.append(definition)
        return parse(definition)

    monkeypatch.setattr(asl_parser.AmazonStateLanguageParser, "parse", staticmethod(counted))
    monkeypatch.setattr(definitions, "_VALID", set())
    undo = definitions.install()
    try:
        yield seen
    finally:
        undo()


def test_stacks_definitions_that_differ_only_in_function_arns_are_parsed_once(parses: list[str]) -> None:
    first, second = machine(ARN.format("a", "G74F62NAV1ST")), machine(ARN.format("b", "ZXCQ8ITYVSIC"))
    StepFunctionsParserBackend._validate_definition(definition=first)
    StepFunctionsParserBackend._validate_definition(definition=second)
    assert parses == [first]
    # another shape is parsed again
    other = machine(ARN.format("a", "G74F62NAV1ST"), next_state="Step")
    StepFunctionsParserBackend._validate_definition(definition=other)
    assert parses == [first, other]


def test_a_definition_the_grammar_refuses_is_refused_every_time(parses: list[str]) -> None:
    broken = machine(ARN.format("a", "X")).replace('"Type": "Succeed"', '"Type": "Finish"')
    for _ in range(2):
        with pytest.raises(InvalidDefinition):
            StepFunctionsParserBackend._validate_definition(definition=broken)
    assert parses == [broken, broken]


def test_the_undo_puts_motos_own_check_back() -> None:
    original = StepFunctionsParserBackend.__dict__["_validate_definition"]
    undo = definitions.install()
    assert StepFunctionsParserBackend.__dict__["_validate_definition"] is not original
    undo()
    assert StepFunctionsParserBackend.__dict__["_validate_definition"] is original


def test_a_function_arn_is_what_the_shape_leaves_out() -> None:
    text = machine(ARN.format("stack-1", "ABC")) + " arn:aws:states:::lambda:invoke"
    assert definitions.shape(text) == machine(definitions.PLACEHOLDER) + " arn:aws:states:::lambda:invoke"
