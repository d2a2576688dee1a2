"""The rows a job submission reads, kept in memory once they are usable.

A registered base model, a processed training file and an approved data source never
change again except in one way each: the model is retired, the file is erased or deleted,
the source is revoked. Every submission's write transaction re-checks exactly those three
things (gateway.jobs.service), so a snapshot that has gone stale can only ever be refused
there, never trusted. That is what lets a submission skip reading them again: on a busy
gateway the read transaction cost more than the gates it fed.

Rows are cached per gateway process (GatewayState), at most ``size`` per kind, and only
in the state that makes them usable; anything else is read fresh every time, so refusals
keep their precise reasons.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from sqlmodel import Session

from gateway.base_models.models import RegisteredBaseModel
from gateway.data_sources.models import DataSource
from gateway.files.models import TrainingFile

Row = TypeVar("Row")
DEFAULT_SIZE = 1024


class UsableRows:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._rows: dict[type, OrderedDict[str, Any]] = {}
        self._lock = threading.Lock()

    def base_model(
        self, session: Session, name: str, read: Callable[[], RegisteredBaseModel]
    ) -> RegisteredBaseModel:
        return self._get(
            session, RegisteredBaseModel, name, read, usable=lambda row: row.status == "active"
        )

    def training_file(
        self, session: Session, tenant: str, file_id: str, read: Callable[[], TrainingFile]
    ) -> TrainingFile:
        # Keyed with the tenant: a hit must never hand one tenant another's row.
        return self._get(
            session,
            TrainingFile,
            f"{tenant}/{file_id}",
            read,
            usable=lambda row: row.status == "processed" and row.content_deleted_at is None,
        )

    def data_source(
        self, session: Session, tenant: str, data_source_id: str, read: Callable[[], DataSource]
    ) -> DataSource:
        return self._get(
            session,
            DataSource,
            f"{tenant}/{data_source_id}",
            read,
            usable=lambda row: row.status == "approved",
        )

    def _get(
        self,
        session: Session,
        model: type[Row],
        key: str,
        read: Callable[[], Row],
        *,
        usable: Callable[[Row], bool],
    ) -> Row:
        with self._lock:
            rows = self._rows.setdefault(model, OrderedDict())
            row = rows.get(key)
            if row is not None:
                rows.move_to_end(key)
                return row
        row = read()  # raises for a missing row, as the uncached read does
        if usable(row):
            # Detached, so that no session can expire or change the shared copy.
            session.expunge(row)
            with self._lock:
                rows[key] = row
                while len(rows) > self.size:
                    rows.popitem(last=False)
        return row
