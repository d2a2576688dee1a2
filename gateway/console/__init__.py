"""The web console at /console: server-rendered pages over the same services and the same
authorization as the API (`Authorize`, Casbin, the audit trail)."""
