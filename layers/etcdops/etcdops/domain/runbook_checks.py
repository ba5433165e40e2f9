"""Checking a runbook document: against its model (:func:`document_problem`, one line naming the field)
and at a step, with the fields that step needs required (:func:`requiring`)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError, model_validator

from etcdops.domain.config import describe_validation_error

if TYPE_CHECKING:
    from etcdops.domain.runbook_documents import RunbookDocument


@cache
def requiring(model: type[RunbookDocument], fields: tuple[str, ...]) -> type[RunbookDocument]:
    """``model`` with ``fields`` present, not null and not empty (a model of its own per step, made once)."""

    class Requiring(model):  # type: ignore[valid-type, misc]
        @model_validator(mode="after")
        def _needed(self) -> Any:
            missing = [f for f in fields if getattr(self, f, None) in (None, "")]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            return self

    Requiring.__name__ = Requiring.__qualname__ = f"{model.__name__}Requiring"
    return Requiring


def document_problem(model: type[RunbookDocument], document: Any) -> str | None:
    """What is wrong with ``document`` as a ``model``, in one line naming the field; None when nothing is."""
    if not isinstance(document, dict):
        return f"the document is a {type(document).__name__}, not a JSON object"
    try:
        model.model_validate(document)
    except ValidationError as exc:
        return describe_validation_error(exc)
    except RecursionError:
        return "nested too deeply to be a runbook document"
    return None
