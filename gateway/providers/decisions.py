"""What an export decision is: allowed or not, by which policy version, and each gate that
refused (gateway.providers.service.check_export makes one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError


@dataclass(frozen=True)
class ExportRefusal:
    """One gate that refuses the export, with the error an export would end in."""

    gate: str
    error: GatewayError

    def public(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "status": self.error.status_code,
            "code": self.error.code,
            "message": self.error.message,
            "details": self.error.details,
        }


@dataclass(frozen=True)
class ExportDecision:
    """May the principal send the data source's data to the provider. `decisions` holds the
    policy's decisions and the gates that passed, as a job's decisions do; `transfer` is the
    data source's transfer record that allows it, when the source holds personal data."""

    provider: str
    data_source: str
    policy_version: str
    decisions: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[ExportRefusal] = field(default_factory=list)
    transfer: dict[str, Any] | None = None

    @property
    def allowed(self) -> bool:
        return not self.refusals

    def error(self) -> GatewayError | None:
        """What an export that goes ahead anyway is refused with: the first refusal."""
        return self.refusals[0].error if self.refusals else None
