"""A console form checked by the API's own schema, each error placed beside its field."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def checked(schema: type[Model], values: Mapping[str, Any]) -> tuple[Model | None, dict[str, str]]:
    """The schema's object, or None and {field: message} (a whole-form rule goes beside the
    field its message names, else under "form")."""
    try:
        return schema.model_validate(dict(values)), {}
    except ValidationError as exc:
        return None, _placed(exc.errors(include_url=False), schema.model_fields)


def _placed(faults: Iterable[Any], fields: Iterable[str]) -> dict[str, str]:
    names = list(fields)
    errors: dict[str, str] = {}
    for fault in faults:
        loc = [str(part) for part in fault.get("loc", ())]
        message = str(fault.get("msg", "invalid")).removeprefix("Value error, ")
        field = loc[0] if loc else _first_named(message, names)
        errors.setdefault(field, message)
    return errors


def _first_named(message: str, names: list[str]) -> str:
    """The field a whole-form message names first ("legal_basis is required when ...")."""
    found = [
        (match.start(), name)
        for name in names
        if (match := re.search(rf"\b{re.escape(name)}\b", message))
    ]
    return min(found)[1] if found else "form"


def lines(value: str | None) -> list[str]:
    """A textarea of one item a line (or comma-separated), blanks dropped."""
    return [item.strip() for item in re.split(r"[\n,]", value or "") if item.strip()]
