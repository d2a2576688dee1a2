from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from gateway import migrations
from gateway.models import metadata


class TestMigrations:
    def test_upgrade_downgrade_upgrade(self, fresh_engine):
        engine = fresh_engine()
        migrations.downgrade(engine)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrations.upgrade(engine)
        assert {"audit_events", "casbin_rule", "policy_versions"} <= set(
            inspect(engine).get_table_names()
        )

    def test_models_match_migrations(self, engine):
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []

    def test_chain_head_is_seeded(self, fresh_engine):
        engine = fresh_engine()
        with engine.connect() as connection:
            row = connection.execute(text("SELECT seq, hash FROM audit_chain_head")).one()
        assert row.seq == 0 and bytes(row.hash) == bytes(32)
