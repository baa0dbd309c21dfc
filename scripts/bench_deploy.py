#!/usr/bin/env python3
"""Benchmark of `edgeq deploy` against its baselines, measured side by side in one run on loopback sshd's.

    sudo .venv/bin/python scripts/bench_deploy.py [--size-mb 14] [--devices 16] [--repeat 5]

Starts its own real OpenSSH servers (tests/sshd.py: one sshd, unix user and
home per device, on 127.0.0.x) and stops them at the end. Needs root.

1. One device, a 14 MB model: `edgeq deploy` (the command, a new process each
   time, so Python's start-up and imports are counted) against OpenSSH `scp`
   of the same file to the same server. Goal: edgeq <= 1.2x scp. Then where
   the time goes: imports, connect, one exec round trip, the transfer by each
   path paramiko offers (SFTP put, exec channel into `cat`; default cipher and
   AES-GCM), sha256 and fsync on the device.
2. The same model to N devices: one `edgeq deploy -i inventory` (all devices
   at once) against N single-device `edgeq deploy --host` one after another.
   Goal: <= 0.5x.

Every timed deploy is a first deploy of the model: its folder on the device
is removed between runs (untimed). edgeq's device scripts stay, as on any
device edgeq has worked with (they are uploaded once per device and edgeq
version; that first contact is timed on its own in the breakdown). Medians
of --repeat runs are reported. edgeq is byte-compiled first, as pip leaves
an installed wheel.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import sshd  # noqa: E402  (tests/sshd.py: real sshd devices on loopback)

EDGEQ = (
    [str(ROOT / ".venv" / "bin" / "edgeq")]
    if (ROOT / ".venv" / "bin" / "edgeq").exists()
    else [sys.executable, "-m", "edgeq"]
)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def write_model(path: Path, size: int, seed: int) -> Path:
    import random

    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + random.Random(seed).randbytes(size - 8))
    return path


class Bench:
    def __init__(self, args):
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix=f"edgeq-sshd-{os.getpid()}-bench-"))
        self.base.chmod(0o711)
        client = self.base / "client"
        client.mkdir(mode=0o700)
        self.key = sshd.make_key(client / "id_ed25519", comment="edgeq-bench")
        self.factory = sshd.DeviceFactory(self.base, self.key)
        self.home = self.base / "home"  # HOME of the edgeq runs: no ~/.ssh of the person running this
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        self.ssh_config = self.home / ".ssh" / "config"
        self.ssh_config.write_text(f"Host *\n  IdentityFile {self.key.path}\n")
        self.env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "EDGEQ_SSH_PASSWORD")}
        self.env.update(HOME=str(self.home), COLUMNS="120")
        size = int(args.size_mb * 1_000_000)
        self.model = write_model(self.base / "model.tflite", size, 1)
        self.size = size

    def close(self) -> None:
        self.factory.stop_all()
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------ helpers

    def known_hosts(self, devices) -> Path:
        path = self.base / f"known_hosts.{len(devices)}"
        path.write_text("".join(d.known_hosts_line() + "\n" for d in devices))
        return path

    def clean(self, devices) -> None:
        for device in devices:
            shutil.rmtree(device.home / "edgeq" / "models", ignore_errors=True)
            for leftover in device.home.glob("scp-*"):
                leftover.unlink()

    def run(self, argv: list[str]) -> None:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stdout}\n{done.stderr}")

    def edgeq_deploy_host(self, device, known: Path) -> None:
        self.run(
            EDGEQ
            + [
                "deploy",
                str(self.model),
                "--name",
                "bench",
                "--host",
                device.spec,
                "--known-hosts",
                str(known),
                "--ssh-config",  # its IdentityFile; ssh -G reads ~ from the passwd entry, not $HOME
                str(self.ssh_config),
                "--retries",
                "0",
            ]
        )

    def scp(self, device, known: Path) -> None:
        self.run(
            [
                "scp",
                "-q",
                "-i",
                str(self.key.path),
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-P",
                str(device.port),
                str(self.model),
                f"{device.user}@{device.host}:scp-model.tflite",
            ]
        )

    # ------------------------------------------------------------------ part 1

    def one_device(self) -> dict:
        device = self.factory.start_device("bench1")
        known = self.known_hosts([device])
        repeat = self.args.repeat
        samples: dict[str, list[float]] = {
            "scp": [],
            "edgeq deploy (command)": [],
            "edgeq deploy (library, in process)": [],
        }
        self.edgeq_deploy_host(device, known)  # warm the page cache and sshd
        self.clean([device])
        for _ in range(repeat):  # interleaved, so that drifts in machine load hit both alike
            samples["scp"].append(timed(lambda: self.scp(device, known)))
            self.clean([device])
            samples["edgeq deploy (command)"].append(timed(lambda: self.edgeq_deploy_host(device, known)))
            self.clean([device])
            samples["edgeq deploy (library, in process)"].append(self.library_deploy(device, known))
            self.clean([device])
        breakdown = self.breakdown(device, known)
        return {"samples": samples, "breakdown": breakdown, "device": device}

    def library_deploy(self, device, known: Path) -> float:
        from edgeq.connection import ConnectOptions, SSHConnection
        from edgeq.deploy import deploy_to_device, prepare_model
        from edgeq.devices import Device

        options = ConnectOptions(known_hosts=known, system_known_hosts=None, allow_agent=False, look_for_keys=False)
        record = Device(
            name=device.name, address=device.host, user=device.user, port=device.port, key_files=(str(self.key.path),)
        )
        started = time.perf_counter()
        model = prepare_model(self.model, "bench")
        with SSHConnection(
            device.host, port=device.port, user=device.user, key_files=record.key_files, options=options
        ) as conn:
            deploy_to_device(conn, record, model)
        return time.perf_counter() - started

    def breakdown(self, device, known: Path) -> dict[str, float]:
        """Where the time goes, in ms (medians)."""
        import hashlib

        from edgeq.connection import ConnectOptions, SSHConnection

        repeat = self.args.repeat
        options = ConnectOptions(known_hosts=known, system_known_hosts=None, allow_agent=False, look_for_keys=False)
        out: dict[str, float] = {}

        def fresh() -> SSHConnection:
            return SSHConnection(
                device.host, port=device.port, user=device.user, key_files=(str(self.key.path),), options=options
            )

        imports = []
        for _ in range(repeat):
            imports.append(
                timed(
                    lambda: subprocess.run(
                        [
                            sys.executable,
                            "-c",  # with the collector off, then frozen, as edgeq/__main__.py runs the CLI
                            "import gc; gc.disable(); import edgeq.cli, edgeq.deploy, edgeq.connection; gc.freeze()",
                        ],
                        check=True,
                    )
                )
            )
        out["python start-up + imports of the CLI (with paramiko)"] = median_ms(imports)
        out["sha256 of the model on this machine"] = median_ms(
            [timed(lambda: hashlib.sha256(self.model.read_bytes()).hexdigest()) for _ in range(repeat)]
        )
        connects, firsts = [], []
        for _ in range(repeat):
            conn = fresh()
            connects.append(timed(conn.connect))
            firsts.append(timed(lambda conn=conn: conn.transport.open_session().close()))
            conn.close()
        out["connect: TCP, SSH handshake, host key check, auth"] = median_ms(connects)
        out["opening the first channel after authentication"] = median_ms(firsts)

        with fresh() as conn:
            out["one exec round trip (`true` under the wrapper)"] = median_ms(
                [timed(lambda: conn.run("true")) for _ in range(repeat)]
            )
            first = []
            for _ in range(repeat):
                shutil.rmtree(device.home / "edgeq" / "scripts", ignore_errors=True)
                first.append(timed(lambda: conn.run("true")))
            out["the same on first contact: the wrapper is missing, installed, the command run again"] = median_ms(
                first
            )
            out[f"(cipher negotiated by edgeq: {conn.transport.remote_cipher})"] = float("nan")

            out["transfer by edgeq's put (exec channel into `cat`, size check, rename)"] = median_ms(
                [timed(lambda: conn.put(self.model, "cat-model.tflite")) for _ in range(repeat)]
            )
            out["sha256 of the model on the device by OpenSSL, as edgeq (incl. round trip)"] = median_ms(
                [timed(lambda: conn.run("openssl dgst -sha256 -r < cat-model.tflite")) for _ in range(repeat)]
            )
            out["the same by coreutils' sha256sum (incl. round trip)"] = median_ms(
                [timed(lambda: conn.run("sha256sum cat-model.tflite")) for _ in range(repeat)]
            )
            syncs = []
            for i in range(repeat):
                conn.put(self.model, f"sync-model-{i}.tflite")  # fresh dirty pages, as right after an upload
                syncs.append(timed(lambda i=i: conn.run(f"sync sync-model-{i}.tflite")))
            out["fsync of the model on the device (incl. round trip)"] = median_ms(syncs)
            conn.run("rm -f sftp-model.tflite cat-model.tflite sync-model-*.tflite")

        # The two transfer paths paramiko offers, by transport settings: paramiko's defaults (aes128-ctr +
        # hmac-sha2-256, Nagle's algorithm on), AES-GCM alone, and edgeq's settings (AES-GCM + TCP_NODELAY).
        for label, gcm, nodelay in (
            ("paramiko defaults: aes128-ctr, Nagle on", False, False),
            ("aes128-gcm, Nagle on", True, False),
            ("edgeq: aes128-gcm + TCP_NODELAY", True, True),
        ):
            client = self.raw_client(device, gcm=gcm, nodelay=nodelay)
            try:
                out[f"transfer by SFTP put (new SFTP channel), {label}"] = median_ms(
                    [timed(lambda c=client: self.sftp_put(c)) for _ in range(repeat)]
                )
                out[f"transfer by exec channel into `cat`, {label}"] = median_ms(
                    [timed(lambda c=client: self.cat_put(c)) for _ in range(repeat)]
                )
            finally:
                client.close()
        return out

    def raw_client(self, device, *, gcm: bool, nodelay: bool):
        import socket

        import paramiko

        sock = socket.create_connection((device.host, device.port), timeout=10)
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(
            paramiko.AutoAddPolicy()
        )  # loopback benchmark: the host key was generated by this script
        disabled = {"ciphers": [c for c in paramiko.Transport._preferred_ciphers if "gcm" not in c]} if gcm else {}
        client.connect(
            device.host,
            port=device.port,
            username=device.user,
            key_filename=str(self.key.path),
            allow_agent=False,
            look_for_keys=False,
            sock=sock,
            disabled_algorithms=disabled,
        )
        return client

    def sftp_put(self, client) -> None:
        sftp = client.open_sftp()
        sftp.put(str(self.model), "sftp-model.tflite")
        sftp.close()

    def cat_put(self, client) -> None:
        channel = client.get_transport().open_session()
        channel.exec_command("cat > cat-model.tflite")
        with open(self.model, "rb") as handle:
            while chunk := handle.read(256 * 1024):
                channel.sendall(memoryview(chunk))
        channel.shutdown_write()
        while channel.recv(65536):
            pass
        channel.recv_exit_status()
        channel.close()

    # ------------------------------------------------------------------ part 2

    def fleet(self) -> dict:
        count = self.args.devices
        devices = [self.factory.start_device(f"fleet{i}") for i in range(count)]
        known = self.known_hosts(devices)
        inventory = self.base / "fleet.yml"
        lines = ["all:", "  hosts:"]
        for d in devices:
            lines += [
                f"    {d.name}:",
                f"      ansible_host: {d.host}",
                f"      ansible_port: {d.port}",
                f"      ansible_user: {d.user}",
            ]
        inventory.write_text("\n".join(lines) + "\n")
        parallel, sequential = [], []
        fleet_repeat = max(1, self.args.repeat // 2)
        for _ in range(fleet_repeat):
            self.clean(devices)
            sequential.append(timed(lambda: [self.edgeq_deploy_host(d, known) for d in devices]))
            self.clean(devices)
            parallel.append(
                timed(
                    lambda: self.run(
                        EDGEQ
                        + [
                            "deploy",
                            str(self.model),
                            "--name",
                            "bench",
                            "-i",
                            str(inventory),
                            "--known-hosts",
                            str(known),
                            "--ssh-config",
                            str(self.ssh_config),
                            "--concurrency",
                            str(count),
                            "--retries",
                            "0",
                        ]
                    )
                )
            )
        self.clean(devices)
        return {"sequential": sequential, "parallel": parallel, "count": count}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=14.0)
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    reason = sshd.available()
    if reason:
        print(f"bench_deploy: cannot start sshd devices: {reason}", file=sys.stderr)
        return 2
    sshd.remove_stale_users()
    # edgeq byte-compiled, as pip leaves an installed wheel (scripts/bootstrap.sh does the same for the editable
    # install): otherwise every `edgeq` process would compile its modules again, which no user's install does
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "edgeq")], check=True, stdout=subprocess.DEVNULL
    )
    import paramiko

    openssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    print(
        f"# edgeq deploy benchmark: {args.size_mb:g} MB model, loopback sshd's, {os.cpu_count()} CPUs, {openssh}, paramiko {paramiko.__version__}, Python {sys.version.split()[0]}"
    )
    bench = Bench(args)
    try:
        one = bench.one_device()
        fleet = bench.fleet()
    finally:
        bench.close()

    scp = median_ms(one["samples"]["scp"])
    command = median_ms(one["samples"]["edgeq deploy (command)"])
    library = median_ms(one["samples"]["edgeq deploy (library, in process)"])
    print(f"\n## 1. One device, {args.size_mb:g} MB (median of {args.repeat})\n")
    print("| run | wall time | vs scp |")
    print("|---|---:|---:|")
    print(f"| OpenSSH `scp` (baseline) | {scp:.0f} ms | 1.00x |")
    print(f"| `edgeq deploy --host` (command) | {command:.0f} ms | {command / scp:.2f}x |")
    print(f"| `deploy_to_device` (library, in process) | {library:.0f} ms | {library / scp:.2f}x |")
    verdict = "met" if command / scp <= 1.2 else "NOT met"
    print(
        f"\nGoal edgeq <= 1.2x scp: {verdict} for the command ({command / scp:.2f}x), {'met' if library / scp <= 1.2 else 'NOT met'} in process ({library / scp:.2f}x)."
    )
    print("\nWhere the time goes (ms, medians):\n")
    print("| step | ms |")
    print("|---|---:|")
    for step, ms in one["breakdown"].items():
        print(f"| {step} | {'' if ms != ms else f'{ms:.0f}'} |")

    seq = statistics.median(fleet["sequential"])
    par = statistics.median(fleet["parallel"])
    count = fleet["count"]
    print(f"\n## 2. {count} devices, {args.size_mb:g} MB each (median of {len(fleet['parallel'])})\n")
    print("| run | wall time | ratio |")
    print("|---|---:|---:|")
    print(f"| {count} x `edgeq deploy --host`, one after another (baseline) | {seq:.2f} s | 1.00x |")
    print(f"| one `edgeq deploy -i inventory` ({count} at once) | {par:.2f} s | {par / seq:.2f}x |")
    print(f"\nGoal <= 0.5x: {'met' if par / seq <= 0.5 else 'NOT met'} ({par / seq:.2f}x).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
