"""Constrained values that more than one domain's schemas take, defined once."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

Purpose = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", strip_whitespace=False)
]
Subject = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._@:-]{1,128}$")]
# Free text may hold newlines, never NUL (PostgreSQL text cannot store it).
FreeText = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
