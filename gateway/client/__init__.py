"""The thin HTTP client of a tunegate gateway, shared by the CLI and the console's tests."""

from gateway.client.http import ApiError, Client, GatewayUnreachable

__all__ = ["ApiError", "Client", "GatewayUnreachable"]
