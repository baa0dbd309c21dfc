"""A device over SSH (paramiko): the connection, its keepalive transport, and a command's channel.

``SSHConnection(host, ...)`` opens lazily on first use and closes as a
context manager; one transport is reused for every command and transfer on
that device. Every paramiko call runs inside :meth:`SSHConnection._boundary`,
where what paramiko or the socket layer raised becomes an edgeq error
(:func:`edgeq.connection.errors.map_ssh_error`).

Transfers stream the file over an exec channel into ``cat``, chosen by
measurement (``scripts/bench_deploy.py``, 14 MB on loopback): about 40 ms
against about 75 ms for paramiko's SFTP ``put`` (which opens the SFTP
subsystem and waits for its acknowledgements), with AES-GCM preferred (about
20% faster than paramiko's default aes128-ctr + HMAC, one C call per packet)
and TCP_NODELAY on the socket: without it Nagle's algorithm adds ~40 ms to
every exchange of small messages (opening a channel, its exit status), which
made each command cost 45 ms instead of 3 ms.

A password is only taken from ``EDGEQ_SSH_PASSWORD`` or an interactive
prompt callback, and never logged nor placed in an exception message.

Jump hosts (ProxyJump, :mod:`edgeq.connection.jump`): the first hop is
connected over TCP, each next one (and the device) through a ``direct-tcpip``
channel of the one before, used as paramiko's ``sock``. Every hop is a full
SSH connection of its own, made the same way: its host key checked against
known_hosts by the same policy, the same key sources, timeouts, keepalives
and transport tweaks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import selectors
import socket
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import paramiko

from ..errors import DeviceAuthError, DeviceUnreachableError, EdgeqError, RemoteCommandError
from .base import ConnectOptions, local_user
from .commands import CommandRunner
from .errors import TRANSPORT_ERRORS, ForwardFailed, ForwardTimeout, classify_connect_failure, map_ssh_error
from .hostkeys import KnownHostsPolicy, known_hosts_token, known_keys, preferred_key_types
from .jump import JumpHost
from .process import BufferedProcess

if TYPE_CHECKING:
    from paramiko.transport import _SocketLike  # the stubs' name for what a transport runs over

__all__ = ["SSHConnection"]

# paramiko logs failed connections (with tracebacks) at ERROR level; with no
# handler configured Python would print them on stderr as a "last resort".
# A NullHandler keeps them out of the CLI unless logging is set up (--debug).
logging.getLogger("paramiko").addHandler(logging.NullHandler())
log = logging.getLogger(__name__)

# Cipher order: AES-GCM first (one C call per packet instead of cipher + HMAC:
# uploads 20-35% faster than with paramiko's default aes128-ctr on loopback),
# then CTR. CBC and 3DES are left out, as OpenSSH's client does.
_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr")
_MACS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
)

_PROMPT_LOCK = threading.Lock()


class _Transport(paramiko.Transport):
    """paramiko's transport with OpenSSH's ServerAliveInterval / ServerAliveCountMax.

    paramiko's own keepalive (``set_keepalive``) sends requests that want no
    answer, so a link gone silent goes unnoticed until a command's deadline
    (a deploy's is ``--command-timeout`` + ``--transfer-timeout``). Here each
    keepalive asks for one (sshd answers ``keepalive@openssh.com`` with a
    failure, which is an answer), and after ``count_max`` unanswered in a row
    the transport is closed: whatever waits on it ends as "connection lost",
    with the reason in ``dead_reason``.
    """

    dead_reason: str | None = None
    open_failure: str | None = None  # the server's description of the last channel open it refused
    _unanswered = 0

    def check_alive(self, interval_s: int, count_max: int) -> None:
        if interval_s <= 0:
            return
        transport = weakref.proxy(self)  # the packetizer keeps the callback: no cycle back to the transport

        def keepalive() -> None:
            transport._keepalive(interval_s, count_max)

        self.packetizer.set_keepalive(interval_s, keepalive)

    def _keepalive(self, interval_s: int, count_max: int) -> None:  # in the transport's thread
        if self._unanswered >= count_max:
            self.dead_reason = f"no answer to {count_max} keepalives sent {interval_s} s apart: the link is dead"
            log.info("%s: closing the connection", self.dead_reason)
            self.close()
            return
        self._unanswered += 1
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_GLOBAL_REQUEST)
        message.add_string("keepalive@openssh.com")
        message.add_boolean(True)  # want_reply: the point of it
        self._send_user_message(message)  # type: ignore[attr-defined]  # paramiko's own send path (rekey-safe)

    # the handlers of the server's answers (paramiko binds them by name when it builds its handler table)
    def _parse_request_success(self, m: paramiko.Message) -> None:
        self._unanswered = 0
        return super()._parse_request_success(m)  # type: ignore[misc]

    def _parse_request_failure(self, m: paramiko.Message) -> None:
        self._unanswered = 0
        return super()._parse_request_failure(m)  # type: ignore[misc]

    def _parse_channel_open_failure(self, m: paramiko.Message) -> None:
        # paramiko keeps only the reason code ("Connect failed"); sshd's description says why ("Connection refused")
        m.get_int()  # channel
        m.get_int()  # reason code
        self.open_failure = m.get_text()
        m.rewind()
        return super()._parse_channel_open_failure(m)  # type: ignore[misc]

    # Nagle's algorithm on the server meets delayed ACKs here. Right after authentication sshd sends small
    # messages that want no answer (the ``hostkeys-00@openssh.com`` request, a debug message about the key's
    # options); with nothing to send back, this side's kernel delays its ACK by 40 ms, and sshd holds its next
    # small message (the answer to opening the first channel) until that ACK comes: every connection paid
    # 40 ms before its first command (measured: 45 ms -> 5 ms to open it; OpenSSH's own client pays it too).
    # An SSH_MSG_IGNORE sent at once carries the ACK.
    def _parse_global_request(self, m: paramiko.Message) -> None:
        super()._parse_global_request(m)  # type: ignore[misc]
        self._ack_now()

    def _parse_debug(self, m: paramiko.Message) -> None:
        super()._parse_debug(m)  # type: ignore[misc]
        self._ack_now()

    def _ack_now(self) -> None:  # in the transport's thread, like paramiko's own replies
        if self.server_mode or not self.initial_kex_done or self.in_kex or not self.is_active():
            return  # never inside a key exchange: strict kex allows no other message there
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_IGNORE)
        message.add_string(b"")
        self._send_message(message)  # type: ignore[attr-defined]


class SSHConnection(CommandRunner):
    """A device over SSH, opened on first use; one transport for everything done on it.

    ``host``, ``port``, ``user`` and ``key_files`` are already resolved (the
    inventory applies ``~/.ssh/config``). Keys are tried in the order: the
    given key files, ssh-agent, ``~/.ssh/id_*``, then a password from
    ``EDGEQ_SSH_PASSWORD`` or the prompt callback.

    ``jump``: the jump hosts to go through, first connected first (ProxyJump,
    resolved: see :mod:`edgeq.connection.jump`). Each is authenticated with
    its own key files and the same other sources; closing the connection
    closes all of them.
    """

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_files: tuple[str, ...] | list[str] = (),
        options: ConnectOptions | None = None,
        name: str | None = None,
        edgeq_dir: str = "edgeq",
        jump: Sequence[JumpHost] = (),
    ):
        self.host = host
        self.port = port
        self.user = user or local_user()
        self.key_files = tuple(key_files)
        self.edgeq_dir = edgeq_dir
        self.options = options or ConnectOptions()
        self.name = name or host
        self.label = self.name
        self.jump = tuple(jump)
        self._client: paramiko.SSHClient | None = None
        self._hops: list[paramiko.SSHClient] = []  # the jump hosts' connections, first hop first
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        via = f" via {','.join(hop.destination for hop in self.jump)}" if self.jump else ""
        return f"SSHConnection({self.user}@{self.host}:{self.port}{via})"

    @contextlib.contextmanager
    def _boundary(self, action: str, timeout_s: float | None = None, who: str | None = None) -> Iterator[None]:
        """Where paramiko meets edgeq: every paramiko call runs inside this block.

        ``who`` names the hop in messages (default: the device's label).
        """
        try:
            yield
        except EdgeqError:
            raise
        except TRANSPORT_ERRORS as exc:
            raise map_ssh_error(exc, device=who or self.label, action=action, timeout_s=timeout_s) from exc

    def _who(self, hop: int) -> str:
        """How messages name hop ``hop`` of the path (the device is the last): "dev via jump a@h:22", ..."""
        chain = [jump.destination for jump in self.jump]
        via = f" via jump {', '.join(chain[:hop])}" if hop else ""
        if hop == len(chain):
            return f"{self.label}{via}"
        return f"{self.label}: jump host {chain[hop]}{via}"

    @property
    def transport(self) -> paramiko.Transport:
        """The open transport, connecting first if needed."""
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
            if transport is None or not transport.is_active():
                self._close_client()
                self._client = self._connect()
                transport = self._client.get_transport()
                assert transport is not None  # _connect returns a connected client
            return transport

    def connect(self) -> SSHConnection:
        """Open the connection now (it opens by itself on first use otherwise)."""
        _ = self.transport
        return self

    def _connect(self) -> paramiko.SSHClient:
        """Connect every jump host in turn, then the device through the last one."""
        hops: list[paramiko.SSHClient] = []
        try:
            for index, jump in enumerate(self.jump):
                via = hops[-1] if hops else None
                user = jump.user or local_user()
                hops.append(self._connect_hop(jump.host, jump.port, user, jump.key_files, via, self._who(index)))
            via = hops[-1] if hops else None
            client = self._connect_hop(self.host, self.port, self.user, self.key_files, via, self._who(len(hops)))
        except BaseException:
            for hop in reversed(hops):
                with contextlib.suppress(Exception):
                    hop.close()
            raise
        self._hops = hops
        return client

    def _open_socket(self, host: str, port: int, via: paramiko.SSHClient | None) -> _SocketLike:
        """A TCP connection to ``host:port``: from here, or from the jump host ``via`` (a direct-tcpip channel)."""
        timeout = self.options.connect_timeout_s
        if via is None:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small protocol messages: no Nagle delay
            return sock
        transport = via.get_transport()
        assert isinstance(transport, _Transport)  # made by _connect_hop
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        transport.open_failure = None
        try:
            # the originator address is informational (sshd logs it); OpenSSH's ssh -W sends 127.0.0.1 and port 0 too
            return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as exc:
            raise ForwardFailed(target, exc.code, transport.open_failure or exc.text) from exc
        except paramiko.SSHException as exc:
            if transport.is_active():  # paramiko's only other failure on a live transport: no answer in time
                raise ForwardTimeout(target) from exc
            raise

    def _connect_hop(
        self,
        host: str,
        port: int,
        user: str,
        key_files: tuple[str, ...],
        via: paramiko.SSHClient | None,
        who: str,
    ) -> paramiko.SSHClient:
        """One SSH connection (the device or a jump host), over TCP or through ``via``; errors name ``who``."""
        options = self.options
        token = known_hosts_token(host, port)
        for key_file in key_files:
            if not os.path.isfile(key_file):
                raise DeviceAuthError(
                    f"{who}: key file {key_file} does not exist",
                    hint="check ansible_ssh_private_key_file / IdentityFile",
                )
        known = known_keys(token, options.known_hosts_files())
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(KnownHostsPolicy(options, known))
        made: list[_Transport] = []

        def make_transport(sock: _SocketLike, **kwargs: Any) -> _Transport:  # kwargs: paramiko's, passed on
            transport = _Transport(sock, **kwargs)
            security = transport.get_security_options()
            security.ciphers = tuple(c for c in _CIPHERS if c in security.ciphers)
            security.digests = tuple(m for m in _MACS if m in security.digests)
            security.key_types = preferred_key_types(known, tuple(security.key_types))
            made.append(transport)
            return transport

        password = os.environ.get(options.password_env) or None
        timeout = options.connect_timeout_s
        try:
            with self._boundary("connecting", timeout_s=timeout, who=who):
                sock = self._open_socket(host, port, via)
                try:
                    client.connect(
                        host,
                        port=port,
                        username=user,
                        password=password,
                        # paramiko takes a list of key files; its stubs say a single one
                        key_filename=list(key_files) or None,  # type: ignore[arg-type]
                        timeout=timeout
                        + 0.5,  # the handshake; a silent server fails the banner wait first, more precisely
                        banner_timeout=timeout,
                        auth_timeout=timeout,
                        channel_timeout=timeout,
                        allow_agent=options.allow_agent,
                        look_for_keys=options.look_for_keys,
                        sock=sock,
                        transport_factory=make_transport,
                    )
                except paramiko.SSHException as exc:
                    failure = classify_connect_failure(exc, made[-1] if made else None)
                    if isinstance(failure, paramiko.AuthenticationException) and self._prompt_for_password(
                        client, user, host, password
                    ):
                        pass  # keys failed, the password typed at the prompt was accepted
                    elif failure is exc:
                        raise
                    else:
                        raise failure from exc
                transport = client.get_transport()
                assert isinstance(transport, _Transport)  # made by make_transport above
                transport.check_alive(options.keepalive_s, options.keepalive_count_max)
        except BaseException:
            client.close()
            raise
        log.debug("connected to %s@%s:%s%s", user, host, port, f" ({who})" if via is not None else "")
        return client

    def _prompt_for_password(self, client: paramiko.SSHClient, user: str, host: str, tried: str | None) -> bool:
        """After keys failed: one interactive password attempt, if a prompt is available and none was given."""
        prompt = self.options.password_prompt
        transport = client.get_transport()
        if prompt is None or tried is not None or transport is None or not transport.is_active():
            return False
        with _PROMPT_LOCK:  # devices of a fleet ask one at a time
            password = prompt(f"{user}@{host}")
        if not password:
            return False
        transport.auth_password(user, password)
        return transport.is_authenticated()

    def _dead_reason(self, transport: paramiko.Transport) -> str | None:
        """Why a keepalive closed ``transport`` (the device's) or one of its jump hosts, if one did."""
        hops = [hop.get_transport() for hop in reversed(self._hops)]
        for candidate in (transport, *hops):
            if isinstance(candidate, _Transport) and candidate.dead_reason:
                return candidate.dead_reason
        return None

    def _spawn(self, line: str, command: str, name: str | None, timeout_s: float) -> BufferedProcess:
        transport = self.transport
        with self._boundary("starting a command", timeout_s=self.options.connect_timeout_s):
            channel = transport.open_session(timeout=self.options.connect_timeout_s)
            try:
                channel.exec_command(line)
            except BaseException:
                channel.close()
                raise
        return _SSHProcess(self, channel, command, timeout_s, name)

    def _close_client(self) -> None:
        """Close the device's connection, then each jump host's, last hop first."""
        for client in [self._client, *reversed(self._hops)]:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._client = None
        self._hops = []

    def close(self) -> None:
        with self._lock:
            self._close_client()


class _SSHProcess(BufferedProcess):
    """A command on an exec channel of the connection's transport."""

    def __init__(
        self, connection: SSHConnection, channel: paramiko.Channel, command: str, timeout_s: float, name: str | None
    ):
        super().__init__(connection.label, command, timeout_s, name)
        self._connection = connection
        self._channel = channel
        self._selector = selectors.DefaultSelector()
        self._selector.register(channel, selectors.EVENT_READ)  # the channel's pipe: stdout data, EOF or close

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        return self._connection._boundary(action, timeout_s=self.timeout_s)

    def _pump(self, wait_s: float) -> None:
        chan = self._channel
        if self._closed:
            wait_s = 0
            self._eof = True
        if wait_s > 0 and not (chan.recv_ready() or chan.recv_stderr_ready() or self._eof):
            self._selector.select(wait_s)
        while chan.recv_stderr_ready():
            self._err += chan.recv_stderr(65536)
        while chan.recv_ready():
            self._out += chan.recv(65536)
        if not self._eof and (chan.eof_received or chan.closed) and not chan.recv_ready():
            while chan.recv_stderr_ready():
                self._err += chan.recv_stderr(65536)
            self._eof = True

    def _send(self, data: memoryview) -> int:
        # No grace period for sending: a link that takes no data until the deadline is stalled; nor for as
        # long as keepalives would take to call it dead (the transport cannot send them while we block it).
        options = self._connection.options
        stall_s = options.keepalive_s * options.keepalive_count_max if options.keepalive_s > 0 else math.inf
        remaining = self.started + self.timeout_s - time.monotonic()
        self._channel.settimeout(max(min(remaining, stall_s), 0.001))
        try:
            # paramiko sends any buffer (it slices it and writes it to the packet); its stubs say bytes
            return self._channel.send(data)  # type: ignore[arg-type]
        except TimeoutError:
            # the device took no data: a stalled link, not a slow command
            self._abort()
            if stall_s < remaining:
                raise DeviceUnreachableError(
                    f"{self.label}: the transfer stalled: no data accepted for {stall_s:g} s",
                    hint="check the link to the device",
                ) from None
            raise DeviceUnreachableError(
                f"{self.label}: the transfer stalled (no data accepted) and did not finish within {self.timeout_s:g} s",
                hint="check the link to the device; raise --transfer-timeout for slow links",
            ) from None

    def _shutdown_write(self) -> None:
        self._channel.shutdown_write()

    def _exit_status(self, wait_s: float) -> int | None:
        chan = self._channel
        if self._closed and not chan.exit_status_ready():
            raise RemoteCommandError(f"{self.label}: `{self.name}` was stopped before it ended")
        if not chan.status_event.wait(wait_s):
            return None
        if chan.exit_status_ready() and chan.exit_status >= 0:
            return chan.exit_status
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            reason = self._connection._dead_reason(transport) if transport is not None else None
            raise EOFError(reason or "the connection closed")
        raise RemoteCommandError(f"{self.label}: `{self.name}` ended without an exit status (killed by a signal?)")

    def _abort(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._selector.close()
        with contextlib.suppress(Exception):
            self._channel.close()
