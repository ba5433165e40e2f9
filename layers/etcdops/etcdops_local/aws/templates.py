"""The SAM template made ready for the emulated AWS: read, parameters applied, translated offline to
CloudFormation, and each state machine's DefinitionSubstitutions baked into its definition (moto ignores
them; see :mod:`etcdops_local.aws.stack`)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3

from etcdops.domain.errors import ConfigError

CODE_BUCKET = "etcdops-local-code"  # holds the dummy code objects CloudFormation's Lambda needs
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # no identity: offline only
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[4] / "template.yaml"  # the repository's, in a checkout


def read_template(template_path: Path) -> dict[str, Any]:
    """The SAM template as a dict, with CloudFormation's short-form tags (``!Ref``) in long form."""
    from samtranslator.yaml_helper import yaml_parse

    try:
        document = yaml_parse(template_path.read_text())
    except OSError as exc:
        raise ConfigError(f"template: cannot read {template_path}: {exc.strerror}") from None
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise ConfigError(f"template: {template_path} has no Resources")
    return document


def effective_parameters(template: Mapping[str, Any], parameters: Mapping[str, str] | None) -> dict[str, str]:
    """Template defaults overridden by ``parameters``; an unknown parameter, or a required one
    without a value, is refused by name (as CloudFormation refuses it)."""
    declared = template.get("Parameters") or {}
    values = {name: str(spec["Default"]) for name, spec in declared.items() if "Default" in spec}
    for name, value in (parameters or {}).items():
        if name not in declared:
            raise ConfigError(f"parameters: {name}: not a parameter of the template")
        values[name] = str(value)
    missing = sorted(set(declared) - set(values))
    if missing:
        raise ConfigError(f"parameters: {', '.join(missing)}: the template has no default; give a value")
    return values


def function_code(template: Mapping[str, Any], logical_id: str, template_dir: Path) -> tuple[Path, str] | None:
    """The local code directory and handler of a SAM function, or None when its code is not local."""
    globals_ = ((template.get("Globals") or {}).get("Function")) or {}
    props = template["Resources"][logical_id].get("Properties") or {}
    code_uri = props.get("CodeUri", globals_.get("CodeUri"))
    handler = props.get("Handler", globals_.get("Handler"))
    if not isinstance(code_uri, str) or code_uri.startswith("s3://") or not isinstance(handler, str):
        return None
    return (template_dir / code_uri).resolve(), handler


def _load_definition(path: Path) -> Any:
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(text)


def prepare_for_translation(template: dict[str, Any], template_dir: Path) -> dict[str, Any]:
    """A copy of the SAM template that translates offline: dummy S3 code URIs, inlined definitions."""
    prepared = copy.deepcopy(template)
    globals_function = (prepared.get("Globals") or {}).get("Function") or {}
    globals_function.pop("CodeUri", None)
    for logical_id, resource in prepared["Resources"].items():
        props = resource.setdefault("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and props.get("PackageType") != "Image":
            props.pop("InlineCode", None)
            props["CodeUri"] = f"s3://{CODE_BUCKET}/{logical_id}.zip"
        elif resource.get("Type") == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = f"s3://{CODE_BUCKET}/{logical_id}.zip"
        elif resource.get("Type") == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
            uri = props.pop("DefinitionUri")
            try:
                props["Definition"] = _load_definition(template_dir / uri)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{logical_id}.DefinitionUri: cannot load {uri}: {exc}") from None
    return prepared


def translate(template: dict[str, Any], parameters: Mapping[str, str], region: str) -> dict[str, Any]:
    """SAM -> CloudFormation, offline (no managed-policy lookups, no credentials)."""
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    session = boto3.session.Session(region_name=region, **DUMMY_CREDENTIALS)
    translator = Translator({}, Parser(), boto_session=session)
    try:
        translated: dict[str, Any] = translator.translate(copy.deepcopy(template), dict(parameters))
    except InvalidDocumentException as exc:
        causes = "; ".join(str(cause) for cause in exc.causes)
        raise ConfigError(f"template: {causes}") from None
    finally:
        translator.metrics.publish()  # to its dummy publisher; otherwise it warns
    return translated


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")


def substitute_definitions(cfn: dict[str, Any]) -> None:
    """Bake each state machine's DefinitionSubstitutions into its definition (moto ignores them).

    SAM emits the definition as ``Fn::Join`` over the JSON's lines. The result is one ``Fn::Join``
    whose parts are the text between placeholders and the substitutions' values (literals or
    intrinsics that moto resolves), so ``$`` and ``$$.`` JSONPaths pass through untouched.
    """
    for logical_id, resource in cfn["Resources"].items():
        if resource.get("Type") != "AWS::StepFunctions::StateMachine":
            continue
        props = resource.get("Properties") or {}
        substitutions = props.pop("DefinitionSubstitutions", None) or {}
        definition = props.get("DefinitionString")
        if isinstance(definition, dict) and "Fn::Join" in definition:
            separator, pieces = definition["Fn::Join"]
            joined: list[Any] = []
            for i, piece in enumerate(pieces):
                if i:
                    joined.append(separator)
                joined.append(piece)
        elif isinstance(definition, str):
            joined = [definition]
        elif "Definition" in props:
            joined = [json.dumps(props.pop("Definition"), indent=4)]
        else:
            raise ConfigError(f"{logical_id}: state machine definition in an unexpected form")
        parts: list[Any] = []
        for piece in joined:
            if not isinstance(piece, str):
                parts.append(piece)
                continue
            position = 0
            for match in _PLACEHOLDER.finditer(piece):
                if match.group(1) not in substitutions:
                    continue
                parts.append(piece[position : match.start()])
                value = substitutions[match.group(1)]
                parts.append(value if isinstance(value, dict) else _literal(value))
                position = match.end()
            parts.append(piece[position:])
        merged: list[Any] = []
        for part in parts:
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            elif part != "":
                merged.append(part)
        props["DefinitionString"] = {"Fn::Join": ["", merged]}


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
