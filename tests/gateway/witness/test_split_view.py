"""The gateway pushes its checkpoints to a real witness (uvicorn, own key and database);
a gateway whose history was rewritten (its log rebuilt from a fork: same signing key,
same first events, different ones after) is refused, and says so in /readyz and /metrics."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session

from audit import chain
from audit.checkpoints import load_or_create_signer
from audit.cosignature import cosigner_vkey, parse_cosigner_vkey
from audit.witness import require_cosignatures
from gateway.main import create_app
from gateway.witness.cosignatures import cosignature_lines, with_cosignatures
from gateway.witness.pusher import WitnessPusher

TS = "2026-12-07T12:00:00.000000Z"


def append_events(engine, signer, first: int, last: int, tag: str) -> None:
    """Events first..last (fixed ts, so two databases can share a prefix byte for byte),
    then a checkpoint of the tree."""
    with Session(engine) as session:
        for i in range(first, last + 1):
            chain.append(
                session,
                actor="test",
                tenant="default",
                action="test.event",
                resource=f"{tag}:{i}",
                decision="allow",
                ts=TS,
            )
        chain.sign_checkpoint(session, signer)
        session.commit()


def copy_prefix(source, target, size: int) -> None:
    """Rebuild the first ``size`` events of ``source`` in ``target``, byte for byte."""
    with source.connect() as connection:
        bodies = (
            connection.execute(
                text("SELECT body FROM audit_events WHERE seq <= :n ORDER BY seq"), {"n": size}
            )
            .scalars()
            .all()
        )
    with Session(target) as session:
        for body in bodies:
            event = json.loads(bytes(body))
            del event["seq"], event["v"]
            chain.append(session, **event)
        session.commit()


def head_size(engine) -> int:
    with Session(engine) as session:
        return chain.read_head(session).seq


@pytest.fixture
def setup(gateway_settings, fresh_engine, witness_server, tmp_path):
    signer = load_or_create_signer(tmp_path / "audit-key.pem")
    log_vkey = signer.with_origin(gateway_settings.audit_origin).vkey
    url, witness_app = witness_server([log_vkey])
    w = witness_app.state.witness
    witness_vkey = cosigner_vkey(w.name, w.public_key)

    def settings_for(database_url: str):
        return gateway_settings.model_copy(
            update={
                "database_url": database_url,
                "audit_signing_key": tmp_path / "audit-key.pem",
                "audit_witnesses": [f"{url} {witness_vkey}"],
                "audit_witness_quorum": 1,
                "audit_witness_push_seconds": 3600.0,  # the test drives the rounds
            }
        )

    return signer, settings_for, witness_vkey


def test_honest_growth_is_cosigned_and_a_fork_is_refused(setup, gateway_settings, fresh_engine):
    signer, settings_for, witness_vkey = setup
    honest = settings_for(gateway_settings.database_url)
    with TestClient(create_app(honest)) as client:
        state = client.app.state.gateway
        engine = state.engine
        append_events(engine, signer, 1, 10, "shared")
        assert [o.status for o in state.witness_pusher.push_once(force=True)] == ["cosigned"]
        shared = head_size(engine)
        append_events(engine, signer, 11, 20, "honest")
        assert [o.status for o in state.witness_pusher.push_once(force=True)] == ["cosigned"]
        with Session(engine) as session:
            head = chain.read_head(session)
            lines = cosignature_lines(session, head.seq, head.root)
            assert len(lines) == 1
            # the served note with its cosignature meets a 1-of-1 quorum offline
            latest = state.witness_pusher.note_source(session)
            shown = with_cosignatures(session, latest.note, latest.size, latest.root)
        assert len(require_cosignatures(shown, [parse_cosigner_vkey(witness_vkey)], 1)) == 1
        # ...and the audit API serves it so: the history's note at that size carries it.
        from gateway.security import mint_dev_token

        auditor = mint_dev_token(honest, sub="carol", roles=["compliance-officer"])
        history = client.get(
            "/v1/audit/checkpoints",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {auditor}"},
        ).json()["data"]
        [served] = [item["note"] for item in history if item["tree_size"] == latest.size]
        assert lines[0] in served
        ready = client.get("/readyz").json()
        assert ready["checks"]["witnesses"] is True

        # A pusher that forgot what the witness holds (its cosignatures gone): old 0 gets
        # 409 with the witness's size, and the retry from that size with a proof succeeds.
        with Session(engine) as session:
            session.execute(text("DELETE FROM audit_cosignatures"))
            session.commit()
        append_events(engine, signer, 21, 25, "honest")
        amnesiac = WitnessPusher(
            engine,
            witnesses=state.witness_pusher.witnesses,
            quorum=1,
            note_source=state.witness_pusher.note_source,
        )
        assert amnesiac.standing[amnesiac.witnesses[0].key.name].size == 0
        assert [o.status for o in amnesiac.push_once(force=True)] == ["cosigned"]
        amnesiac.stop()

    # The fork: a new database, the same key, the same first events, then others.
    forked_engine = fresh_engine()
    copy_prefix(engine, forked_engine, shared)
    append_events(forked_engine, signer, 11, 30, "rewritten")
    forked = settings_for(forked_engine.url.render_as_string(hide_password=False))
    with TestClient(create_app(forked)) as client:
        pusher = client.app.state.gateway.witness_pusher
        outcomes = pusher.push_once(force=True)
        # old 0 -> 409 (the honest size) -> old = that size, a proof from the fork's tree -> 422
        assert [(o.status, o.code) for o in outcomes] == [("refused", "witness_bad_proof")]
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["witnesses"] is False
        metrics = client.get("/metrics").text
        assert 'tunegate_witness_refusals_total{status="422"}' in metrics
