"""Every table module, imported once, so SQLModel.metadata is complete for alembic."""

from sqlmodel import SQLModel

import audit.models  # noqa: F401
import gateway.base_models.models  # noqa: F401
import gateway.data_sources.models  # noqa: F401
import gateway.erasure.models  # noqa: F401
import gateway.files.models  # noqa: F401
import gateway.jobs.models  # noqa: F401
import gateway.registry.models  # noqa: F401
import policies.models  # noqa: F401

metadata = SQLModel.metadata
