"""`tunegate` command line (typer): operator commands and the client commands for every user.

Each module registers its commands on the one root `app` (gateway.cli.app).
"""

from gateway.cli import (  # noqa: F401  (each module registers its commands)
    audit,
    data_sources,
    erasure,
    evidence,
    files,
    jobs,
    login,
    models,
    operator,
    policy,
    promotions,
    providers,
    witness,
)
from gateway.cli.app import app

__all__ = ["app"]
