"""The one mapping from what paramiko and the socket layer raise to the edgeq error a user can act on.

Every decision is taken by exception type (and ``errno``), never by message
text. paramiko raises a bare ``SSHException``, told apart from others only by
its message, in three cases a user must be told apart: no SSH greeting, a key
exchange that outlasts the timeout, and nothing to authenticate with.
:func:`classify_connect_failure` tells them apart by how far the connection
got, and turns them into the typed exceptions below, which
:func:`map_ssh_error` maps like paramiko's own. A jump host that cannot open
the next hop's connection raises a ``ChannelException`` (elsewhere: a refused
session) or a bare one (no answer): :class:`ForwardFailed` and
:class:`ForwardTimeout` say so, and map to "unreachable".

paramiko's tree has traps: ``NoValidConnectionsError`` and ``socket.timeout``
are ``OSError``s; ``BadHostKeyException`` and ``AuthenticationException`` are
``SSHException``s; ``PasswordRequiredException`` and ``BadAuthenticationType``
are ``AuthenticationException``s. Hence the order of the checks.
"""

from __future__ import annotations

import errno
import socket

import paramiko

from ..errors import DeviceAuthError, DeviceUnreachableError, EdgeqError, HostKeyError, RemoteCommandError
from .base import PASSWORD_ENV
from .hostkeys import ChangedHostKey, UnknownHostKey, split_token

__all__ = [
    "TRANSPORT_ERRORS",
    "ForwardFailed",
    "ForwardTimeout",
    "HandshakeTimeout",
    "NoCredentials",
    "NoGreeting",
    "classify_connect_failure",
    "map_ssh_error",
]

TRANSPORT_ERRORS = (paramiko.SSHException, OSError, EOFError)
"""What paramiko and the socket layer raise; :meth:`SSHConnection._boundary` maps these, and only these."""

# errno values of "this address cannot be reached at all" (as opposed to refused, or lost once open)
_NO_ROUTE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})


class NoGreeting(paramiko.SSHException):
    """The server accepted the TCP connection but sent no SSH greeting (nothing, or not an SSH server's)."""


class HandshakeTimeout(paramiko.SSHException):
    """The server greeted, but the key exchange did not finish within the timeout."""


class NoCredentials(paramiko.AuthenticationException):
    """Authentication ended before anything was offered: no key file, agent key, ~/.ssh key or password."""


class ForwardFailed(paramiko.SSHException):
    """A jump host did not open its TCP connection to the next hop (``direct-tcpip`` channel open failure).

    ``code`` is the SSH reason code (1: administratively prohibited, 2: connect
    failed, ...), ``reason`` the server's description (sshd's is the connect
    error, e.g. "Connection refused").
    """

    def __init__(self, target: str, code: int, reason: str):
        super().__init__(f"the jump host could not connect to {target}: {reason}")
        self.target = target
        self.code = code
        self.reason = reason


class ForwardTimeout(paramiko.SSHException):
    """A jump host did not answer a request to connect to the next hop within the timeout."""

    def __init__(self, target: str):
        super().__init__(f"no answer from the jump host about {target}")
        self.target = target


def classify_connect_failure(exc: paramiko.SSHException, transport: paramiko.Transport | None) -> paramiko.SSHException:
    """What an ``SSHException`` out of ``SSHClient.connect`` means, told by how far ``transport`` got.

    The three bare ``SSHException`` cases (see the module doc) become
    :class:`NoGreeting`, :class:`HandshakeTimeout` and
    :class:`NoCredentials`; an authentication that offered credentials and
    ended with some other error (paramiko keeps the last one, which may be
    about loading a key file as the wrong key type) becomes an
    ``AuthenticationException``. Anything else is returned as it is.
    """
    typed = (paramiko.AuthenticationException, paramiko.BadHostKeyException, UnknownHostKey)
    if isinstance(exc, typed) or transport is None:
        return exc
    if not transport.remote_version:  # set by paramiko once it has read a valid greeting
        return NoGreeting("no SSH greeting")
    if not transport.initial_kex_done:
        # still active: the key exchange was under way when the timeout ran out; else it failed and says why
        return HandshakeTimeout("the key exchange did not finish") if transport.is_active() else exc
    if transport.is_active() and not transport.is_authenticated():
        # the host key was accepted (a refusal is typed, above), so authentication is what failed;
        # paramiko makes the auth handler on the first credential it offers
        if transport.auth_handler is None:
            return NoCredentials("nothing to authenticate with")
        return paramiko.AuthenticationException("no credential was accepted")
    return exc


def map_ssh_error(exc: BaseException, *, device: str, action: str, timeout_s: float | None = None) -> EdgeqError:
    """Translate what paramiko / the socket layer raised into the edgeq error a user can act on.

    The one place where paramiko's exception tree meets edgeq's (see the
    module doc for the order of the checks). Messages never contain secrets:
    paramiko's own authentication messages do not, and no password is ever
    formatted here.
    """
    within = f" within {timeout_s:g} s" if timeout_s else ""
    if isinstance(exc, EdgeqError):
        return exc
    if isinstance(exc, UnknownHostKey):
        key = exc.key
        host, port = split_token(exc.token)
        keyscan = f"ssh-keyscan -p {port} {host}" if port != 22 else f"ssh-keyscan {host}"
        return HostKeyError(
            f"{device}: unknown host key {key.get_name()} {key.fingerprint} for {exc.token}; refusing to connect",
            hint=(
                "check the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then re-run with "
                f"--trust-new-hosts to add it to known_hosts, or add it yourself: {keyscan} >> ~/.ssh/known_hosts"
            ),
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        got = exc.key
        offered = f"{got.get_name()} {got.fingerprint}"
        known = exc.known if isinstance(exc, ChangedHostKey) else None
        token = exc.token if isinstance(exc, ChangedHostKey) else exc.hostname
        if known is not None and known.revoked:
            return HostKeyError(
                f"{device}: the host key of {token} ({offered}) is REVOKED in {known.where}; refusing to connect"
            )
        was = (
            f"{known.key_type} {known.fingerprint} ({known.where})"
            if known is not None
            else f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint}"
        )
        return HostKeyError(
            f"{device}: HOST KEY CHANGED for {token}: it offered {offered}, known_hosts has {was}. "
            "This may be a man-in-the-middle attack, or the device was reinstalled; refusing to connect",
            hint=f"if the device was reinstalled, remove the old key (ssh-keygen -R '{token}' -f {known.path if known else '~/.ssh/known_hosts'}) and check the new fingerprint; edgeq never replaces a known key",
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return DeviceAuthError(
            f"{device}: the private key is encrypted and edgeq does not ask for key passphrases",
            hint="load the key into ssh-agent (ssh-add KEY) and run again",
        )
    if isinstance(exc, paramiko.BadAuthenticationType):
        allowed = ", ".join(exc.allowed_types) or "none"
        return DeviceAuthError(
            f"{device}: authentication failed while {action} (the server accepts: {allowed})",
            hint=f"use a key the device accepts (--host user, ansible_ssh_private_key_file, IdentityFile or ssh-agent), or set {PASSWORD_ENV}",
        )
    if isinstance(exc, NoCredentials):
        return DeviceAuthError(
            f"{device}: no key, agent key or password to offer while {action}",
            hint=f"give a key (ansible_ssh_private_key_file, IdentityFile in ~/.ssh/config), load one into ssh-agent, or set {PASSWORD_ENV}",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return DeviceAuthError(
            f"{device}: authentication failed while {action}",
            hint=f"check the user name and that a key the device accepts is offered (ansible_ssh_private_key_file, IdentityFile in ~/.ssh/config, ssh-agent), or set {PASSWORD_ENV}",
        )
    if isinstance(exc, NoGreeting):
        return DeviceUnreachableError(
            f"{device}: accepted the TCP connection but sent no SSH greeting{within}",
            hint="is an SSH server (and not something else) listening on that port? Is the device overloaded?",
        )
    if isinstance(exc, HandshakeTimeout):
        return DeviceUnreachableError(
            f"{device}: the SSH handshake did not complete{within}",
            hint="is the device overloaded, or the link very slow? Raise --connect-timeout",
        )
    if isinstance(exc, ForwardFailed):
        if exc.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
            return DeviceUnreachableError(
                f"{device}: the jump host refused to forward a connection to {exc.target} ({exc.reason})",
                hint="its sshd does not allow TCP forwarding for this user (AllowTcpForwarding, PermitOpen, DisableForwarding)",
            )
        return DeviceUnreachableError(
            f"{device}: the jump host could not connect to {exc.target} ({exc.reason})",
            hint="is the device up, and is sshd listening on that address and port? The jump host resolves the address and connects to it: check it from there",
        )
    if isinstance(exc, ForwardTimeout):
        return DeviceUnreachableError(
            f"{device}: the jump host got no answer from {exc.target}{within}",
            hint="is the device up and reachable from the jump host? Raise --connect-timeout for slow links",
        )
    if isinstance(exc, paramiko.ChannelException):
        return RemoteCommandError(f"{device}: the server refused a session while {action}: {exc}")
    if isinstance(exc, paramiko.SSHException):
        return DeviceUnreachableError(f"{device}: SSH error while {action}: {str(exc) or type(exc).__name__}")
    if isinstance(exc, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError)):
        return DeviceUnreachableError(
            f"{device}: connection refused while {action}",
            hint="is the device up, and is sshd listening on that address and port?",
        )
    if isinstance(exc, socket.gaierror):
        return DeviceUnreachableError(
            f"{device}: cannot resolve the address ({exc.strerror or exc})",
            hint="check ansible_host / HostName / --host",
        )
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return DeviceUnreachableError(
            f"{device}: no answer{within} while {action}",
            hint="is the device up and reachable? Raise the timeouts (--connect-timeout, --transfer-timeout) for slow links",
        )
    if isinstance(exc, OSError) and exc.errno in _NO_ROUTE:
        return DeviceUnreachableError(
            f"{device}: cannot reach the address while {action} ({exc.strerror or exc})",
            hint="is the device up, and on a network this machine can reach?",
        )
    if isinstance(exc, (EOFError, OSError)):
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return DeviceUnreachableError(f"{device}: connection lost while {action} ({reason})")
    return DeviceUnreachableError(f"{device}: {type(exc).__name__} while {action}: {exc}")
