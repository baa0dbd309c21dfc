"""The SSH layer against real OpenSSH servers on loopback (real paramiko, no mocks), and the local twin.

The same checks run over ``SSHConnection`` and ``LocalConnection`` where the
behaviour is shared (commands, stdin, draining, timeouts, put). Host keys are
checked in ``test_connection_hostkeys.py``, the mapping of errors (and the
failures it is for) in ``test_connection_errors.py``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import subprocess
import sys
import time

import pytest
from _remote import options, ssh

import edgeq.connection
from edgeq import remote
from edgeq.connection import (
    CommandResult,
    Connection,
    LocalConnection,
    SSHConnection,
    local_user,
    read_ssh_config,
)
from edgeq.errors import DeviceAuthError, DeviceUnreachableError, EdgeqError, RemoteCommandError

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture(params=["ssh", "local"])
def conn(request, tmp_path):
    """An open connection: to the session's shared sshd device, or to this machine (a home of its own)."""
    if request.param == "ssh":
        device = request.getfixturevalue("shared_device")
        connection = ssh(device, command_timeout_s=20)
    else:
        home = tmp_path / "local-home"
        home.mkdir()
        connection = LocalConnection(home=home, options=options(command_timeout_s=20))
    with connection:
        yield connection


def _live(pattern: str) -> list[str]:
    """Command lines of live (non-zombie) processes containing ``pattern``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in cmd and "pytest" not in cmd:
            found.append(cmd)
    return found


# --------------------------------------------------------------------------- commands (SSH and local)


def test_both_implement_the_protocol(conn):
    assert isinstance(conn, Connection)


def test_run_returns_exit_status_stdout_and_stderr(conn):
    result = conn.run("echo out; echo err >&2; exit 3", check=False)
    assert isinstance(result, CommandResult)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(RemoteCommandError, match="exit status 3: err"):
        conn.run("echo err >&2; exit 3")


def test_messages_name_a_command_by_its_label_not_its_shell_text(conn):
    with pytest.raises(RemoteCommandError) as info:
        conn.run("echo broken >&2; exit 3", label="status")
    assert info.value.message == f"{conn.label}: `status` failed with exit status 3: broken"
    with pytest.raises(RemoteCommandError, match="`detect` did not finish within 1 s"):
        conn.run("sleep 30", timeout_s=1, label="detect")


def test_the_wrapper_is_kept_on_the_device_once_per_version(conn):
    conn.run("true")
    listing = conn.run("ls edgeq/scripts").stdout.split()
    assert remote.script("wrapper.sh", "edgeq").path.rsplit("/", 1)[1] in listing
    conn.run("rm -rf edgeq/scripts")  # gone (a wiped device): the next command puts it back by itself
    assert conn.run("echo again", stdin=b"ignored").stdout == "again\n"
    assert remote.script("wrapper.sh", "edgeq").path.rsplit("/", 1)[1] in conn.run("ls edgeq/scripts").stdout


def test_commands_run_in_the_home_directory(conn):
    home = conn.run("pwd").stdout.strip()
    assert home == conn.run('printf %s "$HOME"').stdout


def test_stdin_reaches_the_command(conn):
    data = os.urandom(3_000_000)
    result = conn.run("wc -c; sha256sum", stdin=data)
    assert result.stdout.split()[0] == str(len(data))


def test_large_stdout_and_stderr_together_do_not_deadlock(conn):
    # both streams far beyond the channel window and pipe buffers: read together or it hangs
    result = conn.run(
        "head -c 4000000 /dev/zero | tr '\\0' o; head -c 4000000 /dev/zero | tr '\\0' e >&2", timeout_s=20
    )
    assert len(result.stdout) == 4_000_000 and len(result.stderr) == 4_000_000


def test_a_command_over_its_timeout_is_stopped_on_the_device(conn):
    started = time.monotonic()
    with pytest.raises(RemoteCommandError, match="did not finish within 1 s"):
        # a child that ignores SIGTERM too: the whole process group is killed 2 s later
        conn.run("sleep 4201.17 & (trap '' TERM; sleep 4202.17) & sleep 4203.17; wait", timeout_s=1)
    # bounds, not benchmarks: the timeout (1 s), the KILL 2 s later, and the client's grace period (5 s)
    assert time.monotonic() - started < 1 + 2 + 5
    ours = re.compile(r"sleep 420[123]\.17\b")  # durations no other process on the machine is likely to use
    deadline = time.monotonic() + 5
    while [c for c in _live("sleep 420") if ours.search(c)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [c for c in _live("sleep 420") if ours.search(c)] == []


def test_put_is_atomic_checks_the_size_and_reports_progress(conn, tmp_path):
    source = tmp_path / "model file.bin"
    source.write_bytes(os.urandom(1_500_000))
    seen = []
    name = 'dir with space/it\'s "quoted" $(not run).bin'
    sent = conn.put(source, name, progress=lambda done, total: seen.append((done, total)))
    assert sent == 1_500_000 and seen[-1] == (1_500_000, 1_500_000)
    listing = conn.run(f"ls -a {shlex.quote('dir with space')}").stdout
    assert ".part" not in listing and "it's" in listing
    digest = conn.run(f"sha256sum < {shlex.quote(name)}").stdout.split()[0]
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()


def test_quoting_keeps_shell_syntax_inert(conn):
    value = "a b'c\"$(touch pwned)`touch pwned2`;rm -rf x"
    assert conn.run(f"printf %s {shlex.quote(value)}").stdout == value
    assert "pwned" not in conn.run("ls").stdout


# --------------------------------------------------------------------------- the SSH connection


def test_opens_lazily_and_reuses_one_transport(device):
    conn = ssh(device)
    log_before = device.server.log.read_text().count("Accepted publickey")
    assert conn._client is None  # nothing happens before the first use
    with conn:
        transport = conn.transport
        for _ in range(3):
            conn.run("true")
        conn.put(device.known_hosts, "copied")
        assert conn.transport is transport
    assert device.server.log.read_text().count("Accepted publickey") - log_before == 1


def test_a_missing_key_file_is_an_auth_error(device, tmp_path):
    with pytest.raises(DeviceAuthError, match="does not exist"):
        ssh(device, key_files=(str(tmp_path / "nope"),)).run("true")


def test_password_from_the_environment_and_never_in_messages_or_logs(start_device, monkeypatch, caplog):
    secret = "s3cret-Pa55-word"
    device = start_device(authorized=False, password=secret)
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("EDGEQ_SSH_PASSWORD", secret)
    with ssh(device, key_files=()) as conn:
        assert conn.run("whoami").stdout.strip() == device.user
    monkeypatch.setenv("EDGEQ_SSH_PASSWORD", "wrong-" + secret)
    with pytest.raises(DeviceAuthError) as info:
        ssh(device, key_files=()).run("true")
    assert secret not in str(info.value) + str(info.value.hint)
    assert secret not in caplog.text


def test_password_prompt_is_asked_once_after_keys_fail(start_device):
    device = start_device(authorized=False, password="pr0mpted")
    asked = []

    def prompt(who):
        asked.append(who)
        return "pr0mpted"

    with ssh(device, key_files=(), password_prompt=prompt) as conn:
        conn.run("true")
    assert asked == [f"{device.user}@{device.host}"]


def test_ssh_agent_keys_are_used(device, tmp_path, monkeypatch):
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", "-q", str(device.key_path)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with ssh(device, key_files=(), allow_agent=True) as conn:
            assert conn.run("whoami").stdout.strip() == device.user
    finally:
        agent.terminate()
        agent.wait(timeout=5)


def test_a_stalled_upload_ends_within_the_transfer_timeout(device, cutting_proxy, known_hosts_for, tmp_path):
    proxy = cutting_proxy(device, cut_after_bytes=200_000, mode="stall")
    known = known_hosts_for(extra_lines=(device.known_hosts_line(host=proxy.host, port=proxy.port),))
    source = tmp_path / "big"
    source.write_bytes(os.urandom(4_000_000))
    conn = SSHConnection(
        proxy.host,
        port=proxy.port,
        user=device.user,
        key_files=(str(device.key_path),),
        options=options(known_hosts=known, transfer_timeout_s=2),
    )
    small = tmp_path / "small"
    small.write_bytes(b"x")
    with conn:
        # edgeq's files in place first: else the first upload may fill the link before the device says they
        # are missing, and what stalls is installing them (a timeout opening a channel), not the upload
        conn.put(small, "small")
        started = time.monotonic()
        with pytest.raises(DeviceUnreachableError, match="stalled"):
            conn.put(source, "big")
    assert time.monotonic() - started < 2 + 5  # the transfer timeout, plus slack: it ends


def test_a_silent_link_is_noticed_by_unanswered_keepalives(device, cutting_proxy, known_hosts_for):
    proxy = cutting_proxy(device, cut_after_bytes=1 << 40, mode="stall")
    known = known_hosts_for(extra_lines=(device.known_hosts_line(host=proxy.host, port=proxy.port),))
    conn = SSHConnection(
        proxy.host,
        port=proxy.port,
        user=device.user,
        key_files=(str(device.key_path),),
        options=options(known_hosts=known, command_timeout_s=60, keepalive_s=1, keepalive_count_max=2),
    )
    with conn:
        conn.run("true")  # the device's scripts are in place: the next command sends nothing after it starts
        process = conn.start("sleep 50", label="nap")
        time.sleep(0.3)
        proxy.cut_after_bytes = 0  # from now on the link forwards nothing: the keepalives go unanswered
        started = time.monotonic()
        with pytest.raises(DeviceUnreachableError, match="no answer to 2 keepalives"):
            process.wait()
        process.close()
    assert time.monotonic() - started < (2 + 1) * 1 + 3  # not the command's 60 s


def test_a_connection_cut_during_an_upload(device, cutting_proxy, known_hosts_for, tmp_path):
    proxy = cutting_proxy(device, cut_after_bytes=300_000, mode="close")
    known = known_hosts_for(extra_lines=(device.known_hosts_line(host=proxy.host, port=proxy.port),))
    source = tmp_path / "big"
    source.write_bytes(os.urandom(3_000_000))
    conn = SSHConnection(
        proxy.host,
        port=proxy.port,
        user=device.user,
        key_files=(str(device.key_path),),
        options=options(known_hosts=known),
    )
    with conn, pytest.raises(DeviceUnreachableError, match="connection lost|SSH error"):
        conn.put(source, "big")
    assert not (device.home / "big").exists()


def test_ssh_config_gives_hostname_user_port_and_identity_file(tmp_path):
    config = tmp_path / "config"
    config.write_text(
        "Host kitchen-pi\n  HostName 10.1.2.3\n  User pi\n  Port 2222\n  IdentityFile ~/.ssh/kitchen\nHost *\n  User fallback\n"
    )
    no_ssh = lambda: None  # noqa: E731 - paramiko's reader, used where no ssh client is installed
    found = read_ssh_config("kitchen-pi", config, find_ssh=no_ssh)
    assert (found.hostname, found.user, found.port) == ("10.1.2.3", "pi", 2222)
    assert found.identity_files == (os.path.expanduser("~/.ssh/kitchen"),)
    other = read_ssh_config("10.9.9.9", config, find_ssh=no_ssh)
    assert (other.hostname, other.user, other.port) == ("10.9.9.9", "fallback", None)
    with pytest.raises(EdgeqError, match="missing"):  # as ssh -F refuses it
        read_ssh_config("x", tmp_path / "missing", find_ssh=no_ssh)


def test_invoke_is_never_imported_even_for_match_exec(tmp_path):
    """paramiko imports invoke (~45 ms) for `Match exec`; edgeq defers it, and ssh -G now runs Match exec itself."""
    config = tmp_path / "ssh_config"
    config.write_text('Match exec "test 1 = 1"\n  HostName 127.0.0.9\n  Port 2299\n')
    code = (
        "import sys, edgeq.connection as c\n"
        "before = 'invoke.context' in sys.modules\n"
        f"cfg = c.read_ssh_config('pi-lab', {str(config)!r})\n"
        "print(before, 'invoke.context' in sys.modules, cfg.hostname, cfg.port)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "127.0.0.9", "2299"]


def test_the_package_exports_its_api():
    for name in edgeq.connection.__all__:
        assert getattr(edgeq.connection, name) is not None, name


def test_local_user_falls_back_to_the_uid_without_a_passwd_entry(monkeypatch):
    import getpass

    assert local_user() == getpass.getuser()

    def no_entry() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(getpass, "getuser", no_entry)
    assert local_user() == ("root" if os.geteuid() == 0 else str(os.geteuid()))
    assert SSHConnection("pi").user == local_user()  # the default login user
