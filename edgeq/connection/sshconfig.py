"""What the SSH config says about a host, read by OpenSSH's own client (``ssh -G``); paramiko only where there is none.

**With an ``ssh`` client** (found with :func:`find_ssh_client`), each host is
resolved exactly as ``ssh`` would resolve it, by running
``ssh -G -T [-F FILE] [-l USER] [-p PORT] [-i KEY ...] -- HOST``, the way
Ansible's ssh plugin calls ssh: Include, Match (host, originalhost, user,
final, canonical, exec...), ``%`` tokens, ``${VAR}``, canonicalisation, first
match wins, the system config: all OpenSSH's. Many hosts are resolved
concurrently (:func:`resolve_ssh_config`, a thread pool). ``ssh -G`` prints
IdentityFile unexpanded; edgeq expands ``~`` (with the passwd home directory,
as ssh does, not ``$HOME``), the ``%`` tokens (their values are ssh's own:
they are read back from a ControlPath made of every token) and ``${VAR}``
exactly as ssh does when it loads them. UserKnownHostsFile and
GlobalKnownHostsFile are printed already expanded and are passed on as they
are. ``ssh`` refusing a config (a bad line, a missing ``-F`` file) is an
:class:`SSHConfigError` carrying OpenSSH's message.

**Without an ``ssh`` client**, paramiko's ``SSHConfig`` reads the files
(``-F FILE``; else ``$HOME/.ssh/config`` then ``/etc/ssh/ssh_config``), after
edgeq has refused what paramiko reads differently from OpenSSH: ``Include``
and ``Match`` anywhere in a file, and ``%``/``${}`` tokens other than the few
paramiko expands right. It also strips trailing comments (paramiko would keep
them in the value) and reads ``[`` in ``Host`` patterns literally, as OpenSSH
does (paramiko's fnmatch would read a character class).

What edgeq then does with each value (honoured, refused, warned, ignored) is
:data:`SSH_OPTIONS`, applied by :func:`check_options`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import EdgeqError

__all__ = [
    "SSH_OPTIONS",
    "SSHHostConfig",
    "SSHIssue",
    "SSHQuery",
    "check_options",
    "existing_files",
    "expand_path",
    "find_ssh_client",
    "read_ssh_config",
    "resolve_ssh_config",
    "ssh_default_user",
]

SSH_G_TIMEOUT_S = 30.0  # a Match exec command or a DNS lookup (CanonicalizeHostname) runs inside ssh -G
DEFAULT_WORKERS = 8  # ssh -G processes at a time: each is ~5 ms of CPU, more only helps while they wait (DNS, exec)
SYSTEM_CONFIG = "/etc/ssh/ssh_config"

# The tokens of OpenSSH's DEFAULT_CLIENT_PERCENT_EXPAND_ARGS (ssh.h, 9.x; %j only from 9.6 on), read back from
# ssh -G as one ControlPath: ssh expands ControlPath with the same values it expands IdentityFile with, before -G
# prints the configuration, so edgeq expands IdentityFile with ssh's own values.
_TOKENS = "CLiklnpdhru"
_SEP = "\x1f"
_TOKEN_PROBE = _SEP.join(f"%{t}" for t in _TOKENS)

FindSSH = Callable[[], "str | None"]


def find_ssh_client() -> str | None:
    """The ``ssh`` client edgeq reads SSH configs with (``shutil.which("ssh")``), or None: then paramiko reads them."""
    return shutil.which("ssh")


def ssh_default_user() -> str:
    """The user ssh logs in as when nothing says otherwise: the passwd name of this process's uid (not ``$USER``)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # pragma: no cover - a uid without a passwd entry: ssh itself refuses to run then
        import getpass

        return getpass.getuser()


@dataclasses.dataclass(frozen=True)
class SSHQuery:
    """One host to resolve, as ssh's command line gives it: ``ssh [-l user] [-p port] [-i key ...] host``."""

    host: str
    user: str | None = None
    port: int | None = None
    identity_files: tuple[str, ...] = ()  # -i: offered first, in this order (absolute paths of existing files)


@dataclasses.dataclass(frozen=True)
class SSHHostConfig:
    """One host as OpenSSH's client resolves it (``ssh -G``), or as paramiko reads the config without a client.

    ``identity_files`` are in OpenSSH's order (``-i`` files, then the config's,
    else ssh's defaults ``~/.ssh/id_*``), expanded, whether they exist or not.
    ``options`` holds every ``key value`` line (keys lowercase) as printed; from
    paramiko, only what the config sets. From paramiko ``user`` and ``port`` are
    None when nothing sets them; ssh -G always gives both (its defaults: the
    passwd user name, 22).
    """

    alias: str  # the host argument: ansible_host, else the inventory name / the --host address
    hostname: str
    user: str | None = None
    port: int | None = None
    identity_files: tuple[str, ...] = ()
    user_known_hosts_files: tuple[str, ...] = ()  # as printed ("none": no file)
    global_known_hosts_files: tuple[str, ...] = ()
    proxy_jump: str | None = None
    proxy_command: str | None = None
    options: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    resolver: str = "ssh -G"  # "ssh -G" | "paramiko"

    def values(self, key: str) -> tuple[str, ...]:
        """Every value of ``key`` (lowercase), in order."""
        return tuple(value for name, value in self.options if name == key)

    def get(self, key: str) -> str | None:
        """The value of ``key`` (lowercase), or None when it is not set."""
        found = self.values(key)
        return found[0] if found else None

    @property
    def proxy(self) -> str | None:
        """ProxyJump or ProxyCommand, whichever is set."""
        return self.proxy_jump or self.proxy_command


# --------------------------------------------------------------------------- resolving


def read_ssh_config(
    alias: str,
    path: str | os.PathLike[str] | None = None,
    *,
    user: str | None = None,
    port: int | None = None,
    identity_files: Sequence[str] = (),
    find_ssh: FindSSH = find_ssh_client,
) -> SSHHostConfig:
    """What the SSH config (``path`` as ``ssh -F``; default ssh's own files) says about one host."""
    query = SSHQuery(alias, user, port, tuple(identity_files))
    return resolve_ssh_config([query], path, find_ssh=find_ssh)[0]


def resolve_ssh_config(
    queries: Sequence[SSHQuery],
    path: str | os.PathLike[str] | None = None,
    *,
    find_ssh: FindSSH = find_ssh_client,
    workers: int = DEFAULT_WORKERS,
    system_config: str | os.PathLike[str] | None = SYSTEM_CONFIG,
    where: Callable[[SSHQuery], str] | None = None,
) -> tuple[SSHHostConfig, ...]:
    """Resolve every query, in order: with ``ssh -G`` (concurrently, each distinct query once), else with paramiko.

    ``path`` is ``ssh -F``: the only file read (ssh's default: ``~/.ssh/config``
    of the passwd home, then ``/etc/ssh/ssh_config``). ``find_ssh()`` gives the
    ssh client, or None for paramiko (``system_config`` is then read after the
    user's file, as ssh would). Raises EdgeqError for the first query, in
    order, that cannot be resolved (``where(query)`` starts its message);
    nothing is left running.
    """
    if not queries:
        return ()
    try:
        return _resolve(queries, path, find_ssh, workers, system_config)
    except _Failed as failed:
        error = failed.error
        if where is not None and failed.query is not None:
            error = EdgeqError(f"{where(failed.query)}: {error.message}", hint=error.hint)
        raise error from None


def _error(message: str, hint: str | None = None, query: SSHQuery | None = None) -> _Failed:
    return _Failed(EdgeqError(message, hint), query)


class _Failed(Exception):
    """Internal: the query an EdgeqError is about, on its way to :func:`resolve_ssh_config`."""

    def __init__(self, error: EdgeqError, query: SSHQuery | None = None):
        super().__init__(error.message)
        self.error = error
        self.query = query


def _resolve(
    queries: Sequence[SSHQuery],
    path: str | os.PathLike[str] | None,
    find_ssh: FindSSH,
    workers: int,
    system_config: str | os.PathLike[str] | None,
) -> tuple[SSHHostConfig, ...]:
    ssh = find_ssh()
    if ssh is None:
        reader = _ParamikoReader(path, system_config)
        return tuple(reader.lookup(query) for query in queries)
    distinct = list(dict.fromkeys(queries))
    config = os.fspath(path) if path is not None else None
    # one first, alone: a config that ssh refuses fails here, not in as many processes as there are hosts
    done = {distinct[0]: _ssh_g(ssh, distinct[0], config)}
    rest = distinct[1:]
    if rest:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(rest))))
        try:
            futures = {query: pool.submit(_ssh_g, ssh, query, config) for query in rest}
            for query in rest:  # in order: the first failing query's error is raised
                done[query] = futures[query].result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return tuple(done[query] for query in queries)


def _ssh_g(ssh: str, query: SSHQuery, config: str | None) -> SSHHostConfig:
    argv = [ssh, "-G", "-T"]
    if config is not None:
        argv += ["-F", config]
    if query.user is not None:
        argv += ["-l", query.user]
    if query.port is not None:
        argv += ["-p", str(query.port)]
    for key in query.identity_files:
        argv += ["-i", key]
    argv += ["-o", f"ControlPath={_TOKEN_PROBE}", "--", query.host]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=SSH_G_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _error(
            f"ssh -G {query.host} did not finish in {SSH_G_TIMEOUT_S:.0f} s",
            hint="a Match exec command or a DNS lookup (CanonicalizeHostname) of the SSH config hangs; "
            f"try `ssh -G {query.host}`",
            query=query,
        ) from None
    except OSError as exc:
        raise _error(f"cannot run {ssh} -G: {exc.strerror or exc}", query=query) from None
    out = done.stdout.decode("utf-8", "surrogateescape")
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        message = "; ".join(lines) or f"exit status {done.returncode}"
        raise _error(
            f"ssh -G {query.host}: {message}",
            hint="this is OpenSSH's own reading of the SSH config; `ssh -G HOST` (with the same -F) shows it too",
            query=query,
        )
    return _parse_ssh_g(query, out)


def _parse_ssh_g(query: SSHQuery, text: str) -> SSHHostConfig:
    options: list[tuple[str, str]] = []
    probe = None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        key = key.lower()
        if key == "controlpath":
            probe = value
            continue
        if key:
            options.append((key, value))
    config = SSHHostConfig(alias=query.host, hostname=query.host, options=tuple(options))
    values = probe.split(_SEP) if probe is not None else []
    if len(values) != len(_TOKENS):
        raise _error(
            f"ssh -G {query.host}: unexpected output (no ControlPath line of {len(_TOKENS)} tokens)", query=query
        )
    tokens = dict(zip(_TOKENS, values))
    port = config.get("port")
    try:
        port_number = int(port) if port is not None else None
    except ValueError:
        raise _error(f"ssh -G {query.host}: port {port!r} is not a number", query=query) from None
    identity_files = []
    for raw in config.values("identityfile"):
        if raw.lower() == "none":
            continue
        try:
            identity_files.append(expand_path(raw, tokens))
        except ValueError as exc:
            raise _error(f"ssh -G {query.host}: IdentityFile {raw}: {exc}", query=query) from None
    proxy_command = config.get("proxycommand")
    return dataclasses.replace(
        config,
        hostname=config.get("hostname") or query.host,
        user=config.get("user"),
        port=port_number,
        identity_files=tuple(identity_files),
        user_known_hosts_files=tuple((config.get("userknownhostsfile") or "").split()),
        global_known_hosts_files=tuple((config.get("globalknownhostsfile") or "").split()),
        proxy_jump=config.get("proxyjump"),
        proxy_command=None if proxy_command in (None, "none") else proxy_command,
    )


def expand_path(raw: str, tokens: dict[str, str], environ: dict[str, str] | None = None) -> str:
    """A path as ssh expands IdentityFile: ``~`` / ``~user`` (passwd homes), then ``%x`` tokens and ``${VAR}``.

    Raises ValueError where ssh would fail (an unknown token, an unset variable, an unknown user).
    """
    env = os.environ if environ is None else environ
    path = _expand_tilde(raw)
    out: list[str] = []
    i = 0
    while i < len(path):
        c = path[i]
        if c == "$" and path.startswith("${", i):
            end = path.find("}", i + 2)
            if end < 0:
                raise ValueError(f"environment variable {path[i:]!r} has no closing '}}'")
            name = path[i + 2 : end]
            if not name:
                raise ValueError("zero-length environment variable")
            if name not in env:
                raise ValueError(f"environment variable ${{{name}}} has no value")
            out.append(env[name])
            i = end + 1
        elif c == "%":
            if i + 1 >= len(path):
                raise ValueError("a '%' ends the path")
            key = path[i + 1]
            if key == "%":
                out.append("%")
            elif key in tokens:
                out.append(tokens[key])
            else:
                raise ValueError(f"unknown token %{key}")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _expand_tilde(path: str) -> str:
    """OpenSSH's tilde_expand: ``~``, ``~/x`` with this uid's passwd home, ``~user/x`` with that user's."""
    if not path.startswith("~"):
        return path
    rest = path[1:]
    if not rest or rest.startswith("/"):
        name, tail = None, rest.lstrip("/")
    else:
        name, _, tail = rest.partition("/")
        tail = tail.lstrip("/")
    try:
        home = pwd.getpwnam(name).pw_dir if name else pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        raise ValueError(f"no such user {name}" if name else "this uid has no passwd entry") from None
    return home + ("" if home.endswith("/") else "/") + tail


# --------------------------------------------------------------------------- without OpenSSH: paramiko

# Tokens paramiko expands as OpenSSH does, by key; any other %-token, ${VAR} or ~ (but a leading ~/) is refused
_PARAMIKO_TOKENS = {"hostname": "h", "identityfile": "hdu"}
_PATH_KEYS = ("identityfile", "userknownhostsfile", "globalknownhostsfile")
_CHECKED_KEYS = ("hostname", "user", "port", "proxyjump", *_PATH_KEYS)
# keys whose value is the rest of the line, comments included (OpenSSH does not split them into words)
_RAW_KEYS = ("proxycommand", "localcommand", "remotecommand", "knownhostscommand")
_LINE = re.compile(r"^(\s*)([^\s=]+)(\s*=\s*|\s+)(.*)$")
_INSTALL = "install the OpenSSH client (ssh): edgeq then reads SSH configs with `ssh -G`, exactly as ssh does"


class _ParamikoReader:
    """SSH configs read by paramiko (no ssh client here), refusing what paramiko reads differently from OpenSSH."""

    def __init__(self, path: str | os.PathLike[str] | None, system_config: str | os.PathLike[str] | None):
        if path is not None:
            files = [Path(path)]
            if not files[0].is_file():
                raise _error(
                    f"SSH config {path} does not exist" if not files[0].exists() else f"SSH config {path} is not a file"
                )
        else:
            candidates = [Path("~/.ssh/config").expanduser(), *([Path(system_config)] if system_config else [])]
            files = [p for p in candidates if p.is_file()]
        import paramiko

        self.config = paramiko.SSHConfig()
        for file in files:
            try:
                text = file.read_text(encoding="utf-8", errors="surrogateescape")
            except OSError as exc:
                raise _error(f"cannot read SSH config {file}: {exc.strerror or exc}") from None
            try:
                self.config.parse(io.StringIO(_for_paramiko(text, str(file))))
            except (paramiko.SSHException, ValueError) as exc:
                raise _error(f"cannot read SSH config {file}: {exc}", hint=_INSTALL) from None

    def lookup(self, query: SSHQuery) -> SSHHostConfig:
        import paramiko

        try:
            found = self.config.lookup(query.host)
        except (OSError, paramiko.SSHException, ValueError, KeyError) as exc:
            raise _error(f"cannot read the SSH config for {query.host!r}: {exc}", query=query) from None
        options: list[tuple[str, str]] = []
        for key, value in found.items():
            for item in value if isinstance(value, list) else [value]:
                options.append((key, "none" if item is None else str(item)))
        config = SSHHostConfig(alias=query.host, hostname=query.host, options=tuple(options), resolver="paramiko")
        port = query.port if query.port is not None else config.get("port")
        try:
            port_number = int(port) if port is not None else None
        except ValueError:
            raise _error(f"SSH config: Port {port!r} for host {query.host!r} is not a number", query=query) from None
        configured = [p for p in config.values("identityfile") if p.lower() != "none"]
        return dataclasses.replace(
            config,
            hostname=config.get("hostname") or query.host,
            user=query.user or config.get("user"),
            port=port_number,
            identity_files=(*query.identity_files, *(os.path.expanduser(p) for p in configured)),
            user_known_hosts_files=tuple(os.path.expanduser(p) for p in config.values("userknownhostsfile")),
            global_known_hosts_files=tuple(os.path.expanduser(p) for p in config.values("globalknownhostsfile")),
            proxy_jump=config.get("proxyjump"),
            proxy_command=None if config.get("proxycommand") in (None, "none") else config.get("proxycommand"),
        )


def _for_paramiko(text: str, where: str) -> str:
    """The config as paramiko must see it to read it as OpenSSH does, or SSHConfigError naming what it cannot read."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            lines.append(line)
            continue
        indent, keyword, sep, rest = match.groups()
        key = keyword.lower()
        if key in ("include", "match"):
            raise _error(
                f"{where} line {number}: {keyword} is not supported without OpenSSH's client "
                "(paramiko would ignore or misread it, and edgeq could reach another host or user)",
                hint=_INSTALL,
            )
        if key not in _RAW_KEYS:
            cut = _comment_start(rest)
            if cut is not None:
                rest = rest[:cut].rstrip()
        if key == "host":
            rest = rest.replace("[", "[[]")  # OpenSSH reads brackets literally; paramiko's fnmatch would not
        elif key in _CHECKED_KEYS:
            _refuse_tokens(keyword, rest, _PARAMIKO_TOKENS.get(key, ""), f"{where} line {number}")
        lines.append(indent + keyword + sep + rest)
    return "\n".join(lines) + "\n"


def _refuse_tokens(keyword: str, value: str, allowed: str, where: str) -> None:
    words = value.split()
    problem = None
    if "${" in value:
        problem = "${VAR}"
    elif any("~" in (w[2:] if w.startswith("~/") else w) for w in words) and keyword.lower() in _PATH_KEYS:
        problem = "~ other than a leading ~/"
    else:
        for token in re.findall(r"%(.?)", value):
            if token not in allowed:
                problem = f"%{token}"
                break
    if problem:
        raise _error(
            f"{where}: {keyword} {value}: {problem} is not supported without OpenSSH's client "
            "(paramiko expands it differently from ssh)",
            hint=_INSTALL,
        )


def _comment_start(text: str) -> int | None:
    """Where a comment starts in a config line's arguments: a '#' that begins a word (OpenSSH's argv_split)."""
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == "#":
            return i
        quote = ""
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n and (text[i + 1] in "'\"\\" or (not quote and text[i + 1] == " ")):
                i += 2
                continue
            if not quote and c in " \t":
                break
            if not quote and c in "\"'":
                quote = c
            elif quote and c == quote:
                quote = ""
            i += 1
    return None


# --------------------------------------------------------------------------- what edgeq does with each option


@dataclasses.dataclass(frozen=True)
class SSHIssue:
    """An option edgeq cannot honour for a host: ``refused`` (the host is not connected to) or a warning."""

    option: str  # as the ssh_config manual spells it
    message: str
    refused: bool


SSH_OPTIONS: dict[str, str] = {
    # honoured
    "hostname": "honoured: the address connected to (after canonicalisation, by ssh -G)",
    "user": "honoured: the login user",
    "port": "honoured",
    "identityfile": "honoured: offered in OpenSSH's order (-k/ansible key, then the config's, else ~/.ssh/id_*), "
    "the files that exist",
    "userknownhostsfile": "honoured unless --known-hosts is given: the first file is read and written "
    "(--trust-new-hosts); a further listed file that exists is refused",
    "globalknownhostsfile": "honoured unless --known-hosts is given: the first file is read; "
    "a further listed file that exists is refused",
    "identityagent": "honoured for 'none' (no agent) and SSH_AUTH_SOCK; another socket is warned about",
    "proxyjump": "recorded on the device (Device.proxy_jump); refused until the connection follows it",
    # refused: edgeq would reach the device another way, or trust another key
    "proxycommand": "refused: edgeq cannot run a proxy command, and connecting directly would bypass it",
    "hostkeyalias": "refused: known_hosts would be searched under another name than ssh searches",
    "bindaddress": "refused: ssh connects from that address, edgeq cannot choose its source address",
    "bindinterface": "refused: ssh connects from that interface, edgeq cannot choose it",
    "revokedhostkeys": "refused: edgeq cannot check that revocation list",
    # warned: connects to the same host, authenticates differently
    "identitiesonly": "warned when yes and an agent is in use: paramiko offers the agent's other keys too",
    "addressfamily": "warned when inet or inet6: edgeq tries every address of the name",
    "certificatefile": "warned: edgeq does not load certificates (paramiko uses KEY-cert.pub beside a key file)",
    "pkcs11provider": "warned: edgeq does not use PKCS#11 keys",
    "knownhostscommand": "warned: edgeq does not run it; host keys come from the known_hosts files",
    "pubkeyauthentication": "warned when no: edgeq offers keys anyway",
}
"""What edgeq does with each ``ssh -G`` key it reads. Every other key is ignored:
ConnectTimeout, ServerAliveInterval/CountMax, ConnectionAttempts (edgeq's own
--connect-timeout, keepalives and --retries apply); StrictHostKeyChecking,
CheckHostIP, VerifyHostKeyDNS, NoHostAuthenticationForLocalhost,
UpdateHostKeys, HashKnownHosts (edgeq's host-key policy is its own and never
looser: unknown keys need --trust-new-hosts, changed keys are refused);
Ciphers, MACs, KexAlgorithms, HostKeyAlgorithms and the like (edgeq's own
lists); forwarding, tunnels, ControlMaster, RemoteCommand, RequestTTY,
SendEnv/SetEnv, LocalCommand (edgeq forwards nothing and runs its own
commands); GSSAPI, hostbased and password settings (edgeq uses a password
only from EDGEQ_SSH_PASSWORD or a terminal prompt); logging."""


def check_options(config: SSHHostConfig, *, proxy_jump_supported: bool = False) -> list[SSHIssue]:
    """The options of ``config`` edgeq refuses or warns about (see :data:`SSH_OPTIONS`)."""
    issues: list[SSHIssue] = []

    def refuse(option: str, message: str) -> None:
        issues.append(SSHIssue(option, message, refused=True))

    def warn(option: str, message: str) -> None:
        issues.append(SSHIssue(option, message, refused=False))

    if config.proxy_command:
        refuse(
            "ProxyCommand",
            f"ProxyCommand {config.proxy_command}: edgeq cannot go through a proxy command, "
            "and connecting directly would bypass it",
        )
    if config.proxy_jump and not proxy_jump_supported:
        refuse("ProxyJump", f"ProxyJump {config.proxy_jump}: edgeq does not go through a proxy (jump host) yet")
    for key, option, why in (
        ("hostkeyalias", "HostKeyAlias", "edgeq checks host keys under the address it connects to"),
        ("bindaddress", "BindAddress", "edgeq cannot choose the address it connects from"),
        ("bindinterface", "BindInterface", "edgeq cannot choose the interface it connects from"),
        ("revokedhostkeys", "RevokedHostKeys", "edgeq cannot check that revocation list"),
    ):
        value = config.get(key)
        if value and value.lower() != "none":
            refuse(option, f"{option} {value}: {why}")
    agent = config.get("identityagent")
    agent_in_use = bool(os.environ.get("SSH_AUTH_SOCK")) and (agent or "").lower() != "none"
    if agent and agent.lower() != "none" and agent not in ("SSH_AUTH_SOCK", os.environ.get("SSH_AUTH_SOCK")):
        warn("IdentityAgent", f"IdentityAgent {agent}: edgeq uses the agent of $SSH_AUTH_SOCK")
    if (config.get("identitiesonly") or "").lower() == "yes" and agent_in_use:
        warn("IdentitiesOnly", "IdentitiesOnly yes: edgeq also offers ssh-agent's other keys, after the identity files")
    family = (config.get("addressfamily") or "any").lower()
    if family in ("inet", "inet6"):
        warn("AddressFamily", f"AddressFamily {family}: edgeq tries every address of the host name")
    if config.values("certificatefile"):
        warn("CertificateFile", "CertificateFile: edgeq authenticates with the key alone")
    if config.get("pkcs11provider") not in (None, "none"):
        warn("PKCS11Provider", "PKCS11Provider: edgeq does not use PKCS#11 keys")
    if config.get("knownhostscommand") not in (None, "none"):
        warn("KnownHostsCommand", "KnownHostsCommand: edgeq reads host keys from the known_hosts files only")
    if (config.get("pubkeyauthentication") or "yes").lower() in ("no", "false"):
        warn("PubkeyAuthentication", "PubkeyAuthentication no: edgeq offers keys anyway")
    return issues


def existing_files(paths: Iterable[str]) -> tuple[str, ...]:
    """The paths that are files, in order, each once."""
    return tuple(dict.fromkeys(p for p in paths if os.path.isfile(p)))
