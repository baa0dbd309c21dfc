#!/usr/bin/env python3
"""Benchmark of fleet deploys: `edgeq deploy -i` against `ansible-playbook` with edgeq.fleet, and against the link's limit.

    sudo .venv/bin/python scripts/bench_fleet.py [--part 1|2|all] [--repeat 3] [--size-mb 2]
    sudo .venv/bin/python scripts/bench_fleet.py --cleanup     # what a killed run left behind

Starts its own real OpenSSH servers (tests/sshd.py: one sshd, unix user and
home per device, on 127.0.0.x) and stops them at the end. Needs root.

1. No shaping. 8, 32 and 64 devices, a --size-mb model: one `edgeq deploy
   MODEL -i INVENTORY --concurrency N` against `ansible-playbook -i INVENTORY
   play.yml -f N`, where play.yml runs `edgeq.fleet.model` (state present, the
   same model, the same known_hosts), the collection built by `edgeq ansible
   build` and installed by ansible-galaxy into a temporary folder. Interleaved
   (the order alternates run by run), medians of --repeat runs; the crossover
   from a linear fit (fixed cost + cost per device) of each tool.
2. A shaped link: a network namespace created for the run, its `lo` up, an
   HTB root qdisc on that `lo` holding every packet to a device address
   (127.0.0.0/8 except 127.0.0.1, the client's source) to --rate-mbit in total;
   the devices AND the client run inside the namespace (this script again,
   under `ip netns exec`). --shaped-devices x --shaped-size-mb with `edgeq
   deploy -i` at concurrency 64 and 16, against bytes / bandwidth. Goal: <= 1.25x.
   --shaped-ansible adds `ansible-playbook -f DEVICES` on the same link (no goal).
   The shaping is checked by HTB's byte counters and by a raw TCP transfer.

Every timed deploy is a first deploy of the model: its folder on the devices
is removed between runs (untimed). edgeq's device scripts stay, as on any
device edgeq has worked with (an untimed warm-up installs them). edgeq is
byte-compiled first, as pip leaves an installed wheel. Everything is cleaned
up on exit, Ctrl-C or error: the namespace, sshd's, users, folders.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import sshd  # noqa: E402  (tests/sshd.py: real sshd devices on loopback)
from bench_deploy import timed, write_model  # noqa: E402  (the deploy benchmark's helpers, beside this script)

BIN = ROOT / ".venv" / "bin"
EDGEQ = [str(BIN / "edgeq")] if (BIN / "edgeq").exists() else [sys.executable, "-m", "edgeq"]
BASE_TAG = "benchfleet"  # temporary folders: /tmp/edgeq-sshd-<pid>-benchfleet-*
NS_PREFIX = "edgeq-bench-"
MB = 1_000_000


def program(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


class Fleet:
    """N sshd devices, a client key and HOME, a model: what both parts deploy with."""

    def __init__(self, size_bytes: int, count: int):
        self.base = Path(tempfile.mkdtemp(prefix=f"edgeq-sshd-{os.getpid()}-{BASE_TAG}-"))
        self.base.chmod(0o711)
        client = self.base / "client"
        client.mkdir(mode=0o700)
        self.key = sshd.make_key(client / "id_ed25519", comment="edgeq-bench")
        self.factory = sshd.DeviceFactory(self.base, self.key)
        self.home = self.base / "home"  # HOME of the runs: no ~/.ssh nor ~/.ansible of the person running this
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        self.ssh_config = self.home / ".ssh" / "config"
        self.ssh_config.write_text(f"Host *\n  IdentityFile {self.key.path}\n")
        self.env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "EDGEQ_SSH_PASSWORD")}
        self.env.update(HOME=str(self.home), COLUMNS="120")
        self.model = write_model(self.base / "model.tflite", size_bytes, 1)
        self.size_bytes = size_bytes
        try:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:  # useradd + ssh-keygen + sshd: ~0.2 s each
                self.devices = list(pool.map(lambda i: self.factory.start_device(f"fleet{i}"), range(count)))
        except BaseException:
            self.close()
            raise
        self.devices.sort(key=lambda d: d.name)

    def close(self) -> None:
        self.factory.stop_all()
        shutil.rmtree(self.base, ignore_errors=True)

    def known_hosts(self, devices) -> Path:
        path = self.base / f"known_hosts.{len(devices)}"
        path.write_text("".join(d.known_hosts_line() + "\n" for d in devices))
        return path

    def inventory(self, devices) -> Path:
        path = self.base / f"fleet.{len(devices)}.yml"
        lines = ["all:", "  hosts:"]
        for d in devices:
            lines += [
                f"    {d.name}:",
                f"      ansible_host: {d.host}",
                f"      ansible_port: {d.port}",
                f"      ansible_user: {d.user}",
                f"      ansible_ssh_private_key_file: {self.key.path}",
            ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def clean(self, devices) -> None:
        for device in devices:
            shutil.rmtree(device.home / "edgeq" / "models", ignore_errors=True)

    def check_deployed(self, devices, tool: str) -> None:
        missing = [d.name for d in devices if not (d.home / "edgeq" / "models" / "bench" / "current").exists()]
        if missing:
            raise SystemExit(f"bench_fleet: {tool} left no active model on {len(missing)} devices: {missing[:5]}")

    def run(self, argv: list[str], env: dict | None = None, cwd: Path | None = None) -> None:
        done = subprocess.run(argv, env=env or self.env, capture_output=True, text=True, cwd=cwd)
        if done.returncode != 0:
            raise SystemExit(
                f"bench_fleet: failed ({done.returncode}): {' '.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )

    def edgeq_deploy(self, inventory: Path, known: Path, concurrency: int) -> None:
        self.run(
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
                "--ssh-config",  # ssh -G reads ~ from the passwd entry, not $HOME
                str(self.ssh_config),
                "--concurrency",
                str(concurrency),
                "--retries",
                "0",
            ]
        )


# --------------------------------------------------------------------------- part 1: edgeq against ansible-playbook


class Ansible:
    """The edgeq.fleet collection built by `edgeq ansible build`, installed by ansible-galaxy; `ansible-playbook` runs."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        folder = fleet.base / "collection"
        done = subprocess.run(
            EDGEQ + ["ansible", "build", "-o", str(folder)], env=fleet.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"bench_fleet: edgeq ansible build failed: {done.stderr.strip()}")
        tarball = done.stdout.strip().splitlines()[-1]
        installed = folder / "collections"
        fleet.run([program("ansible-galaxy"), "collection", "install", "-p", str(installed), tarball])
        self.env = dict(
            fleet.env,
            ANSIBLE_COLLECTIONS_PATH=str(installed),
            ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_GATHERING="explicit",
            ANSIBLE_RETRY_FILES_ENABLED="false",
            ANSIBLE_LOCALHOST_WARNING="false",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
            ANSIBLE_DEPRECATION_WARNINGS="false",
        )

    def playbook(self, known: Path) -> Path:
        path = self.fleet.base / f"play.{known.suffix.lstrip('.')}.yml"
        path.write_text(
            "- hosts: all\n"
            "  gather_facts: false\n"
            "  tasks:\n"
            "    - name: deploy\n"
            "      edgeq.fleet.model:\n"
            f"        path: {self.fleet.model}\n"
            "        name: bench\n"
            "        state: present\n"
            f"        known_hosts: {known}\n"
            "        retries: 0\n"
        )
        return path

    def run(self, inventory: Path, play: Path, forks: int) -> None:
        self.fleet.run(
            [program("ansible-playbook"), "-i", str(inventory), str(play), "-f", str(forks)],
            env=self.env,
            cwd=self.fleet.base,
        )


class Part1:
    def __init__(self, args):
        self.args = args
        self.counts = sorted(int(c) for c in args.counts.split(","))
        self.fleet = Fleet(int(args.size_mb * MB), max(self.counts))
        try:
            self.tool = Ansible(self.fleet)
        except BaseException:
            self.fleet.close()
            raise
        self.playbook, self.ansible = self.tool.playbook, self.tool.run

    def measure(self) -> dict:
        fleet = self.fleet
        setups = {}
        for count in self.counts:
            devices = fleet.devices[:count]
            known = fleet.known_hosts(devices)
            setups[count] = (devices, fleet.inventory(devices), known, self.playbook(known))
        # untimed warm-up: edgeq's scripts onto every device, edgeq's inventory cache, Ansible's first start
        devices, inventory, known, play = setups[max(self.counts)]
        fleet.edgeq_deploy(inventory, known, len(devices))
        fleet.clean(devices)
        devices, inventory, known, play = setups[min(self.counts)]
        self.ansible(inventory, play, len(devices))
        fleet.clean(devices)
        for count, (devices, inventory, known, _play) in setups.items():
            fleet.edgeq_deploy(inventory, known, count)  # the inventory cache of each inventory
            fleet.clean(devices)

        samples = {count: {"edgeq": [], "ansible": []} for count in self.counts}
        for round_ in range(self.args.repeat):
            for count, (devices, inventory, known, play) in setups.items():
                runs = [
                    ("edgeq", lambda i=inventory, k=known, n=count: fleet.edgeq_deploy(i, k, n)),
                    ("ansible", lambda i=inventory, p=play, n=count: self.ansible(i, p, n)),
                ]
                if round_ % 2:  # alternate which goes first, so that drifts in machine load hit both alike
                    runs.reverse()
                for tool, run in runs:
                    fleet.clean(devices)
                    samples[count][tool].append(timed(run))
                    fleet.check_deployed(devices, tool)
                    print(f"  [{count} devices] {tool}: {samples[count][tool][-1]:.2f} s", file=sys.stderr)
                fleet.clean(devices)
        return samples


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares t = fixed + per_device * n."""
    n = [p[0] for p in points]
    t = [p[1] for p in points]
    mean_n, mean_t = statistics.fmean(n), statistics.fmean(t)
    slope = sum((a - mean_n) * (b - mean_t) for a, b in zip(n, t)) / sum((a - mean_n) ** 2 for a in n)
    return mean_t - slope * mean_n, slope


def report_part1(args, samples: dict) -> None:
    print(
        f"\n## 1. `edgeq deploy -i` against `ansible-playbook` + edgeq.fleet, {args.size_mb:g} MB, no shaping "
        f"(median of {args.repeat}; concurrency = forks = devices)\n"
    )
    print("| devices | edgeq s | ansible-playbook s | ansible / edgeq |")
    print("|---:|---:|---:|---:|")
    med = {}
    for count, runs in samples.items():
        e, a = statistics.median(runs["edgeq"]), statistics.median(runs["ansible"])
        med[count] = (e, a)
        print(f"| {count} | {e:.2f} | {a:.2f} | {a / e:.2f}x |")
    if len(med) >= 2:
        e_fixed, e_per = fit([(n, v[0]) for n, v in med.items()])
        a_fixed, a_per = fit([(n, v[1]) for n, v in med.items()])
        print(
            f"\nLinear fit: edgeq {e_fixed:.2f} s + {e_per * 1000:.0f} ms/device; "
            f"ansible-playbook {a_fixed:.2f} s + {a_per * 1000:.0f} ms/device."
        )
        if a_per > e_per and a_fixed < e_fixed:
            print(f"Crossover: ansible-playbook is faster below ~{(e_fixed - a_fixed) / (a_per - e_per):.0f} devices.")
        elif a_per < e_per and a_fixed > e_fixed:
            print(f"Crossover: ansible-playbook is faster above ~{(a_fixed - e_fixed) / (e_per - a_per):.0f} devices.")
        else:
            faster = "edgeq" if all(e < a for e, a in med.values()) else "mixed"
            print(f"No crossover in the fit: {'edgeq is faster at every size' if faster == 'edgeq' else 'mixed'}.")


# --------------------------------------------------------------------------- part 2: a shaped link in a namespace


def tc_classes(ns: str | None = None) -> dict[str, dict[str, int]]:
    """HTB classes on lo: {classid: {bytes, packets, dropped}} (of this namespace, or of ``ns``)."""
    argv = ["tc"] + (["-n", ns] if ns else []) + ["-s", "class", "show", "dev", "lo"]
    text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    out = {}
    for match in re.finditer(r"class htb (\S+) .*?Sent (\d+) bytes (\d+) pkt \(dropped (\d+)", text, re.S):
        out[match[1]] = {"bytes": int(match[2]), "packets": int(match[3]), "dropped": int(match[4])}
    return out


def shape(ns: str, rate_mbit: float) -> list[str]:
    """HTB on the namespace's lo: to 127.0.0.0/8 except 127.0.0.1 -> 1:10 at rate_mbit; the rest -> 1:20."""
    commands = [
        ["ip", "netns", "add", ns],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "20"],
        # burst: lo sends 64 KB (GSO) packets; quantum given so that HTB does not warn (no borrowing here)
        *(
            ["tc", "-n", ns, "class", "add", "dev", "lo", "parent", "1:", "classid", classid, "htb"]
            + ["rate", rate, "ceil", rate, "burst", "128k", "cburst", "128k", "quantum", "65536"]
            for classid, rate in (("1:10", f"{rate_mbit:g}mbit"), ("1:20", "20gbit"))
        ),
        # the client's source address (and every device's answers) go unshaped, first match wins
        ["tc", "-n", ns, "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32"]
        + ["match", "ip", "dst", "127.0.0.1/32", "flowid", "1:20"],
        ["tc", "-n", ns, "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "2", "u32"]
        + ["match", "ip", "dst", "127.0.0.0/8", "flowid", "1:10"],
    ]
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench_fleet: {' '.join(argv)}: {done.stderr.strip()}")
    local = subprocess.run(
        ["ip", "-n", ns, "route", "show", "table", "local"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in local.splitlines() if line.strip()]


def remove_namespace(ns: str) -> None:
    """Stop what still runs in it (started by this benchmark: its sshd's, its client), then delete it."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def raw_transfer(host: str, size_bytes: int) -> float:
    """Seconds to push size_bytes over one TCP connection to host (received and counted there)."""
    server = socket.create_server((host, 0))
    port = server.getsockname()[1]
    received = [0]

    def sink() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1 << 20):
                received[0] += len(data)

    thread = threading.Thread(target=sink)
    thread.start()
    payload = bytes(1 << 20)
    started = time.perf_counter()
    with socket.create_connection((host, port)) as client:
        sent = 0
        while sent < size_bytes:
            client.sendall(payload[: min(len(payload), size_bytes - sent)])
            sent += min(len(payload), size_bytes - sent)
    thread.join()
    elapsed = time.perf_counter() - started
    server.close()
    assert received[0] == size_bytes
    return elapsed


def inside(args) -> int:
    """Part 2's measurements, run inside the namespace (``ip netns exec``): devices, client, counters."""
    size = int(args.shaped_size_mb * MB)
    result: dict = {"runs": {}, "raw": {}}
    # the shaping itself, before any device: one TCP stream to a device-range address and one to 127.0.0.1
    probe_bytes = 14 * MB
    result["raw"]["device address 127.0.0.254"] = probe_bytes * 8 / raw_transfer("127.0.0.254", probe_bytes) / 1e6
    result["raw"]["client address 127.0.0.1"] = probe_bytes * 8 / raw_transfer("127.0.0.1", probe_bytes) / 1e6
    fleet = Fleet(size, args.shaped_devices)
    try:
        result["addresses"] = sorted({d.host for d in fleet.devices}, key=lambda h: int(h.rsplit(".", 1)[1]))
        known = fleet.known_hosts(fleet.devices)
        inventory = fleet.inventory(fleet.devices)
        small = fleet.base / "warm.tflite"  # untimed warm-up: edgeq's scripts, the inventory cache
        write_model(small, 100_000, 2)
        fleet.run(
            EDGEQ
            + ["deploy", str(small), "--name", "bench", "-i", str(inventory), "--known-hosts", str(known)]
            + ["--ssh-config", str(fleet.ssh_config), "--concurrency", str(args.shaped_devices), "--retries", "0"]
        )
        fleet.clean(fleet.devices)
        runs = [
            (f"`edgeq deploy -i` --concurrency {c}", lambda c=c: fleet.edgeq_deploy(inventory, known, c))
            for c in (int(c) for c in args.shaped_concurrency.split(","))
        ]
        if args.shaped_ansible:  # opt-in: the same fleet by ansible-playbook + edgeq.fleet
            tool = Ansible(fleet)
            play = tool.playbook(known)
            forks = args.shaped_devices
            runs.append((f"`ansible-playbook -f {forks}` + edgeq.fleet", lambda: tool.run(inventory, play, forks)))
        for _ in range(args.shaped_repeat):
            for label, run in runs:
                fleet.clean(fleet.devices)
                before = tc_classes()
                wall = timed(run)
                after = tc_classes()
                fleet.check_deployed(fleet.devices, label)
                delta = {cid: {k: after[cid][k] - before.get(cid, {}).get(k, 0) for k in after[cid]} for cid in after}
                result["runs"].setdefault(label, []).append({"wall_s": wall, "classes": delta})
                print(f"  [shaped] {label}: {wall:.1f} s", file=sys.stderr)
        fleet.clean(fleet.devices)
    finally:
        fleet.close()
    Path(args.result).write_text(json.dumps(result))
    return 0


def part2(args) -> dict:
    ns = f"{NS_PREFIX}{os.getpid()}"
    results = Path(tempfile.mkdtemp(prefix=f"edgeq-{BASE_TAG}-{os.getpid()}-"))
    child = None
    try:
        local_routes = shape(ns, args.rate_mbit)
        argv = ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).resolve()), "--inside"]
        argv += ["--result", str(results / "part2.json"), "--shaped-devices", str(args.shaped_devices)]
        argv += ["--shaped-size-mb", str(args.shaped_size_mb), "--shaped-concurrency", args.shaped_concurrency]
        argv += ["--shaped-repeat", str(args.shaped_repeat)] + (["--shaped-ansible"] if args.shaped_ansible else [])
        child = subprocess.Popen(argv)
        try:
            code = child.wait()
        except BaseException as exc:  # let the child stop its devices (Ctrl-C reached it too; a TERM did not)
            if not isinstance(exc, KeyboardInterrupt):
                child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=30)
            raise
        if code != 0:
            raise SystemExit(f"bench_fleet: part 2 inside {ns} failed ({code})")
        data = json.loads((results / "part2.json").read_text())
        data["local_routes"] = local_routes
        data["qdisc"] = subprocess.run(
            ["tc", "-n", ns, "-s", "class", "show", "dev", "lo"], capture_output=True, text=True
        ).stdout
        return data
    finally:
        remove_namespace(ns)
        if child is not None:
            if child.poll() is None:
                child.kill()
                child.wait()
            for leftover in Path(tempfile.gettempdir()).glob(f"edgeq-sshd-{child.pid}-{BASE_TAG}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        sshd.remove_stale_users()  # the child's users (its pid is gone)
        shutil.rmtree(results, ignore_errors=True)


def report_part2(args, data: dict) -> None:
    size = int(args.shaped_size_mb * MB)
    total = size * args.shaped_devices
    limit_s = total * 8 / (args.rate_mbit * 1e6)
    print(
        f"\n## 2. Shaped link: {args.shaped_devices} devices x {args.shaped_size_mb:g} MB, "
        f"HTB {args.rate_mbit:g} Mbit/s in total to the devices (network namespace)\n"
    )
    print(f"Physical limit: {total / MB:.0f} MB x 8 / {args.rate_mbit:g} Mbit/s = {limit_s:.1f} s.\n")
    print("| run | wall s | / limit | bytes through the shaped class | its rate | other class | drops |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    verdicts = []
    for label, runs in data["runs"].items():
        wall = statistics.median(r["wall_s"] for r in runs)
        shaped = statistics.median(r["classes"].get("1:10", {}).get("bytes", 0) for r in runs)
        other = statistics.median(r["classes"].get("1:20", {}).get("bytes", 0) for r in runs)
        drops = statistics.median(r["classes"].get("1:10", {}).get("dropped", 0) for r in runs)
        ratio = wall / limit_s
        verdicts.append((label, ratio))
        print(
            f"| {label} (median of {len(runs)}) | {wall:.1f} | {ratio:.2f}x "
            f"| {shaped / MB:.1f} MB ({shaped / total:.3f}x payload) | {shaped * 8 / wall / 1e6:.1f} Mbit/s "
            f"| {other / MB:.2f} MB | {drops:.0f} |"
        )
    print("\nShaping checks:")
    for target, mbit in data["raw"].items():
        print(f"- one raw TCP stream of 14 MB to {target}: {mbit:.0f} Mbit/s")
    addresses = data.get("addresses", [])
    if addresses:
        print(f"- devices on {addresses[0]} .. {addresses[-1]} ({len(addresses)}), client source 127.0.0.1")
    print("- local routes in the namespace: " + "; ".join(line.strip() for line in data["local_routes"]))
    print("- classes after the runs (tc -s class show dev lo):")
    print("\n".join(f"      {line}" for line in data["qdisc"].splitlines() if line.strip()))
    print()
    for label, ratio in verdicts:
        if "ansible" in label:
            print(f"Reference (no goal), {label}: {ratio:.2f}x bytes / bandwidth.")
            continue
        verdict = "met" if ratio <= 1.25 else "NOT met"
        print(f"Goal <= 1.25x bytes / bandwidth, {label}: {verdict} ({ratio:.2f}x).")


# --------------------------------------------------------------------------- clean-up, checks, main


def cleanup_stale() -> int:
    """Namespaces, sshd's, users and folders of benchmark runs whose process is gone."""
    for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        pid = name[len(NS_PREFIX) :]
        if name.startswith(NS_PREFIX) and pid.isdigit() and not pid_alive(int(pid)):
            remove_namespace(name)
            print(f"removed namespace {name}")
    pattern = re.compile(rf"/edgeq-sshd-(\d+)-{BASE_TAG}-")
    for pid, _ppid, state in sshd._proc_table():  # sshd's of dead runs (root processes: users' removal misses them)
        if state == "Z":
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            match = pattern.search(cmd)
            if match and cmd.startswith(sshd.SSHD) and not pid_alive(int(match[1])):
                os.kill(pid, signal.SIGKILL)
                print(f"stopped sshd {pid}")
    sshd.remove_stale_users()
    for folder in Path(tempfile.gettempdir()).glob(f"edgeq-sshd-*-{BASE_TAG}-*"):
        owner = folder.name.split("-")[2]
        if owner.isdigit() and not pid_alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
            print(f"removed {folder}")
    return 0


def cannot_run(parts: set[str]) -> str | None:
    reason = sshd.available()
    if reason:
        return f"cannot start sshd devices: {reason}"
    if "2" in parts:
        for tool in ("ip", "tc"):
            if not shutil.which(tool):
                return f"part 2 needs `{tool}` (iproute2): not found"
        probe = f"{NS_PREFIX}check-{os.getpid()}"
        done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        if done.returncode != 0:
            return f"part 2 cannot create a network namespace: {done.stderr.strip()}"
    if "1" in parts and not Path(program("ansible-playbook")).exists() and not shutil.which("ansible-playbook"):
        return "part 1 needs ansible-playbook (ansible-core) beside this Python or on PATH"
    return None


def versions() -> str:
    import paramiko

    openssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip().split(",")[0]
    core = subprocess.run([program("ansible-playbook"), "--version"], capture_output=True, text=True).stdout
    core = core.splitlines()[0].split("core ")[-1].rstrip("]") if core else "absent"
    from edgeq import __version__

    return (
        f"edgeq {__version__}, {openssh}, paramiko {paramiko.__version__}, ansible-core {core}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, kernel {os.uname().release}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("1", "2", "all"), default="all")
    parser.add_argument("--repeat", type=int, default=3, help="part 1: runs per tool and size (median)")
    parser.add_argument("--size-mb", type=float, default=2.0, help="part 1: model size")
    parser.add_argument("--counts", default="8,32,64", help="part 1: fleet sizes")
    parser.add_argument("--shaped-devices", type=int, default=64)
    parser.add_argument("--shaped-size-mb", type=float, default=14.0)
    parser.add_argument("--shaped-concurrency", default="64,16", help="part 2: edgeq's --concurrency values")
    parser.add_argument("--shaped-repeat", type=int, default=1, help="part 2: runs per concurrency (~75 s each)")
    parser.add_argument(
        "--shaped-ansible", action="store_true", help="part 2: also ansible-playbook -f DEVICES (opt-in, ~75 s a run)"
    )
    parser.add_argument("--rate-mbit", type=float, default=100.0)
    parser.add_argument("--cleanup", action="store_true", help="remove what killed runs left, and exit")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)  # part 2 in its namespace
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on kill as on Ctrl-C
    if args.cleanup:
        return cleanup_stale()
    if args.inside:
        return inside(args)
    parts = {"1", "2"} if args.part == "all" else {args.part}
    reason = cannot_run(parts)
    if reason:
        print(f"bench_fleet: {reason}", file=sys.stderr)
        return 2
    sshd.remove_stale_users()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "edgeq")], check=True, stdout=subprocess.DEVNULL
    )
    print(f"# edgeq fleet benchmark: loopback sshd's; {versions()}")
    if "1" in parts:
        bench = Part1(args)
        try:
            samples = bench.measure()
        finally:
            bench.fleet.close()
        report_part1(args, samples)
        sys.stdout.flush()
    if "2" in parts:
        report_part2(args, part2(args))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the finally blocks have run: namespace, sshd's, users and folders are gone
        if "--inside" not in sys.argv:
            print("bench_fleet: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
