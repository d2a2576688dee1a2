"""Governed inference of tuned models: `/v1/chat/completions` behind policy, limits and audit."""
