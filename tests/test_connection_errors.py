"""The one mapping (``edgeq.connection.errors``): what paramiko and the socket layer raise -> edgeq errors, by type.

Unit checks of ``map_ssh_error``, then the real failures it exists for:
devices that are down, silent, not SSH servers, stuck in the handshake, or
that refuse every key.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
import time

import paramiko
import pytest
from _remote import options, ssh

from edgeq.connection import SSHConnection, map_ssh_error
from edgeq.connection.errors import HandshakeTimeout, NoCredentials, NoGreeting
from edgeq.errors import DeviceAuthError, DeviceUnreachableError, HostKeyError, RemoteCommandError

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.mark.parametrize(
    ("raised", "expected", "text"),
    [
        (
            paramiko.ssh_exception.NoValidConnectionsError({("1.2.3.4", 22): ConnectionRefusedError()}),
            DeviceUnreachableError,
            "refused",
        ),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), DeviceUnreachableError, "refused"),
        (TimeoutError("timed out"), DeviceUnreachableError, "no answer within 3 s"),
        (TimeoutError("timed out"), DeviceUnreachableError, "no answer within 3 s"),
        (socket.gaierror(-2, "Name or service not known"), DeviceUnreachableError, "cannot resolve"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), DeviceUnreachableError, "cannot reach the address"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), DeviceUnreachableError, "cannot reach the address"),
        (paramiko.AuthenticationException("Authentication failed."), DeviceAuthError, "authentication failed"),
        (paramiko.BadAuthenticationType("bad", ["publickey"]), DeviceAuthError, "accepts: publickey"),
        (paramiko.PasswordRequiredException("encrypted"), DeviceAuthError, "encrypted"),
        (NoCredentials("nothing"), DeviceAuthError, "no key, agent key or password to offer"),
        (NoGreeting("no greeting"), DeviceUnreachableError, "no SSH greeting within 3 s"),
        (HandshakeTimeout("no kex"), DeviceUnreachableError, "handshake did not complete within 3 s"),
        (EOFError(), DeviceUnreachableError, "connection lost"),
        (ConnectionResetError(104, "Connection reset by peer"), DeviceUnreachableError, "connection lost"),
        (paramiko.ChannelException(1, "prohibited"), RemoteCommandError, "refused a session"),
        (paramiko.SSHException("Incompatible ssh peer"), DeviceUnreachableError, "SSH error while connecting"),
        # the text of a bare SSHException decides nothing (it used to): the connection types these cases itself
        (paramiko.SSHException("Error reading SSH protocol banner"), DeviceUnreachableError, "SSH error"),
        (paramiko.SSHException("No authentication methods available"), DeviceUnreachableError, "SSH error"),
    ],
)
def test_map_ssh_error(raised, expected, text):
    error = map_ssh_error(raised, device="pi", action="connecting", timeout_s=3)
    assert type(error) is expected and text in error.message and error.message.startswith("pi: ")


def test_map_ssh_error_bad_host_key():
    key = paramiko.RSAKey.generate(1024)
    error = map_ssh_error(paramiko.BadHostKeyException("h", key, key), device="pi", action="connecting")
    assert isinstance(error, HostKeyError) and "HOST KEY CHANGED" in error.message
    assert key.fingerprint in error.message


# --------------------------------------------------------------------------- real failures


class _FakeServer:
    """Answers every TCP connection with ``greeting``, then closes it or keeps it open reading (and ignoring) all."""

    def __init__(self, greeting: bytes, *, close: bool):
        self.greeting = greeting
        self.close_after_greeting = close
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.sock.getsockname()
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock, *self._open], [], [], 0.1)
            for sock in ready:
                with contextlib.suppress(OSError):
                    if sock is self.sock:
                        conn, _ = self.sock.accept()
                        conn.sendall(self.greeting)
                        if self.close_after_greeting:
                            conn.close()
                        else:
                            self._open.append(conn)
                    elif not sock.recv(65536):
                        self._open.remove(sock)
                        sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._open:
            conn.close()
        self.sock.close()


@pytest.fixture
def fake_server():
    servers: list[_FakeServer] = []

    def start(greeting: bytes, *, close: bool) -> _FakeServer:
        servers.append(_FakeServer(greeting, close=close))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _connect(host: str, port: int, timeout_s: float) -> SSHConnection:
    return SSHConnection(host, port=port, user="nobody", options=options(connect_timeout_s=timeout_s))


def test_a_device_that_is_down(down_address):
    host, port = down_address
    conn = SSHConnection(host, port=port, user="nobody", options=options(connect_timeout_s=2))
    with pytest.raises(DeviceUnreachableError, match="refused"):
        conn.run("true")


def test_a_device_that_never_answers_times_out(silent_server):
    conn = SSHConnection(
        silent_server.host, port=silent_server.port, user="nobody", options=options(connect_timeout_s=1)
    )
    started = time.monotonic()
    with pytest.raises(DeviceUnreachableError, match="no SSH greeting within 1 s"):
        conn.run("true")
    assert time.monotonic() - started < 1 + 5  # the connect timeout, plus slack for a loaded machine: it ends


def test_a_server_that_is_not_ssh_sends_no_greeting(fake_server):
    server = fake_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", close=True)
    with pytest.raises(DeviceUnreachableError, match="sent no SSH greeting") as info:
        _connect(server.host, server.port, timeout_s=2).run("true")
    assert "is an SSH server" in info.value.hint


def test_a_handshake_that_never_ends_times_out(fake_server):
    server = fake_server(b"SSH-2.0-OpenSSH_9.2\r\n", close=False)  # greets, then never answers the key exchange
    started = time.monotonic()
    with pytest.raises(DeviceUnreachableError, match="SSH handshake did not complete within 1 s"):
        _connect(server.host, server.port, timeout_s=1).run("true")
    assert time.monotonic() - started < 1 + 5


def test_authentication_failure(start_device):
    device = start_device(authorized=False)
    with pytest.raises(DeviceAuthError, match="authentication failed") as info:
        ssh(device).run("true")
    assert "EDGEQ_SSH_PASSWORD" in info.value.hint


def test_nothing_to_authenticate_with(shared_device):
    # no key file, no agent, no ~/.ssh keys (isolated home), no password: paramiko has nothing to offer
    with pytest.raises(DeviceAuthError, match="no key, agent key or password to offer while connecting"):
        ssh(shared_device, key_files=()).run("true")


def test_a_refused_rsa_key_is_an_authentication_failure(shared_device, tmp_path):
    # paramiko tries an RSA key file as each key type in turn and keeps the last error, which is about
    # reading the file as an Ed25519 key: by its type alone this looked like an SSH error (unreachable)
    from sshd import make_key

    key = make_key(tmp_path / "id_rsa", key_type="rsa")
    with pytest.raises(DeviceAuthError, match="authentication failed while connecting"):
        ssh(shared_device, key_files=(str(key.path),)).run("true")
