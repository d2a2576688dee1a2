"""Pure LoRA training library. Knows nothing of HTTP, the database or the audit log."""
