"""Append-only, hash-chained, Merkle-provable audit trail. Never imports gateway."""
