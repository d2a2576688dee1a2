"""tunegate gateway: the FastAPI service that decides and records."""
