"""What ``~/.ssh/config`` says about a host: HostName, User, Port, IdentityFile (read with paramiko's parser)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import paramiko

from ..errors import EdgeqError

__all__ = ["SSHHostConfig", "read_ssh_config"]


@dataclasses.dataclass(frozen=True)
class SSHHostConfig:
    """What ``~/.ssh/config`` says about one host name (only what edgeq uses)."""

    alias: str
    hostname: str
    user: str | None = None
    port: int | None = None
    identity_files: tuple[str, ...] = ()
    proxy: str | None = None  # ProxyJump / ProxyCommand, which edgeq does not follow (yet)


def read_ssh_config(alias: str, path: str | os.PathLike[str] | None = None) -> SSHHostConfig:
    """What the SSH config (default ``~/.ssh/config``) says about ``alias``: HostName, User, Port, IdentityFile."""
    config_path = Path(path or "~/.ssh/config").expanduser()
    if not config_path.is_file():
        return SSHHostConfig(alias=alias, hostname=alias)
    try:
        config = paramiko.SSHConfig.from_path(str(config_path))
        found = config.lookup(alias)
    except (OSError, paramiko.SSHException, ValueError, KeyError) as exc:
        raise EdgeqError(f"cannot read SSH config {config_path}: {exc}") from exc
    port = found.get("port")
    try:
        port_number = int(port) if port is not None else None
    except ValueError:
        raise EdgeqError(f"{config_path}: Port {port!r} for host {alias!r} is not a number") from None
    # IdentityFile is the one list-valued key of paramiko's lookup (its stubs type every value as a str)
    identity_files: list[str] = found.get("identityfile", []) or []  # type: ignore[assignment]
    proxy = found.get("proxyjump") or found.get("proxycommand")
    return SSHHostConfig(
        alias=alias,
        hostname=found.get("hostname", alias),
        user=found.get("user"),
        port=port_number,
        identity_files=tuple(os.path.expanduser(p) for p in identity_files),
        proxy=None if proxy in (None, "none") else str(proxy),
    )
