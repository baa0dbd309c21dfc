"""Jump hosts (OpenSSH's ProxyJump): the hop records, the ProxyJump parser, and the refusal of ProxyCommand.

A ProxyJump value (``ssh -J`` / ``ProxyJump``, as ``ssh -G`` prints it) is
a comma-separated chain of ``[user@]host[:port]``, ``[user@][address]:port``
or ``ssh://[user@]host[:port]``, connected in the order written: here -> first
-> ... -> last -> the device. :func:`parse_proxy_jump` reads it into
:class:`JumpSpec` s, as written; each hop's host may be an ssh-config alias,
so the caller resolves every spec into a :class:`JumpHost` (HostName, User,
Port, IdentityFile) before :class:`edgeq.connection.SSHConnection` uses it.

ProxyCommand is refused (:func:`proxy_command_error`): see its docstring.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import urllib.parse
from collections.abc import Callable, Sequence

from ..errors import EdgeqError

__all__ = ["JumpHost", "JumpResolver", "JumpSpec", "jump_hosts", "parse_proxy_jump", "proxy_command_error"]


@dataclasses.dataclass(frozen=True)
class JumpSpec:
    """One hop of a ProxyJump value as written: ``host`` (an address or an ssh-config alias), and user / port if given."""

    host: str
    user: str | None = None
    port: int | None = None


@dataclasses.dataclass(frozen=True)
class JumpHost:
    """A resolved jump host: the address connected to, its port, login user and key files (as a device's).

    ``user`` None is the local user, as for a device.
    """

    host: str
    port: int = 22
    user: str | None = None
    key_files: tuple[str, ...] = ()

    @property
    def destination(self) -> str:
        """``user@host:port`` (an IPv6 address in brackets), for messages; no user part when it is not set."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}:{self.port}"


JumpResolver = Callable[[JumpSpec], JumpHost]
"""Resolves one hop as written into the host to connect to (e.g. with ``ssh -G``)."""


def parse_proxy_jump(text: str) -> tuple[JumpSpec, ...]:
    """The hops of a ProxyJump value, first to connect first; ``none`` or an empty value is no hop.

    Raises :class:`edgeq.errors.EdgeqError` naming the value and the hop that is not valid.
    """
    value = text.strip()
    if not value or value.lower() == "none":
        return ()
    return tuple(_parse_hop(part.strip(), value) for part in value.split(","))


def _parse_hop(part: str, value: str) -> JumpSpec:
    def bad(why: str) -> EdgeqError:
        return EdgeqError(
            f"ProxyJump {value!r}: {why}",
            hint="each hop is [user@]host[:port], [user@][address]:port or ssh://[user@]host[:port], separated by commas",
        )

    if not part:
        raise bad("an empty hop")
    if any(ch.isspace() for ch in part):
        raise bad(f"hop {part!r} contains white space")
    user: str | None = None
    if part[:6].lower() == "ssh://":
        rest = part[6:]
        rest = rest[:-1] if rest.endswith("/") else rest
        if "/" in rest or "?" in rest or "#" in rest:
            raise bad(f"hop {part!r}: an ssh:// hop takes no path or query")
        if "@" in rest:
            quoted, _, rest = rest.partition("@")
            user = urllib.parse.unquote(quoted)  # RFC 3986 user info, as OpenSSH decodes it
            if not user:
                raise bad(f"hop {part!r} has an empty user name")
    else:
        if "@" in part:
            user, _, rest = part.rpartition("@")  # OpenSSH splits at the last '@'
            if not user:
                raise bad(f"hop {part!r} has an empty user name")
        else:
            rest = part
    port_text: str | None = None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket:
            raise bad(f"hop {part!r}: no closing ']'")
        if after:
            if not after.startswith(":"):
                raise bad(f"hop {part!r}: unexpected {after!r} after ']'")
            port_text = after[1:]
    elif rest.count(":") > 1:
        raise bad(f"hop {part!r}: an IPv6 address is written in brackets ([address]:port)")
    else:
        host, colon, port_text_found = rest.partition(":")
        port_text = port_text_found if colon else None
    if not host:
        raise bad(f"hop {part!r} has no host")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise bad(f"hop {part!r}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return JumpSpec(host=host, user=user, port=port)


def jump_hosts(
    text: str | None, *, resolve: JumpResolver | None = None, key_files: Sequence[str] = ()
) -> tuple[JumpHost, ...]:
    """The jump chain of a ProxyJump value, each hop resolved by ``resolve``.

    Without ``resolve`` a hop is taken literally: its host is the address, port
    22 and the local user unless written, and ``key_files`` (the device's) as
    its keys. That is right for addresses, not for ssh-config aliases: callers
    that know the config pass a resolver.
    """
    if not text:
        return ()
    specs = parse_proxy_jump(text)
    if resolve is not None:
        return tuple(resolve(spec) for spec in specs)
    return tuple(
        JumpHost(host=spec.host, port=spec.port or 22, user=spec.user, key_files=tuple(key_files)) for spec in specs
    )


# ssh's options that take an argument (ssh(1), OpenSSH 9): to find the host in a ProxyCommand's `ssh ... -W`
_SSH_ARG_OPTIONS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")


def proxy_command_error(command: str, *, where: str) -> EdgeqError:
    """The error for a device reached through a ProxyCommand, which edgeq refuses.

    Why not run it (``paramiko.ProxyCommand``): it runs arbitrary programs
    taken from the SSH config, and what they reach is out of edgeq's hands:
    an ``ssh -W`` inside checks its hop's host key by OpenSSH's settings, not
    by edgeq's known_hosts policy (``--known-hosts``, ``--trust-new-hosts``);
    its failures (refused, unknown key, authentication) all arrive as "no SSH
    greeting", with its stderr lost; paramiko splits the command with shlex
    instead of running it through a shell as OpenSSH does (pipes, ``exec``,
    variables break), and it is one process per device of a fleet. The common
    case, ``ssh -W %h:%p bastion``, is a jump host: ProxyJump does it in
    process, with all of the above. The hint names the ProxyJump value when
    the command is such a jump.
    """
    jump = _jump_of_proxy_command(command)
    if jump:
        hint = f"this ProxyCommand is a jump host: use `ProxyJump {jump}` instead (edgeq follows ProxyJump)"
    else:
        hint = "edgeq reaches devices through jump hosts with ProxyJump (ssh -J); give an address edgeq can reach directly or through ProxyJump"
    return EdgeqError(f"{where}: ProxyCommand is not supported ({command})", hint=hint)


def _jump_of_proxy_command(command: str) -> str | None:
    """The ProxyJump value equivalent to ``ssh [options] -W %h:%p host``, or None if the command is not that."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if argv[:1] == ["exec"]:
        argv = argv[1:]
    if not argv or os.path.basename(argv[0]) != "ssh":
        return None
    values: dict[str, str] = {}
    positional: list[str] = []
    index = 1
    while index < len(argv):
        word = argv[index]
        index += 1
        if positional or not word.startswith("-") or word == "-":
            positional.append(word)
            continue
        if word == "--":
            positional.extend(argv[index:])
            break
        for at, flag in enumerate(word[1:], 1):
            if flag in _SSH_ARG_OPTIONS:
                if at + 1 < len(word):
                    values[flag] = word[at + 1 :]
                elif index < len(argv):
                    values[flag] = argv[index]
                    index += 1
                else:
                    return None
                break
    if values.get("W") not in ("%h:%p", "[%h]:%p") or len(positional) != 1:
        return None  # not a plain jump: a command after the host, another -W, options edgeq cannot carry
    if any(flag in values for flag in "oFiDLRw"):
        return None  # per-hop options (-o, -F, -i, forwardings) that a ProxyJump value cannot say
    host = positional[0]
    if "l" in values and "@" not in host:
        host = f"{values['l']}@{host}"
    if "p" in values and not host.startswith("ssh://"):
        name = host.rpartition("@")[2]
        host = f"{host.rpartition('@')[0]}@" if "@" in host else ""
        host += f"[{name}]:{values['p']}" if ":" in name else f"{name}:{values['p']}"
    return f"{values['J']},{host}" if "J" in values else host
