"""Every table module, imported once, so SQLModel.metadata is complete for alembic."""

from sqlmodel import SQLModel

import audit.models  # noqa: F401
import gateway.base_models.models
import gateway.data_sources.models
import gateway.erasure.models
import gateway.files.models
import gateway.inference.models
import gateway.jobs.mislabels
import gateway.jobs.models
import gateway.providers.models
import gateway.reevaluation.models
import gateway.registry.models
import gateway.retention.models
import gateway.witness.models  # noqa: F401
import policies.models  # noqa: F401

metadata = SQLModel.metadata
