"""Casbin policy model, seed, fast enforcer and versioned rule store. Never imports gateway."""
