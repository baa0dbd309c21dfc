"""The SSH config as OpenSSH reads it: edgeq's devices compared with ``ssh -G`` run here; the fallback's refusals.

Each config below is resolved twice: by edgeq's real path (``resolve_devices``,
which runs ``ssh -G`` itself and expands IdentityFile) and, separately, by
``ssh -G`` run in the test, whose IdentityFile templates ssh itself expands
(given back to it as a ControlPath, which ssh expands the same way). The
address, user, port, identity files (those that exist) and ProxyJump must be
equal, host by host.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import types
from pathlib import Path
from typing import Any

import pytest

from edgeq import devices as devices_module
from edgeq.connection.sshconfig import (
    SSHQuery,
    check_options,
    expand_path,
    read_ssh_config,
    resolve_ssh_config,
    ssh_default_user,
)
from edgeq.devices import HostEntry, host_entries_from_specs, parse_host_spec, resolve_devices
from edgeq.errors import EdgeqError

SSH = shutil.which("ssh")
needs_ssh = pytest.mark.skipif(SSH is None, reason="no OpenSSH client (ssh) here")
NO_SSH = lambda: None  # noqa: E731 - the lookup forced to "no ssh client": paramiko reads the config
SEP = "\x1f"

pytestmark = pytest.mark.usefixtures("isolated_home")


# --------------------------------------------------------------------------- the two sides


def openssh(config: Path, host: str, *, user: str | None = None, port: int | None = None, keys: tuple = ()) -> tuple:
    """``ssh -G`` run here: (address, user, port, identity files that exist, ProxyJump)."""
    args = ["-F", str(config)]
    args += ["-l", user] if user else []
    args += ["-p", str(port)] if port else []
    for key in keys:
        args += ["-i", str(key)]
    values = _ssh_g([*args, "--", host])
    templates = [v for k, v in values if k == "identityfile" and v.lower() != "none"]
    files = _ssh_expands([*args, "--", host], templates) if templates else []
    first = dict(reversed(values))  # the first value of each key
    get = first.get
    return (
        get("hostname"),
        get("user"),
        int(first["port"]),
        tuple(f for f in dict.fromkeys(files) if os.path.isfile(f)),
        get("proxyjump"),
    )


def _ssh_g(args: list[str]) -> list[tuple[str, str]]:
    assert SSH is not None
    out = subprocess.run([SSH, "-G", "-T", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return [(k.lower(), v) for k, _, v in (line.partition(" ") for line in out.stdout.splitlines())]


def _ssh_expands(args: list[str], templates: list[str]) -> list[str]:
    """IdentityFile templates as ssh expands them: ssh expands ControlPath with the same function, ~ and all."""
    values = _ssh_g(["-o", f'ControlPath="{SEP.join(templates)}"', *args])  # quoted: a path may hold spaces
    return next(v for k, v in values if k == "controlpath").split(SEP)


def edgeq(config: Path, entries, **kwargs) -> list[tuple]:
    found = resolve_devices(entries, ssh_config=config, **kwargs)
    return [(d.address, d.user, d.port, d.key_files, d.proxy_jump) for d in found]


def specs(*texts: str) -> tuple[HostEntry, ...]:
    return host_entries_from_specs([parse_host_spec(t) for t in texts])


def expected(config: Path, entries) -> list[tuple]:
    result = []
    for entry in entries:
        v = entry.vars
        result.append(
            openssh(config, v.get("ansible_host", entry.name), user=v.get("ansible_user"), port=v.get("ansible_port"))
        )
    return result


def touch_keys(config: Path, entries) -> None:
    """Create every identity file ssh -G names for these hosts (not those named *missing*)."""
    for entry in entries:
        v = entry.vars
        args = ["-F", str(config)] + (["-l", v["ansible_user"]] if "ansible_user" in v else [])
        args += ["-p", str(v["ansible_port"])] if "ansible_port" in v else []
        args += ["--", v.get("ansible_host", entry.name)]
        templates = [val for k, val in _ssh_g(args) if k == "identityfile"]
        for path in _ssh_expands(args, templates):
            if "missing" not in path and path.startswith(str(config.parent)):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text("key\n")


def write(tmp_path: Path, text: str, name: str = "ssh_config") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("{t}", str(tmp_path)))
    return path


# --------------------------------------------------------------------------- edgeq == ssh -G


@needs_ssh
def test_include_absolute_relative_globs_and_inside_host_blocks(tmp_path):
    write(tmp_path, "Host alpha\n  HostName 10.1.0.1\n  Port 2201\n", "conf.d/10-a.conf")
    write(
        tmp_path,
        "Host alpha beta\n  HostName 10.1.0.2\n  User from-include\n  IdentityFile {t}/keys/%n.key\n",
        "conf.d/20-b.conf",
    )
    write(tmp_path, "Host alpha\n  HostName 10.9.9.9\n", "conf.d/30-not-conf.txt")  # not matched by *.conf
    write(tmp_path, "HostName 10.3.0.1\nUser sub\n", "sub.conf")
    config = write(
        tmp_path,
        "Include {t}/conf.d/*.conf\n"
        f"Include edgeq-test-absent-{os.getpid()}/*.conf\n"  # relative: under ~/.ssh (of the passwd home), as ssh reads it
        "Host sub-*\n  Include {t}/sub.conf\n"
        "Host *.lab\n  User labuser\n"
        "Host *\n  IdentityFile {t}/keys/default\n  IdentityFile {t}/keys/missing\n",
    )
    entries = specs("alpha", "beta", "gamma.lab", "pi@alpha", "sub-1", "other:2022")
    touch_keys(config, entries)
    found = edgeq(config, entries)
    assert found == expected(config, entries)
    assert found[0][:3] == ("10.1.0.1", "from-include", 2201)  # the first file included wins for HostName
    assert found[4][:2] == ("10.3.0.1", "sub")
    assert found[0][3] == (str(tmp_path / "keys/alpha.key"), str(tmp_path / "keys/default"))


@needs_ssh
def test_match_host_originalhost_user_all_exec_and_the_user_of_host_user_at(tmp_path):
    config = write(
        tmp_path,
        "Host orig-*\n  HostName %h.example.test\n"
        "Match host *.example.test !originalhost orig-2\n  User via-host-match\n"
        "Match user deploy\n  Port 2400\n"
        "Match originalhost orig-3\n  IdentityFile {t}/keys/orig3\n"
        'Match exec "test %n = orig-4"\n  Port 2444\n'
        "Match all\n  IdentityFile {t}/keys/%r@%h:%p\n",
    )
    entries = specs("orig-1", "orig-2", "deploy@orig-1", "orig-3", "orig-4", "deploy@other")
    touch_keys(config, entries)
    found = edgeq(config, entries)
    assert found == expected(config, entries)
    assert found[0][:2] == ("orig-1.example.test", "via-host-match")
    assert found[2][1:3] == ("deploy", 2400)  # Match user sees the user of --host deploy@...
    assert found[4][2] == 2444


@needs_ssh
def test_match_sees_only_what_is_set_before_it(tmp_path):
    config = write(tmp_path, "Match user late\n  Port 2600\nHost h1\n  User late\n")
    entries = specs("h1", "late@h1")
    found = edgeq(config, entries)
    assert found == expected(config, entries)
    assert (found[0][1:3], found[1][1:3]) == (("late", 22), ("late", 2600))


@needs_ssh
def test_match_final(tmp_path):
    config = write(
        tmp_path, "Host fin-*\n  HostName 10.5.0.1\nMatch final host 10.5.0.1\n  User final-user\n  Port 2500\n"
    )
    entries = specs("fin-1", "someone@fin-1", "fin-2:2200")
    found = edgeq(config, entries)
    assert found == expected(config, entries)
    assert found[0][1:3] == ("final-user", 2500)


@needs_ssh
def test_tokens_and_environment_variables_in_identity_files(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_TEST_KEYS", str(tmp_path / "env"))
    config = write(
        tmp_path,
        "Host tok-*\n  HostName %h.tokens.test\n  Port 2022\n"
        "  IdentityFile {t}/keys/%r-%h-%p.key\n"
        "  IdentityFile {t}/keys/%n-%u-%i.key\n"
        "  IdentityFile {t}/keys/%%literal-%C-%L\n"
        "  IdentityFile ${EDGEQ_TEST_KEYS}/env.key\n"
        "  IdentityFile {t}/keys/missing-%h\n",
    )
    entries = (
        *specs("tok-1", "admin@tok-2:2200"),
        HostEntry("inventory-name", {"ansible_host": "tok-3", "ansible_user": "ops"}, source="inv.yml"),
    )
    touch_keys(config, entries)
    found = edgeq(config, entries)
    assert found == expected(config, entries)
    assert found[1][3][0] == str(tmp_path / "keys/admin-tok-2.tokens.test-2200.key")  # %r and %p of the command line
    assert str(tmp_path / "env/env.key") in found[0][3] and len(found[0][3]) == 4


@needs_ssh
def test_wildcards_negation_literal_brackets_trailing_comments_first_match_wins(tmp_path):
    config = write(
        tmp_path,
        "Host rack[1-3]   # OpenSSH reads the brackets literally\n  HostName 10.4.0.99\n"
        "Host rack? !rack2\n  HostName %h.racks.test  # trailing comment\n  User rackuser # another\n"
        "Host rack2\n  HostName 10.4.0.2\n"
        "Host *\n  User catchall\n  Port 2022\n  HostName 10.4.9.9\n",
    )
    entries = (
        *specs("rack1", "rack2", "rack3", "other"),
        HostEntry("literal", {"ansible_host": "rack[1-3]"}, source="inv.yml"),
    )
    found = edgeq(config, entries)
    assert found == expected(config, entries)
    assert [f[:3] for f in found] == [
        ("rack1.racks.test", "rackuser", 2022),
        ("10.4.0.2", "catchall", 2022),
        ("rack3.racks.test", "rackuser", 2022),
        ("10.4.9.9", "catchall", 2022),
        ("10.4.0.99", "catchall", 2022),
    ]


@needs_ssh
def test_proxy_jump_is_recorded_as_ssh_prints_it(tmp_path, monkeypatch):
    monkeypatch.setattr(devices_module, "PROXY_JUMP_SUPPORTED", True)  # as it will be once connections follow it
    config = write(
        tmp_path, "Host direct\n  ProxyJump none\nHost behind-*\n  ProxyJump jumper@bastion.test:2222,second.test\n"
    )
    entries = specs("behind-1", "direct")
    found = edgeq(config, entries)
    assert found == expected(config, entries)
    assert (found[0][4], found[1][4]) == ("jumper@bastion.test:2222,second.test", None)


@needs_ssh
def test_identity_files_given_come_first_as_ssh_i(tmp_path):
    k1, k2, k3 = (write(tmp_path, "key\n", f"keys/k{i}") for i in (1, 2, 3))
    config = write(tmp_path, "Host *\n  IdentityFile {t}/keys/k3\n  IdentityFile {t}/keys/k1\n")
    entry = HostEntry("h", {"ansible_ssh_private_key_file": str(k1)}, source="inv.yml")
    (found,) = resolve_devices([entry], ssh_config=config, identity_files=[k2])
    assert found.key_files == tuple(map(str, (k1, k2, k3)))
    assert found.key_files == openssh(config, "h", keys=(k1, k2))[3]
    assert not found.default_keys  # ssh -G's list is complete: paramiko must not add ~/.ssh/id_* of $HOME
    gone = HostEntry("h", {"ansible_ssh_private_key_file": str(tmp_path / "nope")}, source="inv.yml")
    (kept,) = resolve_devices([gone], ssh_config=config)  # a given key that is missing fails when connecting
    assert kept.key_files == (str(tmp_path / "nope"), str(k3), str(k1))


@needs_ssh
def test_a_targets_user_and_port_apply_where_the_config_sets_none_and_match_sees_them(tmp_path):
    target = types.SimpleNamespace(
        name="fake",
        python="python3",
        deploy=types.SimpleNamespace(
            transport="ssh", user="tuser", port=2022, remote_dir="edgeq", keep_versions=3, prometheus_dir=None
        ),
    )
    config = write(
        tmp_path, "Host configured\n  User cfguser\n  Port 2200\nMatch user tuser\n  HostName matched.test\n"
    )
    entries = [HostEntry(name, {"edgeq_target": "fake"}, source="inv.yml") for name in ("plain", "configured")]
    loader: Any = lambda name: target  # noqa: E731 - only .name, .python and .deploy are read
    plain, configured = resolve_devices(entries, ssh_config=config, target_loader=loader)
    assert (plain.address, plain.user, plain.port) == ("matched.test", "tuser", 2022)
    assert (configured.address, configured.user, configured.port) == ("configured", "cfguser", 2200)
    assert (plain.address, plain.user, plain.port) == openssh(config, "plain", user="tuser", port=2022)[:3]


@needs_ssh
def test_known_hosts_files_come_from_the_config_unless_known_hosts_is_given(tmp_path):
    config = write(
        tmp_path,
        "Host own\n  UserKnownHostsFile {t}/kh %d/kh2\n  GlobalKnownHostsFile none\n"
        "Host two\n  UserKnownHostsFile {t}/kh {t}/kh-extra\n",
    )
    own, plain = resolve_devices(specs("own", "plain"), ssh_config=config)
    home = pwd.getpwuid(os.getuid()).pw_dir
    assert (own.known_hosts_files, own.global_known_hosts_files) == ((str(tmp_path / "kh"),), (os.devnull,))
    assert plain.known_hosts_files == (f"{home}/.ssh/known_hosts",)  # the passwd home, as ssh says
    (given,) = resolve_devices(specs("own"), ssh_config=config, known_hosts=tmp_path / "mine")
    assert (given.known_hosts_files, given.global_known_hosts_files) == ((), ())
    (tmp_path / "kh-extra").write_text("")
    with pytest.raises(
        EdgeqError, match="UserKnownHostsFile lists .* edgeq reads only the first, and .*kh-extra exists"
    ):
        resolve_devices(specs("two"), ssh_config=config)


# --------------------------------------------------------------------------- refused, warned, errors


@needs_ssh
@pytest.mark.parametrize(
    ("line", "feature"),
    [
        ("ProxyCommand nc %h %p", "ProxyCommand"),
        ("HostKeyAlias other", "HostKeyAlias"),
        ("BindAddress 127.0.0.2", "BindAddress"),
        ("BindInterface lo", "BindInterface"),
        ("RevokedHostKeys /etc/ssh/revoked", "RevokedHostKeys"),
    ],
)
def test_what_edgeq_cannot_honour_is_refused_naming_it(tmp_path, line, feature):
    config = write(tmp_path, f"Match originalhost hidden\n  {line}\n")
    with pytest.raises(EdgeqError, match=rf"^host 'pi@hidden': the SSH config sets {feature} ") as info:
        resolve_devices(specs("pi@hidden"), ssh_config=config)
    assert feature in (info.value.hint or "")
    assert resolve_devices(specs("pi@visible"), ssh_config=config)  # only that host


@needs_ssh
def test_a_proxy_jump_is_recorded_for_the_connection(tmp_path):
    config = write(tmp_path, "Match originalhost hidden\n  ProxyJump bob@bastion:2222,gw\n")
    (hidden,) = resolve_devices(specs("pi@hidden"), ssh_config=config)
    (visible,) = resolve_devices(specs("pi@visible"), ssh_config=config)
    assert (hidden.proxy_jump, visible.proxy_jump) == ("bob@bastion:2222,gw", None)


@needs_ssh
def test_what_edgeq_honours_in_part_is_warned_once_naming_the_hosts(tmp_path, monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    config = write(tmp_path, "Host *\n  IdentitiesOnly yes\n  AddressFamily inet\nHost a\n  IdentityAgent none\n")
    warnings: list[str] = []
    found = resolve_devices(specs("a", "b", "c", "d", "e"), ssh_config=config, warn=warnings.append)
    assert warnings == [
        "a, b, c and 2 more: AddressFamily inet: edgeq tries every address of the host name",
        "b, c, d and 1 more: IdentitiesOnly yes: edgeq also offers ssh-agent's other keys, after the identity files",
    ]
    assert [d.use_agent for d in found] == [False, True, True, True, True]


@needs_ssh
def test_a_config_ssh_refuses_is_one_line_with_openssh_s_message(tmp_path):
    config = write(tmp_path, "Bogus yes\nHost a\n  Port abc\n")
    with pytest.raises(EdgeqError) as info:
        resolve_devices(specs("a"), ssh_config=config)
    assert info.value.message.startswith("host 'a': ssh -G a: ")
    assert "Bad configuration option: bogus" in info.value.message and "\n" not in info.value.message
    with pytest.raises(EdgeqError, match=r"host 'a': ssh -G a: Can't open user config file /no/such/file"):
        resolve_devices(specs("a"), ssh_config="/no/such/file")


@needs_ssh
def test_many_hosts_resolve_concurrently_in_order(tmp_path):
    config = write(tmp_path, "Host pi-*\n  User pi\n  IdentityFile {t}/keys/%h\nMatch user pi\n  Port 2222\n")
    queries = [SSHQuery(f"pi-{i:03d}") for i in range(120)] + [SSHQuery("pi-000")]
    found = resolve_ssh_config(queries, config, workers=8)
    assert [c.alias for c in found] == [q.host for q in queries]
    assert all((c.user, c.port, c.identity_files) == ("pi", 2222, (f"{tmp_path}/keys/{c.alias}",)) for c in found)


def test_expand_path_as_ssh_does(monkeypatch):
    home = pwd.getpwuid(os.getuid()).pw_dir.rstrip("/")
    tokens = {"h": "host", "r": "me", "p": "22", "d": home}
    monkeypatch.setenv("KEYS", "/k")
    assert expand_path("~/a/%h-%r:%p%%", tokens) == f"{home}/a/host-me:22%"
    assert expand_path("~", tokens) == f"{home}/"
    assert expand_path("${KEYS}/%h", tokens) == "/k/host"
    assert expand_path("~root//x", tokens) == pwd.getpwnam("root").pw_dir.rstrip("/") + "/x"
    for bad, why in (
        ("%z", "unknown token %z"),
        ("${NOPE_EDGEQ}", "has no value"),
        ("a%", "ends"),
        ("~nosuchuser/x", "no such user"),
    ):
        with pytest.raises(ValueError, match=why):
            expand_path(bad, tokens)


# --------------------------------------------------------------------------- without an ssh client: paramiko


@pytest.mark.parametrize(
    "text",
    [
        "Include other.conf\n",
        "Host a\n  include /etc/ssh/x.conf\n",
        "INCLUDE=x\n",
        "Match host a\n  User b\n",
        "Host a\n  HostName b\nmatch all\n  Port 2\n",
    ],
)
def test_the_fallback_refuses_include_and_match(tmp_path, text):
    config = write(tmp_path, text)
    feature = "Include" if "nclude" in text.lower() else "Match"
    with pytest.raises(
        EdgeqError, match=rf"(?i)ssh_config line \d+: {feature} is not supported without OpenSSH's client"
    ) as info:
        resolve_devices(specs("a"), ssh_config=config, find_ssh=NO_SSH)
    assert "install the OpenSSH client" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("line", "token"),
    [
        ("IdentityFile ~/.ssh/%r.key", "%r"),
        ("IdentityFile ${HOME}/k", "${VAR}"),
        ("IdentityFile /keys/~other", "~ other than a leading ~/"),
        ("HostName %n.lab", "%n"),
        ("UserKnownHostsFile ~/.ssh/kh-%h", "%h"),
    ],
)
def test_the_fallback_refuses_tokens_paramiko_expands_otherwise(tmp_path, line, token):
    config = write(tmp_path, f"Host a\n  {line}\n")
    with pytest.raises(EdgeqError, match=f"{token.replace('$', '[$]')} is not supported without OpenSSH's client"):
        resolve_devices(specs("a"), ssh_config=config, find_ssh=NO_SSH)


def test_the_fallback_refuses_a_missing_config_file(tmp_path):
    with pytest.raises(EdgeqError, match="SSH config /no/such/file does not exist"):
        resolve_devices(specs("a"), ssh_config="/no/such/file", find_ssh=NO_SSH)


def test_the_fallback_ignores_include_in_comments_and_values_and_reads_the_system_config_after(tmp_path):
    user = write(
        tmp_path, "# Include x.conf\nHost a  # Match here is a comment\n  HostName include.test\n", "user_config"
    )
    system = write(tmp_path, "Host *\n  User from-system\n  Port 2022\n", "system_config")
    (found,) = resolve_ssh_config([SSHQuery("a")], user, find_ssh=NO_SSH)
    assert (found.hostname, found.user, found.port, found.resolver) == ("include.test", None, None, "paramiko")
    home = Path(os.environ["HOME"])
    write(home, "Host a\n  HostName from-home.test\n", ".ssh/config")
    (found,) = resolve_ssh_config([SSHQuery("a")], None, find_ssh=NO_SSH, system_config=system)
    assert (found.hostname, found.user, found.port) == ("from-home.test", "from-system", 2022)


@needs_ssh
def test_the_fallback_reads_what_it_accepts_as_ssh_does(tmp_path):
    config = write(
        tmp_path,
        "Host rack[1-3]   # literal brackets\n  HostName 10.4.0.99\n"
        "Host rack? !rack2\n  HostName %h.racks.test  # trailing comment\n  User rackuser # another\n"
        "  IdentityFile {t}/keys/%h-%u.key  # tokens paramiko expands right\n"
        'Host "quoted #1" *.q\n  HostName q.test\n  IdentityFile "{t}/keys/with #hash"\n'
        "Host *\n  User catchall\n  Port 2022\n  HostName %h.other.test\n  IdentityFile ~/.ssh/none-here\n",
    )
    entries = (
        *specs("rack1", "rack2", "rack3", "other", "me@x.q:2200"),
        HostEntry("lit", {"ansible_host": "rack[1-3]"}),
    )
    touch_keys(config, entries)
    (tmp_path / "keys/with #hash").write_text("key\n")
    assert edgeq(config, entries, find_ssh=NO_SSH) == expected(config, entries)


def test_read_ssh_config_of_one_host(tmp_path):
    config = write(
        tmp_path, "Host kitchen-pi\n  HostName 10.1.2.3\n  User pi\n  Port 2222\n  IdentityFile ~/.ssh/kitchen\n"
    )
    fallback = read_ssh_config("kitchen-pi", config, find_ssh=NO_SSH)
    assert (fallback.hostname, fallback.user, fallback.port) == ("10.1.2.3", "pi", 2222)
    assert fallback.identity_files == (os.path.expanduser("~/.ssh/kitchen"),)  # paramiko: $HOME
    if SSH:
        found = read_ssh_config("kitchen-pi", config, user="other")
        home = pwd.getpwuid(os.getuid()).pw_dir
        assert (found.hostname, found.user, found.port) == ("10.1.2.3", "other", 2222)
        assert found.identity_files == (f"{home.rstrip('/')}/.ssh/kitchen",)  # ssh: the passwd home
        assert read_ssh_config("elsewhere", config).user == ssh_default_user()


def test_check_options_lists_refusals_and_warnings():
    from edgeq.connection.sshconfig import SSHHostConfig

    config = SSHHostConfig(
        "a", "a", options=(("proxycommand", "none"), ("hostkeyalias", "b"), ("addressfamily", "inet6"))
    )
    issues = check_options(config)
    assert [(i.option, i.refused) for i in issues] == [("HostKeyAlias", True), ("AddressFamily", False)]
