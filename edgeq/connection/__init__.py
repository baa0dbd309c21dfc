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
* ``jump``: jump hosts (ProxyJump): the hop records and the parser; why ProxyCommand is refused;
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
from .jump import JumpHost, JumpResolver, JumpSpec, jump_hosts, parse_proxy_jump, proxy_command_error
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
    "JumpHost",
    "JumpResolver",
    "JumpSpec",
    "LocalConnection",
    "ProgressCallback",
    "RemoteProcess",
    "SSHConnection",
    "SSHHostConfig",
    "jump_hosts",
    "known_hosts_token",
    "local_user",
    "map_ssh_error",
    "open_connection",
    "parse_proxy_jump",
    "proxy_command_error",
    "read_ssh_config",
]


def open_connection(
    endpoint: Endpoint,
    options: ConnectOptions | None = None,
    *,
    local_home: str | os.PathLike[str] | None = None,
    resolve_jump: JumpResolver | None = None,
) -> Connection:
    """An unopened connection to ``endpoint``: SSH, or this machine when its transport is ``local``.

    An endpoint's ``proxy_jump`` (OpenSSH's ProxyJump value) is followed: each
    hop is resolved by ``resolve_jump`` (e.g. with ``ssh -G``), else taken
    literally (see :func:`jump_hosts`).
    """
    options = options or ConnectOptions()
    if endpoint.transport == "local":
        return LocalConnection(home=local_home, options=options, name=endpoint.name, edgeq_dir=endpoint.remote_dir)
    options = _device_options(endpoint, options)
    # getattr: Device gains the field in a separate change; then it joins the Endpoint protocol
    proxy_jump: str | None = getattr(endpoint, "proxy_jump", None)
    jump = jump_hosts(proxy_jump, resolve=resolve_jump, key_files=endpoint.key_files)
    return SSHConnection(
        endpoint.address,
        port=endpoint.port,
        user=endpoint.user,
        key_files=endpoint.key_files,
        edgeq_dir=endpoint.remote_dir,
        options=options,
        name=endpoint.name,
        jump=jump,
    )


def _device_options(endpoint: Endpoint, options: ConnectOptions) -> ConnectOptions:
    """``options`` with what the SSH config (``ssh -G``) says for this device: known_hosts files, key sources.

    A :class:`edgeq.devices.Device` records OpenSSH's UserKnownHostsFile and
    GlobalKnownHostsFile (unless ``--known-hosts`` was given), whether ssh's
    IdentityFile list (defaults included) is already its ``key_files``, and
    ``IdentityAgent none``. Endpoints without these attributes keep ``options``.
    """
    import dataclasses
    from pathlib import Path

    user_files: tuple[str, ...] = getattr(endpoint, "known_hosts_files", ())
    global_files: tuple[str, ...] = getattr(endpoint, "global_known_hosts_files", ())
    return dataclasses.replace(
        options,
        user_known_hosts=Path(user_files[0]) if user_files else options.user_known_hosts,
        system_known_hosts=Path(global_files[0]) if global_files else options.system_known_hosts,
        look_for_keys=options.look_for_keys and getattr(endpoint, "default_keys", True),
        allow_agent=options.allow_agent and getattr(endpoint, "use_agent", True),
    )
