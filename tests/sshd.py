"""Real OpenSSH servers on loopback for the tests: one ``sshd``, one unix user and one home per device.

Each device is a real ``/usr/sbin/sshd -D -e -f CONFIG`` (Debian's OpenSSH)
listening on its own loopback address and port (127.0.0.x:port), with its own
ed25519 host key, and a dedicated unix user (``useradd``) whose home
directory is the device's file system. The tests connect with real paramiko.
Root is needed (sshd, useradd, mount); the fixtures skip without it.

Also here, for the failure cases:

* :func:`free_address` - an address and port nothing listens on (a device that is down);
* :class:`SilentServer` - accepts TCP connections and never answers (no SSH greeting);
* :class:`CuttingProxy` - forwards to a device and cuts (or stalls) the connection
  after N bytes from the client, i.e. in the middle of an upload;
* ``start_device(disk_bytes=N)`` - the device's remote folder is a tmpfs of N bytes
  (a full disk); where mounting is not allowed, RLIMIT_FSIZE on its sshd instead
  (``max_file_bytes=N``: any file written over SSH is cut at N bytes with EFBIG).

The Python side does not import edgeq, so other test modules (probe, bench)
can reuse it as it is.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import itertools
import os
import random
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
SFTP_SERVER = next(
    (
        p
        for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")
        if os.path.exists(p)
    ),
    "internal-sftp",
)
USER_PREFIX = "eqt"  # test users are eqt<pid>x<n>; those of dead test runs are removed at start-up


def available() -> str | None:
    """None when real sshd devices can be started here, else why not."""
    if os.geteuid() != 0:
        return "needs root (sshd, useradd)"
    if not os.path.exists(SSHD):
        return f"no sshd at {SSHD} (run scripts/bootstrap.sh)"
    if not shutil.which("useradd"):
        return "no useradd"
    return None


@dataclasses.dataclass(frozen=True)
class KeyPair:
    path: Path  # private key
    public: str  # "ssh-ed25519 AAAA... comment"

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.public)


def fingerprint_of(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def make_key(path: Path, comment: str = "edgeq-test", key_type: str = "ed25519") -> KeyPair:
    path.parent.mkdir(parents=True, exist_ok=True)
    bits = ["-b", "2048"] if key_type == "rsa" else []
    subprocess.run([SSH_KEYGEN, "-q", "-t", key_type, *bits, "-N", "", "-C", comment, "-f", str(path)], check=True)
    return KeyPair(path, (path.with_suffix(".pub") if path.suffix else Path(str(path) + ".pub")).read_text().strip())


@dataclasses.dataclass
class SSHDevice:
    """A running test device: where it listens, who logs in, where its files are."""

    name: str
    host: str
    port: int
    user: str
    uid: int
    home: Path
    key_path: Path  # the client's private key, authorized on this device
    known_hosts: Path  # a known_hosts file holding this device's key (only)
    host_key: KeyPair
    server: SSHDServer
    disk_limit: str | None = None  # "tmpfs" | "rlimit" | None
    host_keys: tuple[KeyPair, ...] = ()  # all of them, host_key first
    remote_dir: Path | None = None  # where edgeq keeps its files on it (home/edgeq by default)

    @property
    def spec(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def fingerprint(self) -> str:
        return self.host_key.fingerprint

    def known_hosts_line(self, host: str | None = None, port: int | None = None, key: KeyPair | None = None) -> str:
        host, port = host or self.host, port or self.port
        name = host if port == 22 else f"[{host}]:{port}"
        key_type, blob = (key or self.host_key).public.split()[:2]
        return f"{name} {key_type} {blob}"

    def processes(self) -> list[tuple[int, str]]:
        """(pid, command line) of the live (not zombie) processes of the device's user."""
        return [(pid, cmd) for pid, cmd in _user_processes(self.uid) if cmd]


class SSHDServer:
    """One sshd process: started, waited for (its "Server listening" line), stopped."""

    def __init__(
        self,
        directory: Path,
        host: str,
        port: int,
        host_keys: list[Path],
        user: str,
        *,
        password_auth: bool = False,
        max_file_bytes: int | None = None,
    ):
        self.directory = directory
        self.host = host
        self.port = port
        self.host_keys = host_keys
        self.user = user
        self.password_auth = password_auth
        self.max_file_bytes = max_file_bytes
        self.config = directory / "sshd_config"
        self.log = directory / "sshd.log"
        self.process: subprocess.Popen | None = None

    def write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}:{self.port}",
                    *(f"HostKey {key}" for key in self.host_keys),
                    "PidFile none",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin no",
                    f"AllowUsers {self.user}",
                    "AuthorizedKeysFile .ssh/authorized_keys",
                    "PubkeyAuthentication yes",
                    f"PasswordAuthentication {'yes' if self.password_auth else 'no'}",
                    "KbdInteractiveAuthentication no",
                    "MaxStartups 64:30:128",
                    "MaxSessions 32",
                    "ClientAliveInterval 0",
                    "LogLevel VERBOSE",
                    f"Subsystem sftp {SFTP_SERVER}",
                    "",
                ]
            )
        )

    def start(self, timeout_s: float = 10.0) -> None:
        self.write_config()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        limit = self.max_file_bytes

        def preexec() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        with open(self.log, "ab") as log:  # sshd keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=preexec,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "Server listening on" in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"sshd on {self.host}:{self.port} exited: {self.log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"sshd on {self.host}:{self.port} did not start within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[int]:
        if self.process is None:
            return []
        return [pid for pid, ppid, state in _proc_table() if ppid == self.process.pid and state != "Z"]


class DeviceFactory:
    """Starts devices (sshd + user + home) and removes all of them at the end."""

    def __init__(self, base: Path, client_key: KeyPair):
        self.base = base
        self.client_key = client_key
        self.devices: list[SSHDevice] = []
        self._count = itertools.count(1)
        self._hosts = itertools.cycle(range(2 + (os.getpid() % 50), 250))  # spread over 127.0.0.x
        self._lock = threading.Lock()

    def start_device(
        self,
        name: str | None = None,
        *,
        authorized: bool = True,
        password: str | None = None,
        disk_bytes: int | None = None,
        max_file_bytes: int | None = None,
        remote_dir: str = "edgeq",
        host_key_types: tuple[str, ...] = ("ed25519",),
        shell: str = "/bin/sh",
    ) -> SSHDevice:
        """A new device. ``disk_bytes``: its ``remote_dir`` is a tmpfs of that size (RLIMIT_FSIZE where mounts are refused);
        ``max_file_bytes``: RLIMIT_FSIZE on its sshd; ``shell``: the login shell that runs the commands."""
        with self._lock:
            number = next(self._count)
            host = f"127.0.0.{next(self._hosts)}"
        user = f"{USER_PREFIX}{os.getpid()}x{number}"
        name = name or f"dev{number}"
        directory = self.base / f"{number}-{name}"
        directory.mkdir(parents=True)
        home = directory / "home"
        uid = _add_user(user, home, password, shell)
        try:
            ssh_dir = home / ".ssh"
            ssh_dir.mkdir(parents=True, mode=0o700)
            if authorized:
                (ssh_dir / "authorized_keys").write_text(self.client_key.public + "\n")
            limit = None
            if disk_bytes is not None:
                limit = "tmpfs" if _mount_tmpfs(home / remote_dir, disk_bytes, uid) else "rlimit"
                if limit == "rlimit":
                    max_file_bytes = disk_bytes
            elif max_file_bytes is not None:
                limit = "rlimit"
            _chown_tree(home, uid, skip=home / remote_dir if limit == "tmpfs" else None)
            host_keys = [
                make_key(directory / f"ssh_host_{kind}_key", comment=f"host-{name}", key_type=kind)
                for kind in host_key_types
            ]
            host_key = host_keys[0]
            server = None
            for _attempt in range(5):
                port = free_port(host)
                server = SSHDServer(
                    directory,
                    host,
                    port,
                    [k.path for k in host_keys],
                    user,
                    password_auth=password is not None,
                    max_file_bytes=max_file_bytes,
                )
                try:
                    server.start()
                    break
                except RuntimeError:
                    if _attempt == 4:
                        raise
            known_hosts = directory / "known_hosts"
            device = SSHDevice(
                name,
                host,
                server.port,
                user,
                uid,
                home,
                self.client_key.path,
                known_hosts,
                host_key,
                server,
                limit,
                tuple(host_keys),
                home / remote_dir,
            )
            known_hosts.write_text(device.known_hosts_line() + "\n")
        except BaseException:
            _remove_user(user, uid, home)
            raise
        with self._lock:
            self.devices.append(device)
        return device

    def stop_device(self, device: SSHDevice) -> None:
        """Stop its sshd and sessions, unmount, delete the user and the home."""
        _kill_user_processes(device.uid)
        deadline = time.monotonic() + 3
        while device.server.children() and time.monotonic() < deadline:  # sshd reaps its sessions' monitors
            time.sleep(0.02)
        device.server.stop()
        _umount_if_mounted(device.home)
        _remove_user(device.user, device.uid, device.home)
        with self._lock:
            if device in self.devices:
                self.devices.remove(device)

    def stop_all(self) -> None:
        for device in list(self.devices):
            with contextlib.suppress(Exception):
                self.stop_device(device)


# --------------------------------------------------------------------------- failure fixtures


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_address() -> tuple[str, int]:
    """A loopback address and port with nothing listening: connecting is refused, as to a device that is down."""
    host = f"127.0.0.{random.randint(2, 250)}"
    return host, free_port(host)


class SilentServer:
    """Accepts TCP connections and never sends a byte: a device whose sshd hangs before its greeting."""

    def __init__(self, host: str | None = None, port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host or f"127.0.0.{random.randint(2, 250)}", port))
        self.sock.listen(64)
        self.host, self.port = self.sock.getsockname()
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    conn, _ = self.sock.accept()
                    self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


class CuttingProxy:
    """A TCP proxy to a device that cuts (``mode="close"``), resets (``"reset"``: a TCP RST to both sides)
    or freezes (``"stall"``) a connection after N client bytes.

    Only the first ``cut_connections`` connections are cut; later ones are
    forwarded whole (a transient failure, for retries). ``cut`` counts them;
    ``forwarded`` counts the bytes passed on from clients.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        cut_after_bytes: int,
        mode: str = "close",
        cut_connections: int = 1_000_000,
        host: str | None = None,
    ):
        assert mode in ("close", "reset", "stall")
        self.target = (target_host, target_port)
        self.cut_after_bytes = cut_after_bytes
        self.mode = mode
        self.cut_connections = cut_connections
        self.cut = 0
        self.forwarded = 0
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host or f"127.0.0.{random.randint(2, 250)}", 0))
        self.sock.listen(64)
        self.host, self.port = self.sock.getsockname()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
                cutting = self.connections <= self.cut_connections
            threading.Thread(target=self._pipe, args=(client, cutting), daemon=True).start()

    def _pipe(self, client: socket.socket, cutting: bool) -> None:
        upstream = socket.create_connection(self.target)
        with self._lock:
            self._sockets += [client, upstream]
        sent = 0
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if cutting and sent + len(data) >= self.cut_after_bytes:
                            with self._lock:
                                self.cut += 1
                            if self.mode == "reset":  # SO_LINGER 0: close() sends RST instead of FIN
                                for end in (client, upstream):
                                    end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                                    end.close()
                                return
                            if self.mode == "close":
                                return
                            self._stop.wait()  # stall: keep both sockets open, forward nothing more
                            return
                        sent += len(data)
                        with self._lock:
                            self.forwarded += len(data)
                        upstream.sendall(data)
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


# --------------------------------------------------------------------------- users, mounts, processes


def _add_user(user: str, home: Path, password: str | None, shell: str = "/bin/sh") -> int:
    # '*' is "no password" but NOT a locked account: with UsePAM no, sshd refuses keys for locked ("!") accounts
    command = ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", shell, "--password", "*", user]
    for attempt in range(20):  # /etc/passwd may be locked by a concurrent useradd
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            break
        if "lock" not in done.stderr or attempt == 19:
            raise RuntimeError(f"useradd {user}: {done.stderr.strip()}")
        time.sleep(0.1)
    if password is not None:
        subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True, capture_output=True)
    home.mkdir(parents=True, exist_ok=True)
    home.parent.chmod(0o711)  # the user must reach its home; the factory's base folder is 0711 too
    import pwd

    return pwd.getpwnam(user).pw_uid


def _chown_tree(root: Path, uid: int, skip: Path | None = None) -> None:
    import pwd

    gid = pwd.getpwuid(uid).pw_gid
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip:
            dirnames[:] = []
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)
    root.chmod(0o755)


def _mount_tmpfs(path: Path, size_bytes: int, uid: int) -> bool:
    import pwd

    path.mkdir(parents=True, exist_ok=True)
    gid = pwd.getpwuid(uid).pw_gid
    done = subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={max(size_bytes // 1024, 4)}k,mode=0755,uid={uid},gid={gid}",
            "edgeq-test-disk",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0


def _umount_if_mounted(home: Path) -> None:
    prefix = str(home) + "/"
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _remove_user(user: str, uid: int, home: Path) -> None:
    _kill_user_processes(uid)
    _umount_if_mounted(home)
    subprocess.run(["userdel", "--force", "--remove", user], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def _proc_table() -> list[tuple[int, int, str]]:
    rows = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        rest = text[text.rfind(")") + 2 :].split()
        rows.append((int(entry), int(rest[1]), rest[0]))
    return rows


def _user_processes(uid: int) -> list[tuple[int, str]]:
    found = []
    for pid, _ppid, state in _proc_table():
        if state == "Z":
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmd = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((pid, cmd))
    return found


def _kill_user_processes(uid: int) -> None:
    """SIGKILL, by pid, every process of a test user (its SSH sessions): they were started by the tests."""
    for pid, _cmd in _user_processes(uid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def remove_stale_users() -> None:
    """Users left by test runs that died before their clean-up (their pid is gone)."""
    import pwd

    for entry in pwd.getpwall():
        name = entry.pw_name
        if not name.startswith(USER_PREFIX) or "x" not in name[len(USER_PREFIX) :]:
            continue
        pid_text = name[len(USER_PREFIX) :].split("x", 1)[0]
        if not pid_text.isdigit() or os.path.exists(f"/proc/{pid_text}"):
            continue
        _remove_user(name, entry.pw_uid, Path(entry.pw_dir))
