"""What a service may use of the gateway process, passed to it explicitly as ``state``.

``gateway.state.GatewayState`` is the one implementation; it also builds the executor and
the job writer, which import the domains. Services type their ``state`` with these
Protocols instead, so a domain depends on this narrow surface and never on the module
that assembles the whole process (no import circle, and a test can see what a service
touches)."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from audit.checkpoints import Signer
from gateway.config import Settings
from ingest import ScanPool
from policies.enforcer import PolicyEngine


class Runtime(Protocol):
    settings: Settings
    engine: Engine
    policy: PolicyEngine
    signer: Signer

    def notify_sequencer(self) -> None:
        """Wakes the audit sequencer: events were queued and committed."""

    def flush_audit_queue(self) -> None:
        """Chains every committed event now (a reader sees their own writes)."""

    def refresh_policy(self) -> None:
        """Reloads the in-memory policy after a committed change."""

    def scan_pool(self) -> ScanPool | None:
        """The upload-scanning processes (None: scan in the calling thread)."""
