"""Host keys (``edgeq.connection.hostkeys``): OpenSSH's checks against real sshd devices on loopback, and fingerprints."""

from __future__ import annotations

import base64
import shutil
import subprocess

import paramiko
import pytest
from _remote import ssh

from edgeq.connection import ConnectOptions, known_hosts_token
from edgeq.connection.hostkeys import KnownKey
from edgeq.errors import HostKeyError

pytestmark = pytest.mark.usefixtures("isolated_home")


def test_unknown_host_is_refused_with_its_fingerprint_and_the_way_to_trust_it(device, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.touch()
    with pytest.raises(HostKeyError) as info:
        ssh(device, known_hosts=empty).run("true")
    assert device.fingerprint in info.value.message
    assert f"[{device.host}]:{device.port}" in info.value.message
    assert "--trust-new-hosts" in info.value.hint and f"ssh-keyscan -p {device.port} {device.host}" in info.value.hint
    assert empty.read_text() == ""  # nothing accepted silently


def test_fingerprint_is_openssh_format(device):
    keygen = subprocess.run(
        ["ssh-keygen", "-lf", str(device.host_key.path) + ".pub"], capture_output=True, text=True, check=True
    )
    key = paramiko.Ed25519Key.from_private_key_file(str(device.host_key.path))
    known = KnownKey("known_hosts", 1, key.get_name(), key.asbytes(), revoked=False)
    assert key.fingerprint == known.fingerprint == keygen.stdout.split()[1] == device.fingerprint


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_a_known_key_paramiko_cannot_load_still_shows_openssh_fingerprint(tmp_path):
    # a FIDO security key (sk-ssh-ed25519): in known_hosts files, but not a key type paramiko loads
    message = paramiko.Message()
    message.add_string("sk-ssh-ed25519@openssh.com")
    message.add_string(bytes(range(32)))
    message.add_string("ssh:")
    blob = message.asbytes()
    public = tmp_path / "sk.pub"
    public.write_text(f"sk-ssh-ed25519@openssh.com {base64.b64encode(blob).decode()} test\n")
    keygen = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True, text=True, check=True)
    known = KnownKey(str(public), 1, "sk-ssh-ed25519@openssh.com", blob, revoked=False)
    assert known.fingerprint == keygen.stdout.split()[1]


def test_trust_new_hosts_adds_the_key_like_accept_new(device, tmp_path):
    known = tmp_path / "kh" / "known_hosts"
    added = []
    conn = ssh(device, known_hosts=known, trust_new_hosts=True, host_key_added=lambda *a: added.append(a))
    with conn:
        conn.run("true")
    lines = known.read_text().splitlines()
    assert lines == [device.known_hosts_line()]
    assert added == [(f"[{device.host}]:{device.port}", f"ssh-ed25519 {device.fingerprint}", str(known))]
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    with ssh(device, known_hosts=known) as again:  # now known: no trust needed, nothing appended
        again.run("true")
    assert known.read_text().splitlines() == lines


def test_trust_new_hosts_writes_to_the_user_file_without_known_hosts(device, isolated_home):
    conn = ssh(device, known_hosts=None, trust_new_hosts=True)
    with conn:
        conn.run("true")
    assert (isolated_home / ".ssh" / "known_hosts").read_text().strip() == device.known_hosts_line()


def test_a_changed_host_key_is_always_refused(device, known_hosts_for, tmp_path):
    from sshd import make_key

    other = make_key(tmp_path / "other_host_key")
    known = known_hosts_for(extra_lines=(device.known_hosts_line(key=other),))
    for trust in (False, True):
        with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as info:
            ssh(device, known_hosts=known, trust_new_hosts=trust).run("true")
        assert device.fingerprint in info.value.message and other.fingerprint in info.value.message
        assert "ssh-keygen -R" in info.value.hint
    assert known.read_text().count("\n") == 1  # never replaced nor appended


def test_any_matching_entry_is_accepted_and_hashed_names_work(device, known_hosts_for, tmp_path):
    from sshd import make_key

    stale = make_key(tmp_path / "stale")
    known = known_hosts_for(extra_lines=(device.known_hosts_line(key=stale), device.known_hosts_line()))
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert f"{device.host}" not in known.read_text()  # hashed
    with ssh(device, known_hosts=known) as conn:  # paramiko alone would compare with the first entry only
        conn.run("true")


def test_revoked_key_is_refused(device, known_hosts_for):
    known = known_hosts_for(device, extra_lines=("@revoked * " + " ".join(device.host_key.public.split()[:2]),))
    with pytest.raises(HostKeyError, match="REVOKED"):
        ssh(device, known_hosts=known).run("true")


def test_system_known_hosts_are_read(device, tmp_path):
    system = tmp_path / "ssh_known_hosts"
    system.write_text(device.known_hosts_line() + "\n")
    with ssh(device, known_hosts=None, system_known_hosts=system) as conn:
        conn.run("true")


def test_the_known_key_type_is_negotiated(start_device, known_hosts_for):
    device = start_device(host_key_types=("ed25519", "rsa"))
    rsa = device.host_keys[1]
    known = known_hosts_for(extra_lines=(device.known_hosts_line(key=rsa),))  # only the RSA key is known
    with ssh(device, known_hosts=known) as conn:
        conn.run("true")
        assert conn.transport.get_remote_server_key().get_name() == "ssh-rsa"


def test_known_hosts_token():
    assert known_hosts_token("pi", 22) == "pi" and known_hosts_token("10.0.0.5", 2222) == "[10.0.0.5]:2222"


def test_connect_options_files(tmp_path):
    opts = ConnectOptions(
        known_hosts=tmp_path / "k", system_known_hosts=tmp_path / "s", user_known_hosts=tmp_path / "u"
    )
    assert opts.known_hosts_files() == (tmp_path / "s", tmp_path / "u", tmp_path / "k")
    assert opts.known_hosts_write_path() == tmp_path / "k"
    assert ConnectOptions(user_known_hosts=tmp_path / "u").known_hosts_write_path() == tmp_path / "u"
