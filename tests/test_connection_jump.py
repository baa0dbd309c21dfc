"""Jump hosts (ProxyJump) against real OpenSSH servers on loopback: a second sshd in front of the device.

Loopback reaches every test sshd from here, so a test cannot make the device
unreachable but through the jump host; instead it proves the path. The
device's ``$SSH_CONNECTION`` names the client end of the TCP connection it
was reached by; in ``/proc/net/tcp`` that socket's owner is the jump host's
user (the sshd session process that serves the ``direct-tcpip`` channel runs
as that user), not root (this test process). Every connection to the device
or to a next hop is checked that way.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import time

import pytest
from _remote import active_on_disk, options, write_model

from edgeq.connection import (
    JumpHost,
    JumpSpec,
    SSHConnection,
    jump_hosts,
    map_ssh_error,
    open_connection,
    parse_proxy_jump,
    proxy_command_error,
)
from edgeq.connection.errors import ForwardFailed, ForwardTimeout
from edgeq.deploy import DeviceStatus, deploy_to_device, prepare_model
from edgeq.devices import Device
from edgeq.errors import DeviceAuthError, DeviceUnreachableError, EdgeqError, HostKeyError

pytestmark = pytest.mark.usefixtures("isolated_home")


# --------------------------------------------------------------------------- helpers


def hop(device) -> JumpHost:
    """A test device as a jump host."""
    return JumpHost(host=device.host, port=device.port, user=device.user, key_files=(str(device.key_path),))


def connect(target, jumps, known_hosts, *, host=None, port=None, **overrides) -> SSHConnection:
    """A connection to ``target`` (a test device, or ``host``/``port`` with its user) through the ``jumps`` devices."""
    return SSHConnection(
        host or target.host,
        port=port or target.port,
        user=target.user,
        key_files=(str(target.key_path),),
        options=options(known_hosts=known_hosts, **overrides),
        name=target.name,
        jump=[hop(j) for j in jumps],
    )


def spec(device) -> str:
    return f"{device.user}@[{device.host}]:{device.port}"  # as `ssh -G` prints it


def _address(text: str) -> tuple[str, int]:
    ip, port = text.split(":")
    return socket.inet_ntoa(struct.pack("<I", int(ip, 16))), int(port, 16)


def tcp_clients(server: tuple[str, int]) -> dict[tuple[str, int], int]:
    """Established TCP connections to ``server`` seen from their client end: {client (ip, port): owner uid}."""
    found = {}
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] == "01" and _address(fields[2]) == server:  # 01: ESTABLISHED
                found[_address(fields[1])] = int(fields[7])
    return found


def came_through(conn, target, jump) -> bool:
    """Whether ``conn``'s TCP connection to ``target`` was opened by ``jump``'s sshd (its user owns the client end)."""
    client_ip, client_port, *_ = conn.run("echo $SSH_CONNECTION").stdout.split()
    owner = tcp_clients((target.host, target.port)).get((client_ip, int(client_port)))
    return owner == jump.uid


# --------------------------------------------------------------------------- through real jump hosts


def test_a_command_through_one_jump_host(start_device, known_hosts_for):
    jump, target = start_device("jump"), start_device("target")
    with connect(target, [jump], known_hosts_for(jump, target)) as conn:
        result = conn.run("id -un; echo $SSH_CONNECTION")
        assert result.stdout.split("\n")[0] == target.user
        assert came_through(conn, target, jump)
        # the only connection from this process is to the jump host
        assert set(tcp_clients((jump.host, jump.port)).values()) == {0}
        # every hop gets the transport's settings: cipher order, keepalives
        hops = [h.get_transport() for h in conn._hops] + [conn.transport]
        assert [t.remote_cipher for t in hops] == ["aes128-gcm@openssh.com"] * 2
        assert [t.packetizer._Packetizer__keepalive_interval for t in hops] == [15, 15]
        assert "via" in repr(conn)
    assert not [h for h in hops if h.is_active()]  # closing closed every hop
    deadline = time.monotonic() + 3
    while tcp_clients((jump.host, jump.port)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not tcp_clients((jump.host, jump.port))
    with connect(target, [], known_hosts_for(target)) as direct:  # the control: a direct connection is not
        assert not came_through(direct, target, jump)


def test_a_dead_jump_host_ends_the_command_and_says_why(start_device, known_hosts_for):
    jump, target = start_device("jump"), start_device("target")
    with connect(target, [jump], known_hosts_for(jump, target)) as conn:
        process = conn.start("sleep 10")
        process.close_stdin()
        hop_transport = conn._hops[0].get_transport()
        hop_transport._unanswered = 3
        hop_transport._keepalive(15, 3)  # as its keepalive thread does after 3 unanswered
        with pytest.raises(DeviceUnreachableError, match="no answer to 3 keepalives sent 15 s apart"):
            process.wait()
        assert conn.run("echo again").stdout == "again\n"  # reconnected, through the jump host again
        assert came_through(conn, target, jump)


def test_a_chain_of_two_jump_hosts(start_device, known_hosts_for):
    first, second, target = start_device("first"), start_device("second"), start_device("target")
    with connect(target, [first, second], known_hosts_for(first, second, target)) as conn:
        assert came_through(conn, target, second)
        # second was reached from first: the client end of the connection to it belongs to first's user
        assert set(tcp_clients((second.host, second.port)).values()) == {first.uid}
        assert len(conn._hops) == 2


def test_a_deploy_through_the_jump_host(start_device, known_hosts_for, tmp_path):
    jump, target = start_device("jump"), start_device("target")

    @dataclasses.dataclass(frozen=True)
    class JumpedDevice(Device):  # Device gains proxy_jump in a separate change
        proxy_jump: str | None = None

    device = JumpedDevice(
        name=target.name,
        address=target.host,
        user=target.user,
        port=target.port,
        key_files=(str(target.key_path),),
        proxy_jump=spec(jump),
    )
    model = prepare_model(write_model(tmp_path / "m.tflite", 80_000), "digits")
    with open_connection(device, options(known_hosts=known_hosts_for(jump, target))) as conn:
        assert isinstance(conn, SSHConnection) and conn.jump == (hop(jump),)
        result = deploy_to_device(conn, device, model)
        assert came_through(conn, target, jump)
    assert (result.status, result.version) == (DeviceStatus.OK, model.version), result
    assert active_on_disk(target, "digits") == (model.version, model.sha256)


# --------------------------------------------------------------------------- failures name the hop


def test_the_jump_hosts_unknown_host_key(start_device, known_hosts_for):
    jump, target = start_device("jump"), start_device("target")
    with pytest.raises(HostKeyError) as info:
        connect(target, [jump], known_hosts_for(target)).connect()
    message = str(info.value)
    assert message.startswith(f"target: jump host {jump.user}@{jump.host}:{jump.port}: unknown host key")
    assert f"for [{jump.host}]:{jump.port}" in message and jump.fingerprint in message
    assert f"ssh-keyscan -p {jump.port} {jump.host}" in info.value.hint


def test_the_second_jump_hosts_unknown_host_key(start_device, known_hosts_for):
    first, second, target = start_device("first"), start_device("second"), start_device("target")
    with pytest.raises(HostKeyError) as info:
        connect(target, [first, second], known_hosts_for(first, target)).connect()
    assert str(info.value).startswith(
        f"target: jump host {second.user}@{second.host}:{second.port} via jump {first.user}@{first.host}:{first.port}:"
        " unknown host key"
    )


def test_the_devices_unknown_host_key_behind_the_jump(start_device, known_hosts_for):
    jump, target = start_device("jump"), start_device("target")
    with pytest.raises(HostKeyError) as info:
        connect(target, [jump], known_hosts_for(jump)).connect()
    assert str(info.value).startswith(f"target via jump {jump.user}@{jump.host}:{jump.port}: unknown host key")
    assert f"[{target.host}]:{target.port}" in str(info.value)


def test_a_jump_host_that_refuses(start_device, known_hosts_for, down_address):
    target = start_device("target")
    host, port = down_address
    conn = connect(target, [], known_hosts_for(target))
    conn.jump = (JumpHost(host, port, "bob"),)
    with pytest.raises(DeviceUnreachableError) as info:
        conn.connect()
    assert str(info.value) == f"target: jump host bob@{host}:{port}: connection refused while connecting"


def test_a_jump_host_that_refuses_the_key(start_device, known_hosts_for):
    jump, target = start_device("jump", authorized=False), start_device("target")
    with pytest.raises(DeviceAuthError) as info:
        connect(target, [jump], known_hosts_for(jump, target)).connect()
    assert str(info.value).startswith(f"target: jump host {jump.user}@{jump.host}:{jump.port}: authentication failed")


def test_a_device_that_refuses_behind_the_jump(start_device, known_hosts_for, down_address):
    jump, target = start_device("jump"), start_device("target")
    host, port = down_address
    conn = connect(target, [jump], known_hosts_for(jump, target), host=host, port=port)
    with pytest.raises(DeviceUnreachableError) as info:
        conn.connect()
    assert str(info.value) == (
        f"target via jump {jump.user}@{jump.host}:{jump.port}: "
        f"the jump host could not connect to {host}:{port} (Connection refused)"
    )
    assert "from there" in info.value.hint
    assert not conn._hops  # the jump host's connection was closed


def test_the_connect_timeout_applies_behind_the_jump(start_device, known_hosts_for, silent_server):
    jump, target = start_device("jump"), start_device("target")
    conn = connect(target, [jump], known_hosts_for(jump, target), host=silent_server.host, port=silent_server.port)
    conn.options = dataclasses.replace(conn.options, connect_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(DeviceUnreachableError) as info:
        conn.connect()
    assert time.monotonic() - started < 4
    assert str(info.value) == (
        f"target via jump {jump.user}@{jump.host}:{jump.port}: accepted the TCP connection but sent no SSH greeting within 1 s"
    )


def test_forwarding_failures_are_unreachable():
    prohibited = map_ssh_error(
        ForwardFailed("10.0.0.5:22", 1, "administratively prohibited"), device="pi via jump b@h:22", action="connecting"
    )
    assert isinstance(prohibited, DeviceUnreachableError)
    assert "refused to forward" in str(prohibited) and "AllowTcpForwarding" in prohibited.hint
    late = map_ssh_error(ForwardTimeout("10.0.0.5:22"), device="pi via jump b@h:22", action="connecting", timeout_s=5)
    assert isinstance(late, DeviceUnreachableError)
    assert str(late) == "pi via jump b@h:22: the jump host got no answer from 10.0.0.5:22 within 5 s"


# --------------------------------------------------------------------------- ProxyJump values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bastion", (JumpSpec("bastion"),)),
        ("bob@bastion:2222", (JumpSpec("bastion", "bob", 2222),)),
        ("bob@[127.0.0.6]:2200", (JumpSpec("127.0.0.6", "bob", 2200),)),
        ("[127.0.0.6]", (JumpSpec("127.0.0.6"),)),
        ("alice@[::1]:22", (JumpSpec("::1", "alice", 22),)),
        ("a,b@c:3", (JumpSpec("a"), JumpSpec("c", "b", 3))),
        ("ssh://u%40x@h:33/", (JumpSpec("h", "u@x", 33),)),
        ("me@corp@gw", (JumpSpec("gw", "me@corp"),)),
        ("none", ()),
        ("", ()),
    ],
)
def test_parse_proxy_jump(text, expected):
    assert parse_proxy_jump(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a,,b", "an empty hop"),
        ("@h", "empty user name"),
        ("h:0", "not a number from 1 to 65535"),
        ("h:ssh", "not a number"),
        ("fe80::1", "in brackets"),
        ("[::1", "no closing ']'"),
        ("[::1]22", "unexpected"),
        ("u@:22", "has no host"),
        ("ssh://h/path", "no path"),
    ],
)
def test_parse_proxy_jump_refuses(text, why):
    with pytest.raises(EdgeqError, match="ProxyJump") as info:
        parse_proxy_jump(text)
    assert why in str(info.value)


def test_hops_taken_literally_or_resolved():
    assert jump_hosts("bob@[10.0.0.1],gw:2", key_files=("k",)) == (
        JumpHost("10.0.0.1", 22, "bob", ("k",)),
        JumpHost("gw", 2, None, ("k",)),
    )
    assert jump_hosts("gw", resolve=lambda s: JumpHost("10.9.9.9", 2200, "ops")) == (JumpHost("10.9.9.9", 2200, "ops"),)
    assert jump_hosts(None) == ()
    assert JumpHost("::1", 22, "u").destination == "u@[::1]:22"


# --------------------------------------------------------------------------- ProxyCommand: refused


@pytest.mark.parametrize(
    ("command", "jump"),
    [
        ("ssh -W %h:%p bastion", "bastion"),
        ("/usr/bin/ssh -q -l bob -p 2222 -W [%h]:%p gw", "bob@gw:2222"),
        ("exec ssh -J a -W %h:%p b", "a,b"),
        ("nc -X connect -x proxy:3128 %h %p", None),
        ("ssh -W %h:%p -i key bastion", None),
    ],
)
def test_proxy_command_is_refused(command, jump):
    error = proxy_command_error(command, where="host 'pi'")
    assert str(error) == f"host 'pi': ProxyCommand is not supported ({command})"
    if jump:
        assert f"`ProxyJump {jump}`" in error.hint
    else:
        assert "ProxyJump" in error.hint and "`" not in error.hint
