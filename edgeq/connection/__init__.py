"""Connections to devices: the ``Connection`` protocol, SSH (paramiko) and local implementations.

This package is the only part of edgeq that imports paramiko. Everything
paramiko or the socket layer raises is translated into an edgeq error by ONE
function, :func:`map_ssh_error`, applied at the boundary by
:meth:`SSHConnection._boundary`. After fabric/paramiko and httpx: a
connection opens lazily on first use and closes as a context manager; ``run``
and ``put`` return results, failures raise; tests run the same checks
against ``SSHConnection`` and ``LocalConnection``.

Modules, one concern each:

* ``base``: results and options, the ``Connection`` / ``RemoteProcess`` / ``Endpoint`` protocols;
* ``sshconfig``: what ``~/.ssh/config`` says about a host;
* ``hostkeys``: known_hosts entries, the host-key policy (accept-new, changed, revoked), new lines;
* ``errors``: paramiko's and the socket layer's exceptions -> edgeq errors, by type;
* ``process``: a started command's I/O (stdout and stderr drained together, one deadline);
* ``commands``: commands under edgeq's wrapper script, and the device files they need;
* ``ssh``: ``SSHConnection`` (paramiko) and its keepalive transport;
* ``local``: ``LocalConnection``, this machine as a device (the ``host`` target).
"""

from __future__ import annotations

import os

# First: paramiko imports invoke at start-up unless this stand-in is in place before paramiko is imported.
from . import _invoke  # noqa: F401  # isort: skip
from .base import (
    PASSWORD_ENV,
    TIMEOUT_MARKER,
    CommandResult,
    Connection,
    ConnectOptions,
    DeviceFilesMissing,
    Endpoint,
    ProgressCallback,
    RemoteProcess,
    local_user,
)
from .errors import map_ssh_error
from .hostkeys import known_hosts_token
from .local import LocalConnection
from .ssh import SSHConnection
from .sshconfig import SSHHostConfig, read_ssh_config

__all__ = [
    "PASSWORD_ENV",
    "TIMEOUT_MARKER",
    "CommandResult",
    "ConnectOptions",
    "Connection",
    "DeviceFilesMissing",
    "Endpoint",
    "LocalConnection",
    "ProgressCallback",
    "RemoteProcess",
    "SSHConnection",
    "SSHHostConfig",
    "known_hosts_token",
    "local_user",
    "map_ssh_error",
    "open_connection",
    "read_ssh_config",
]


def open_connection(
    endpoint: Endpoint, options: ConnectOptions | None = None, *, local_home: str | os.PathLike[str] | None = None
) -> Connection:
    """An unopened connection to ``endpoint``: SSH, or this machine when its transport is ``local``."""
    options = options or ConnectOptions()
    if endpoint.transport == "local":
        return LocalConnection(home=local_home, options=options, name=endpoint.name, edgeq_dir=endpoint.remote_dir)
    return SSHConnection(
        endpoint.address,
        port=endpoint.port,
        user=endpoint.user,
        key_files=endpoint.key_files,
        edgeq_dir=endpoint.remote_dir,
        options=options,
        name=endpoint.name,
    )
