"""Default limits of device work (timeouts, concurrency, retries): one place for the library and the CLI.

Constants only, with no imports, so the CLI can show them as option defaults
without importing the connection (paramiko) or the fleet runner.
"""

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT_S",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_RETRIES",
    "DEFAULT_TRANSFER_TIMEOUT_S",
]

DEFAULT_CONNECT_TIMEOUT_S = 10.0
"""Each step of connecting: TCP, the SSH greeting, the handshake, authentication."""

DEFAULT_COMMAND_TIMEOUT_S = 60.0
"""One remote command; then it is stopped on the device."""

DEFAULT_TRANSFER_TIMEOUT_S = 600.0
"""One upload (a model)."""

DEFAULT_CONCURRENCY = 16
"""Devices worked on at the same time."""

DEFAULT_RETRIES = 2
"""Extra attempts after a connection error (never after an authentication, host-key or command error)."""
