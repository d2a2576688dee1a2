"""Bringing a database to a usable state: schema at head, then the seed policy (version 1,
with its audit event) if the database has never had one."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session

from audit import chain
from gateway import migrations
from gateway.config import Settings
from gateway.db import make_engine
from policies import store

SEED_ACTOR = "system:seed"
SYSTEM_TENANT = "*"


def seed_policy(engine: Engine) -> store.PolicyVersionInfo | None:
    with Session(engine) as session:
        version = store.seed_if_empty(session, actor=SEED_ACTOR)
        if version is not None:
            chain.append(
                session,
                actor=SEED_ACTOR,
                tenant=SYSTEM_TENANT,
                action="policy.seeded",
                resource="policy",
                decision="allow",
                policy_version=version.hash,
                details={"version_id": version.id, "rule_count": version.rule_count},
            )
        session.commit()
    return version


def prepare_database(settings: Settings, *, revision: str = "head") -> None:
    engine = make_engine(settings.database_url)
    try:
        migrations.upgrade(engine, revision)
        if revision == "head":
            seed_policy(engine)
    finally:
        engine.dispose()
