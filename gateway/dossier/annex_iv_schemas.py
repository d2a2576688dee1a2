"""The dossier's Annex IV checklist, as the API returns it (gateway.dossier.annex_iv fills
it; apart so that gateway.dossier.schemas can hold it without importing the checker)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

NOT_RECORDED = "not recorded"

Status = Literal["recorded", "partly recorded", "not recorded"]


class AnnexIVPoint(BaseModel):
    point: int = Field(description="Annex IV point, 1..9")
    title: str
    status: Status
    filled_from: list[str] = Field(description="dossier sections / records that fill it")
    not_recorded: list[str] = Field(description="what the point asks that no record holds")


class DossierAnnexIV(BaseModel):
    """Annex IV's nine points, each filled from records or marked "not recorded"."""

    points: list[AnnexIVPoint]
