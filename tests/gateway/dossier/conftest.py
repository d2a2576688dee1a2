"""The registry's cast and its trained model (an approved redacting source, two file
versions, a candidate fine-tuned on them): what a dossier is written about."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from gateway.db import make_engine
from gateway.jobs.models import FineTuningJob
from gateway.registry.models import ModelVersion
from tests.gateway.dossier import shapes
from tests.gateway.registry.conftest import people, trained  # noqa: F401


@pytest.fixture
def worker_shaped(trained, gateway_settings):  # noqa: F811
    """The trained model, its JSON columns rewritten as the job API and the worker fill
    them (tests.gateway.dossier.shapes)."""
    engine = make_engine(gateway_settings.database_url)
    try:
        with Session(engine) as session:
            model = session.get(ModelVersion, trained["model_id"])
            job = session.get(FineTuningJob, model.job_id)
            decisions = shapes.decisions(trained["source"]["id"])
            model.hyperparameters = shapes.HYPERPARAMETERS
            model.compute = shapes.COMPUTE
            model.evaluation = shapes.EVALUATION_REPORT
            model.decisions = job.decisions = decisions
            job.lora = shapes.LORA
            job.evaluation = shapes.EVALUATION_SETTINGS
            job.estimate = shapes.ESTIMATE
            session.add_all([model, job])
            session.commit()
    finally:
        engine.dispose()
    return trained
