#!/usr/bin/env python3
"""Synthetic lab traffic: real services, scripted clients and real attack tools in namespaces.

This is a test bench for end-to-end tests and operational measurements (a live sensor on a veth,
replay throughput). Its traffic is synthetic lab traffic: it is never pooled with the real
datasets, and no figure from it enters the real-dataset quality tables.

Topology (every address is inside namespaces this script creates; nothing is routed out)::

    PREFIX-srv  eth0 10.77.1.2  --  r-srv  \\
    PREFIX-c1   eth0 10.77.11.2 --  r-c1    |  PREFIX-rt (router, ip_forward=1)
    ...                                     |
    PREFIX-a1   eth0 10.77.101.2 -- r-a1   /

Every client and attacker reaches the server through the router, so one capture on the router's
server-side veth (``r-srv`` in ``PREFIX-rt``) sees all the traffic that involves the server. The
server runs nginx (HTTP, with a basic-auth area), OpenSSH, an FTP server (pyftpdlib) and dnsmasq
(DNS), each on its own configuration in a temporary folder.

Subcommands: ``check`` (what is missing), ``run`` (up, capture, benign clients plus an attack
schedule, labels, down), ``up`` (keep the lab up and print where to capture, optionally with
traffic, until a duration or Ctrl-C), ``down`` (remove what a killed run left), ``label`` (pcap +
labels -> labelled flow table through ``sculpt extract``), ``replay`` (tcpreplay onto a veth).

Everything except ``label`` needs only the standard library, so it runs under any Python 3.10+.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

SYNTHETIC_NOTICE = (
    "synthetic lab traffic (benchmarks/lab): for end-to-end tests and operational measurements "
    "only; never pool it with real datasets or report it in the real-dataset quality tables"
)

DEFAULT_PREFIX = "sclab"
# A private /16 that lives only inside the lab's namespaces; leaf k gets 10.77.k.0/24.
NET = "10.77"
SERVER_LEAF = 1
CLIENT_LEAF0 = 11
ATTACKER_LEAF0 = 101
CAPTURE_INTERFACE = "r-srv"
DOMAIN = "lab.test"

FTP_USER, FTP_PASSWORD = "labftp", "ftp-lab-pass"
HTTP_USER, HTTP_PASSWORD = "webadmin", "s3cret-lab"
# Tiny guessing lists: the attacks are bounded by these sizes as well as by time.
GUESS_USERS = ["admin", "root", "test", "labftp", "webadmin"]
GUESS_PASSWORDS = "123456 password admin letmein qwerty welcome changeme s3cret-lab".split()

# Files the web and FTP servers offer; sizes chosen to span small pages to large downloads.
FILE_SIZES = [512, 2_048, 8_192, 32_768, 131_072, 524_288]

REQUIRED_TOOLS = {
    "ip": "iproute2",
    "tcpdump": "tcpdump",
    "curl": "curl",
    "nginx": "nginx-light",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "dnsmasq": "dnsmasq-base",
    "getent": "libc-bin",
}
ATTACK_TOOLS = {
    "nmap": "nmap",
    "hydra": "hydra",
    "hping3": "hping3",
    "slowhttptest": "slowhttptest",
    "masscan": "masscan",
}
REPLAY_TOOLS = {"tcpreplay": "tcpreplay", "tcpdump": "tcpdump", "ip": "iproute2"}
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3, where python3-pyftpdlib installs


class LabError(RuntimeError):
    """The lab could not be set up, run or torn down; the message names the step."""


# --------------------------------------------------------------------------------------------
# Requirements


def which(tool: str) -> str | None:
    """Path of ``tool``, also looking in the sbin folders that a non-login PATH may lack."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(tool, path=path)


def missing_requirements(*, attacks: Sequence[str] = (), replay: bool = False) -> list[str]:
    """Reasons the lab cannot run here, empty when it can.

    Parameters
    ----------
    attacks : sequence of str
        Attack names (keys of :data:`ATTACKS`) whose tools must be present.
    replay : bool
        Check only what ``replay`` needs (tcpreplay, tcpdump, ip) instead of the services.
    """
    reasons = []
    if os.geteuid() != 0:
        reasons.append("not root (network namespaces, raw sockets and tcpdump need root)")
    tools = dict(REPLAY_TOOLS) if replay else dict(REQUIRED_TOOLS)
    for name in attacks:
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; known: {sorted(ATTACKS)}")
        tools[ATTACKS[name].tool] = ATTACK_TOOLS[ATTACKS[name].tool]
    for tool, package in sorted(tools.items()):
        if which(tool) is None:
            reasons.append(f"{tool} missing (Debian package {package}; benchmarks/lab/install.sh)")
    if not replay:
        if not Path(SYSTEM_PYTHON).exists():
            reasons.append(f"{SYSTEM_PYTHON} missing (the FTP server runs on Debian's python3)")
        else:
            probe = subprocess.run(
                [SYSTEM_PYTHON, "-c", "import pyftpdlib"], capture_output=True, check=False
            )
            if probe.returncode != 0:
                reasons.append("pyftpdlib missing for /usr/bin/python3 (python3-pyftpdlib)")
    if os.geteuid() == 0 and which("ip") is not None:
        probe_ns = f"sclabprobe{os.getpid()}"
        made = subprocess.run(["ip", "netns", "add", probe_ns], capture_output=True, check=False)
        if made.returncode != 0:
            reasons.append(f"ip netns add failed: {made.stderr.decode().strip()}")
        else:
            subprocess.run(["ip", "netns", "del", probe_ns], capture_output=True, check=False)
    return reasons


# --------------------------------------------------------------------------------------------
# Bounded processes


class Processes:
    """Every process the lab starts, each in its own session so that its whole group can end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[subprocess.Popen] = []

    def start(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        with self._lock:
            self._live.append(proc)
        return proc

    def forget(self, proc: subprocess.Popen) -> None:
        with self._lock:
            if proc in self._live:
                self._live.remove(proc)

    @staticmethod
    def end(proc: subprocess.Popen, grace: float = 3.0) -> int:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; the exit status."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def end_all(self) -> None:
        with self._lock:
            live, self._live = list(reversed(self._live)), []
        for proc in live:
            self.end(proc)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stop: threading.Event | None = None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd: str | Path | None = None,
        sigint_first: bool = False,
    ) -> tuple[int, bool]:
        """Run to completion, or end it at ``timeout`` seconds or when ``stop`` is set.

        ``sigint_first`` sends SIGINT before SIGTERM, for tools that print their summary on
        SIGINT. Returns the exit status and whether the process had to be ended.
        """
        proc = self.start(argv, stdout=stdout, stderr=stderr, cwd=cwd)
        deadline = time.monotonic() + timeout
        ended = False
        try:
            while proc.poll() is None:
                if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                    ended = True
                    if sigint_first:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGINT)
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(3)
                    self.end(proc)
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.2)
        finally:
            self.forget(proc)
        return proc.returncode, ended


def _sh(argv: str | Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    """Run a short setup command; a failure raises LabError with the command and its stderr.

    A string is split on white space (the lab's names and addresses hold none).
    """
    argv = argv.split() if isinstance(argv, str) else list(argv)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


# --------------------------------------------------------------------------------------------
# Topology


@dataclass(frozen=True)
class Host:
    """One leaf namespace: its name, its role, its address and its router's address."""

    netns: str
    role: str  # server, client or attacker
    index: int
    address: str
    gateway: str
    router_if: str


def leaf_addresses(leaf: int) -> tuple[str, str]:
    if not 1 <= leaf <= 254:
        raise ValueError(f"leaf number {leaf} out of 1..254")
    return f"{NET}.{leaf}.2", f"{NET}.{leaf}.1"


def lab_namespaces(prefix: str) -> list[str]:
    """Namespaces that exist now and belong to a lab with this prefix."""
    done = _sh(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix + "-")]


def _check_prefix(prefix: str) -> str:
    # Namespace names become /etc/netns/NAME and /run/netns/NAME: keep them plain.
    if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", prefix):
        raise ValueError(f"prefix {prefix!r}: use 1-12 lower-case letters/digits, a letter first")
    return prefix


class Lab:
    """The namespaces, veths and services of one lab; a context manager that always tears down.

    Parameters
    ----------
    prefix : str
        Prefix of every namespace name (``PREFIX-rt``, ``PREFIX-srv``, ``PREFIX-c1``, ...).
    clients, attackers : int
        Numbers of benign-client and attacker namespaces.
    workdir : path, optional
        Folder for configurations, keys, served files and logs; a temporary one (removed at the
        end) when not given.
    """

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        *,
        clients: int = 3,
        attackers: int = 4,
        workdir: str | Path | None = None,
    ) -> None:
        self.prefix = _check_prefix(prefix)
        if not 1 <= clients <= 40:
            raise ValueError(f"clients must be in 1..40, got {clients}")
        if not 1 <= attackers <= 40:
            raise ValueError(f"attackers must be in 1..40, got {attackers}")
        self.router = f"{prefix}-rt"
        self.server = self._host("server", 0, SERVER_LEAF, f"{prefix}-srv", "r-srv")
        self.clients = [
            self._host("client", i, CLIENT_LEAF0 + i - 1, f"{prefix}-c{i}", f"r-c{i}")
            for i in range(1, clients + 1)
        ]
        self.attackers = [
            self._host("attacker", i, ATTACKER_LEAF0 + i - 1, f"{prefix}-a{i}", f"r-a{i}")
            for i in range(1, attackers + 1)
        ]
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.procs = Processes()
        self._services: dict[str, subprocess.Popen] = {}
        self._up = False

    @staticmethod
    def _host(role: str, index: int, leaf: int, netns: str, router_if: str) -> Host:
        address, gateway = leaf_addresses(leaf)
        return Host(netns, role, index, address, gateway, router_if)

    @property
    def leaves(self) -> list[Host]:
        return [self.server, *self.clients, *self.attackers]

    @property
    def namespaces(self) -> list[str]:
        return [self.router, *(h.netns for h in self.leaves)]

    def describe(self) -> dict:
        """Where to capture and who is who, for a sensor or a test."""
        return {
            "notice": SYNTHETIC_NOTICE,
            "capture_netns": self.router,
            "capture_interface": CAPTURE_INTERFACE,
            "capture_command": f"ip netns exec {self.router} <sensor> --interface "
            f"{CAPTURE_INTERFACE}",
            "server": self.server.address,
            "clients": [h.address for h in self.clients],
            "attackers": [h.address for h in self.attackers],
            "namespaces": self.namespaces,
            "services": {"http": 80, "ssh": 22, "ftp": 21, "dns": 53},
            "domain": DOMAIN,
        }

    def exec_argv(self, netns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", netns, *argv]

    # -- bring up ---------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        """Create namespaces, veths, addresses, routes and services; undo all of it on error."""
        leftovers = sorted(set(lab_namespaces(self.prefix)) & set(self.namespaces))
        if leftovers:
            raise LabError(
                f"namespaces {leftovers} already exist: another lab with prefix "
                f"{self.prefix!r} is running, or a killed one left them (lab.py down "
                f"--prefix {self.prefix})"
            )
        self._up = True
        try:
            if self.workdir is None:
                self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-lab-"))
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "logs").mkdir(exist_ok=True)
            self._network()
            self._files()
            self._services_start()
        except BaseException:
            self.down()
            raise

    def _network(self) -> None:
        for netns in self.namespaces:
            _sh(["ip", "netns", "add", netns])
            _sh(["ip", "-n", netns, "link", "set", "lo", "up"])
            # No IPv6: its link-local chatter (router solicitations, MLD) is not lab traffic.
            for key in ("all", "default"):
                _sh(f"ip netns exec {netns} sysctl -qw net.ipv6.conf.{key}.disable_ipv6=1")
        _sh(self.exec_argv(self.router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
        for host in self.leaves:
            # Create the pair inside the router namespace, then move one end to the leaf, so
            # that no interface ever appears in the machine's own namespace.
            _sh(
                f"ip -n {self.router} link add {host.router_if} type veth peer name eth0 "
                f"netns {host.netns}"
            )
            _sh(f"ip -n {self.router} addr add {host.gateway}/24 dev {host.router_if}")
            _sh(f"ip -n {host.netns} addr add {host.address}/24 dev eth0")
            _sh(["ip", "-n", self.router, "link", "set", host.router_if, "up"])
            _sh(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
            _sh(["ip", "-n", host.netns, "route", "add", "default", "via", host.gateway])
            # `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf, so
            # lookups in a leaf go to the lab's dnsmasq and nowhere else.
            etc = Path("/etc/netns") / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(
                f"nameserver {self.server.address}\noptions timeout:1 attempts:1\n"
            )

    def _files(self) -> None:
        assert self.workdir is not None
        # nginx workers run as nobody: the tree they read must be traversable.
        os.chmod(self.workdir, 0o755)
        www = self.workdir / "www"
        (www / "files").mkdir(parents=True, exist_ok=True)
        (www / "private").mkdir(exist_ok=True)
        ftp = self.workdir / "ftp"
        (ftp / "upload").mkdir(parents=True, exist_ok=True)
        rng = random.Random(20240607)
        for size in FILE_SIZES:
            blob = rng.randbytes(size)  # incompressible, like media downloads
            (www / "files" / f"f{size}.bin").write_bytes(blob)
            (ftp / f"f{size}.bin").write_bytes(blob)
        links = "".join(f'<a href="/files/f{s}.bin">f{s}</a>\n' for s in FILE_SIZES)
        (www / "index.html").write_text(f"<html><body><h1>lab</h1>\n{links}</body></html>\n")
        for i in range(8):
            body = "".join(f"<p>line {j} of page {i}</p>\n" for j in range(rng.randint(5, 400)))
            (www / f"page{i}.html").write_text(f"<html><body>{body}</body></html>\n")
        (www / "private" / "index.html").write_text("<html><body>private</body></html>\n")
        salt = rng.randbytes(8)
        digest = hashlib.sha1(HTTP_PASSWORD.encode() + salt).digest()
        ssha = base64.b64encode(digest + salt).decode()
        (self.workdir / "htpasswd").write_text(f"{HTTP_USER}:{{SSHA}}{ssha}\n")
        tmp = self.workdir / "nginx-tmp"
        tmp.mkdir(exist_ok=True)
        os.chmod(tmp, 0o777)
        for path in [www, *www.rglob("*"), self.workdir / "htpasswd"]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def _services_start(self) -> None:
        assert self.workdir is not None
        w, srv = self.workdir, self.server
        logs = w / "logs"
        (w / "nginx.conf").write_text(
            f"""worker_processes 1;
user nobody nogroup;
pid {w}/nginx.pid;
error_log {logs}/nginx-error.log warn;
daemon off;
events {{ worker_connections 2048; }}
http {{
    access_log {logs}/nginx-access.log;
    client_body_temp_path {w}/nginx-tmp/body;
    proxy_temp_path {w}/nginx-tmp/proxy;
    fastcgi_temp_path {w}/nginx-tmp/fastcgi;
    uwsgi_temp_path {w}/nginx-tmp/uwsgi;
    scgi_temp_path {w}/nginx-tmp/scgi;
    types {{ text/html html; application/octet-stream bin; }}
    server {{
        listen {srv.address}:80;
        root {w}/www;
        location /private/ {{
            auth_basic "lab";
            auth_basic_user_file {w}/htpasswd;
        }}
        # A proxied POST is read whole before it is answered (as an application server's
        # would be), so a slow POST holds its connection; `return` alone would not read it.
        location = /submit {{ proxy_pass http://127.0.0.1:8080; }}
    }}
    server {{
        listen 127.0.0.1:8080;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
        )
        ssh = w / "ssh"
        ssh.mkdir(exist_ok=True)
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "host_key")])
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "client_key")])
        shutil.copy(ssh / "client_key.pub", ssh / "authorized_keys")
        # Only root may log in, and only with the lab's key: password guessing always fails.
        (ssh / "sshd_config").write_text(
            f"""Port 22
ListenAddress {srv.address}
HostKey {ssh}/host_key
PidFile {ssh}/sshd.pid
UsePAM no
AllowUsers root
PermitRootLogin prohibit-password
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {ssh}/authorized_keys
StrictModes no
MaxStartups 50:30:200
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
"""
        )
        # sshd refuses to start without its privilege-separation folder.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = which("sshd") or "/usr/sbin/sshd"
        starts = {
            "nginx": [which("nginx") or "nginx", "-c", f"{w}/nginx.conf", "-p", str(w)],
            "sshd": [sshd, "-D", "-e", "-f", str(ssh / "sshd_config")],
            "ftp": [
                SYSTEM_PYTHON,
                *f"-m pyftpdlib -i {srv.address} -p 21 -d {w}/ftp -w -r 60000-60199".split(),
                *["-u", FTP_USER, "-P", FTP_PASSWORD],
            ],
            "dnsmasq": [
                which("dnsmasq") or "dnsmasq",
                # Its own configuration only: no upstream, no /etc/hosts, only the lab's names.
                *"--keep-in-foreground --log-facility=- --conf-file=/dev/null --no-resolv "
                "--no-hosts --bind-interfaces --user=root".split(),
                f"--listen-address={srv.address}",
                f"--address=/{DOMAIN}/{srv.address}",
                f"--pid-file={w}/dnsmasq.pid",
            ],
        }
        for name, argv in starts.items():
            log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            self._services[name] = self.procs.start(
                self.exec_argv(srv.netns, argv), stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
        self._wait_listening({"nginx": 80, "sshd": 22, "ftp": 21}, udp={"dnsmasq": 53})

    def _wait_listening(self, tcp: dict[str, int], udp: dict[str, int], timeout=15.0) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(tcp) | dict(udp)
        while pending and time.monotonic() < deadline:
            for name, proc in self._services.items():
                if proc.poll() is not None:
                    raise LabError(f"{name} exited ({proc.returncode}): {self._log_tail(name)}")
            listening = set()
            for flag in ("-Hltn", "-Hlun"):
                out = _sh(self.exec_argv(self.server.netns, ["ss", flag]), check=False).stdout
                listening |= {line.split()[3] for line in out.splitlines() if line.split()}
            pending = {
                n: p for n, p in pending.items() if f"{self.server.address}:{p}" not in listening
            }
            if pending:
                time.sleep(0.1)
        if pending:
            detail = "; ".join(f"{n}: {self._log_tail(n)}" for n in pending)
            raise LabError(f"services not listening after {timeout:.0f} s: {detail}")

    def _log_tail(self, name: str) -> str:
        assert self.workdir is not None
        path = self.workdir / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text.strip()[-400:] or "(no output)"

    def services_alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self._services.items()}

    # -- tear down --------------------------------------------------------------------------

    def down(self) -> None:
        """End every process, delete every namespace (and with it every veth), remove files."""
        if not self._up:
            return
        self.procs.end_all()
        self._services.clear()
        teardown(self.namespaces)
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._up = False


def teardown(namespaces: Sequence[str]) -> list[str]:
    """Delete these namespaces (and with them their veths) and their /etc/netns folders.

    Processes still inside them (started by a lab that was killed) are ended first: a namespace
    with a process in it outlives ``ip netns del``. Returns the namespaces that existed.
    """
    names = sorted(set(namespaces))
    existing = {n for n in names if Path("/run/netns", n).exists()}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = []
        for netns in names:
            if netns in existing:
                out = _sh(["ip", "netns", "pids", netns], check=False).stdout
                pids += [int(p) for p in out.split() if p.isdigit()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not pids:
            break
        time.sleep(1.0)
    for netns in names:
        if netns in existing:
            _sh(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(Path("/etc/netns") / netns, ignore_errors=True)
    with contextlib.suppress(OSError):  # only when empty: other labs may be up
        Path("/etc/netns").rmdir()
    stuck = [n for n in names if Path("/run/netns", n).exists()]
    if stuck:
        raise LabError(f"namespaces {stuck} are still there after ip netns del")
    return [n for n in names if n in existing]


# --------------------------------------------------------------------------------------------
# Capture


@dataclass
class CaptureStats:
    path: str
    captured: int | None = None
    received: int | None = None
    dropped: int | None = None
    stderr: str = ""


class Capture:
    """tcpdump on one interface of one namespace, writing a pcap; :meth:`stop` gives its counts."""

    def __init__(self, procs: Processes, netns: str, interface: str, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._err = tempfile.TemporaryFile()
        # -U and -B: packets reach the file as they come, and a flood does not overrun the
        # buffer; -Z root: the output folder need not be writable by the tcpdump user.
        tcpdump = which("tcpdump") or "tcpdump"
        argv = ["ip", "netns", "exec", netns, tcpdump, "-i", interface]
        argv += [*"-n -s 0 -B 16384 -U -Z root -w".split(), str(self.path)]
        self._procs = procs
        self._proc = procs.start(argv, stdout=subprocess.DEVNULL, stderr=self._err)
        # tcpdump says "listening on" once the socket is open; packets before that are lost.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self._err.seek(0)
            if b"listening on" in self._err.read():
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self._err.seek(0)
        text = self._err.read().decode(errors="replace")
        raise LabError(f"tcpdump on {netns}/{interface} did not start: {text.strip()}")

    def stop(self, settle_s: float = 1.5) -> CaptureStats:
        """Stop tcpdump after ``settle_s`` seconds; what it captured and what the kernel dropped.

        libpcap hands packets over in ring blocks that are retired when full or after tcpdump's
        1 s timeout, and SIGINT discards a block not yet retired: stopping at once lost every
        packet of a short replay (captured 0 of 848), hence the wait.
        """
        if self._proc.poll() is None:
            time.sleep(settle_s)
            os.killpg(self._proc.pid, signal.SIGINT)  # SIGINT: tcpdump flushes and counts
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                Processes.end(self._proc)
        self._procs.forget(self._proc)
        self._err.seek(0)
        text = self._err.read().decode(errors="replace")
        self._err.close()
        stats = CaptureStats(str(self.path), stderr=text.strip())
        for attr, pattern in (
            ("captured", r"(\d+) packets? captured"),
            ("received", r"(\d+) packets? received by filter"),
            ("dropped", r"(\d+) packets? dropped by kernel"),
        ):
            match = re.search(pattern, text)
            if match:
                setattr(stats, attr, int(match.group(1)))
        return stats


# --------------------------------------------------------------------------------------------
# Benign clients


@dataclass
class ClientLog:
    """What one benign client did: action counts and failures (a failure is counted, not fatal)."""

    address: str
    mean_gap_s: float
    actions: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


BENIGN_ACTIONS = {
    # name: weight. Web pages dominate, as on most networks.
    "web_page": 40,
    "web_download": 15,
    "web_post": 6,
    "web_login": 4,
    "dns_lookup": 18,
    "ftp_get": 6,
    "ftp_put": 3,
    "ssh_command": 4,
    "ssh_copy": 4,
}


def benign_argv(lab: Lab, action: str, rng: random.Random, scratch: Path) -> list[str]:
    """The client command for one benign action (run inside the client's namespace).

    ``scratch`` is a file the client may overwrite (scp needs a real target).
    """
    srv = lab.server.address
    host = rng.choice(["www", "files", "intranet"]) + f".{DOMAIN}"
    curl = ["curl", "-sS", "-o", "/dev/null", "--max-time", "20", "--connect-timeout", "5"]
    ssh_opts = ["-i", str(lab.workdir / "ssh" / "client_key")]
    for option in (
        "BatchMode=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "ConnectTimeout=5",
        "LogLevel=ERROR",
    ):
        ssh_opts += ["-o", option]
    size = rng.choice(FILE_SIZES)
    if action == "web_page":
        # One keep-alive connection for a page and some of its parts, by name (so DNS first).
        pages = [f"http://{host}/page{rng.randrange(8)}.html" for _ in range(rng.randint(1, 4))]
        # curl's -o belongs to one URL: one per URL, so nothing lands on stdout.
        more = [arg for page in pages for arg in ("-o", "/dev/null", page)]
        return [*curl, f"http://{host}/", *more]
    if action == "web_download":
        # Clients that pace their downloads look different from ones that don't.
        rate = rng.choice([None, "200k", "1M"])
        limit = ["--limit-rate", rate] if rate else []
        return [*curl, *limit, f"http://{srv}/files/f{size}.bin"]
    if action == "web_post":
        body = "x" * rng.randint(10, 4000)
        return [*curl, "-X", "POST", "--data", f"comment={body}", f"http://{host}/submit"]
    if action == "web_login":
        return [*curl, "-u", f"{HTTP_USER}:{HTTP_PASSWORD}", f"http://{srv}/private/"]
    if action == "dns_lookup":
        names = [f"{p}.{DOMAIN}" for p in ("www", "mail", "files", "intranet", "ntp")]
        names += ["printer.local", "updates.example", f"host{rng.randrange(50)}.{DOMAIN}"]
        return ["getent", "ahostsv4", rng.choice(names)]
    if action == "ftp_get":
        return [*curl, "-u", f"{FTP_USER}:{FTP_PASSWORD}", f"ftp://{srv}/f{size}.bin"]
    if action == "ftp_put":
        name = f"upload/c{rng.randrange(10_000)}.txt"
        return [
            *curl,
            "-u",
            f"{FTP_USER}:{FTP_PASSWORD}",
            "-T",
            str(lab.workdir / "www" / f"page{rng.randrange(8)}.html"),
            f"ftp://{srv}/{name}",
        ]
    if action == "ssh_command":
        cmd = rng.choice(["uptime", "uname -a", "ls /", "df -h", "cat /proc/loadavg"])
        return ["ssh", *ssh_opts, f"root@{srv}", cmd]
    if action == "ssh_copy":
        src = lab.workdir / "www" / "files" / f"f{size}.bin"
        # scp cannot write to /dev/null (it truncates its target); one scratch file per client.
        return ["scp", "-q", *ssh_opts, f"root@{srv}:{src}", str(scratch)]
    raise ValueError(f"unknown benign action {action!r}")


def run_client(
    lab: Lab,
    host: Host,
    *,
    seed: int,
    until: float,
    stop: threading.Event,
    max_actions: int = 10_000,
) -> ClientLog:
    """One benign client: seeded actions at a seeded, varying rate until ``until`` (epoch s).

    The mean gap between actions is the client's own (0.3-2.5 s), and slow and busy spells of
    about 20 s alternate, so that clients differ and rates vary within a run.
    """
    rng = random.Random(seed)
    log = ClientLog(host.address, mean_gap_s=round(rng.uniform(0.3, 2.5), 3))
    names, weights = zip(*BENIGN_ACTIONS.items(), strict=True)
    assert lab.workdir is not None
    scratch = lab.workdir / "downloads" / f"{host.netns}.bin"
    scratch.parent.mkdir(exist_ok=True)
    for _ in range(max_actions):
        now = time.time()
        if stop.is_set() or now >= until:
            break
        spell = 0.4 if int(now // 20 + seed) % 3 == 0 else 1.0  # busy spells: shorter gaps
        gap = rng.expovariate(1.0 / (log.mean_gap_s * spell))
        if stop.wait(min(gap, max(0.0, until - time.time()))):
            break
        if time.time() >= until:
            break
        action = rng.choices(names, weights)[0]
        argv = lab.exec_argv(host.netns, benign_argv(lab, action, rng, scratch))
        rc, _ = lab.procs.run(argv, timeout=min(25.0, max(1.0, until - time.time() + 5)), stop=stop)
        log.actions[action] = log.actions.get(action, 0) + 1
        # getent answers 2 for a name that does not exist: a real lookup all the same.
        if rc != 0 and not (action == "dns_lookup" and rc == 2):
            log.failures[action] = log.failures.get(action, 0) + 1
    return log


# --------------------------------------------------------------------------------------------
# Attacks


@dataclass(frozen=True)
class Attack:
    """A real attack tool's command, bounded in size or count there and in time by ``timeout_s``.

    ``command`` is a template: ``{server}`` (the target), ``{gateway}`` (the attacker's router),
    ``{users}`` and ``{passwords}`` (the tiny guessing lists) are filled in per run.
    """

    family: str
    timeout_s: float
    command: str
    summary: str

    @property
    def tool(self) -> str:
        return self.command.split()[0]

    def argv(self, lab: Lab, attacker: Host, folder: Path) -> list[str]:
        users, passwords = folder / "users.txt", folder / "passwords.txt"
        users.write_text("\n".join(GUESS_USERS) + "\n")
        passwords.write_text("\n".join(GUESS_PASSWORDS) + "\n")
        fill = {
            "server": lab.server.address,
            "gateway": attacker.gateway,
            "users": str(users),
            "passwords": str(passwords),
        }
        return [part.format(**fill) for part in shlex.split(self.command)]


# hydra: -I ignores a restore file of an earlier run, -t 4 parallel tasks, -w/-W short waits.
_HYDRA = "hydra -I -L {users} -P {passwords} -t 4 -w 5 -W 1"
_GUESSES = f"{len(GUESS_USERS)} users x {len(GUESS_PASSWORDS)} passwords"

ATTACKS: dict[str, Attack] = {
    "nmap-syn": Attack(
        "scan",
        60,
        "nmap -n -Pn -sS -p 1-2000 --max-rate 800 --max-retries 1 --host-timeout 50s {server}",
        "TCP SYN scan of ports 1-2000 at <= 800 probes/s",
    ),
    "nmap-connect": Attack(
        "scan",
        60,
        "nmap -n -Pn -sT --top-ports 300 --max-rate 400 --max-retries 1 --host-timeout 50s "
        "{server}",
        "TCP connect scan of the top 300 ports at <= 400 probes/s",
    ),
    "nmap-udp": Attack(
        "scan",
        60,
        "nmap -n -Pn -sU --top-ports 40 -T4 --max-retries 1 --host-timeout 45s {server}",
        "UDP scan of the top 40 ports (the kernel rate-limits its ICMP answers)",
    ),
    "masscan": Attack(
        "scan",
        # masscan 1.3.2 (Debian) sends its 5000 probes in ~10 s, then may wait forever
        # ("waiting -N-secs"): the time bound ends it.
        20,
        "masscan {server} -p 1-5000 --rate 1000 --wait 2 -e eth0 --router-ip {gateway}",
        "masscan SYN scan of ports 1-5000 at 1000 probes/s",
    ),
    "hydra-ssh": Attack(
        "bruteforce", 60, f"{_HYDRA} ssh://{{server}}", f"SSH password guessing, {_GUESSES}"
    ),
    "hydra-ftp": Attack(
        "bruteforce", 60, f"{_HYDRA} ftp://{{server}}", f"FTP password guessing, {_GUESSES}"
    ),
    "hydra-http": Attack(
        "bruteforce",
        60,
        f"{_HYDRA} -m /private/ http-get://{{server}}",
        f"HTTP basic-auth guessing on /private/, {_GUESSES} (the right password among them)",
    ),
    "hping3-syn-flood": Attack(
        "flood",
        30,
        "hping3 -q -S -p 80 -c 15000 -i u250 {server}",
        "SYN flood on port 80 from one source: 15000 packets (~2000/s measured)",
    ),
    "slowloris": Attack(
        "slowhttp",
        45,
        "slowhttptest -H -c 300 -r 100 -i 8 -x 24 -p 3 -l 30 -u http://{server}/",
        "slowloris: 300 connections opened at 100/s, a header line every 8 s, for 30 s",
    ),
    "slow-post": Attack(
        "slowhttp",
        45,
        "slowhttptest -B -c 300 -r 100 -i 8 -x 24 -s 8192 -p 3 -l 30 -t POST "
        "-u http://{server}/submit",
        "slow POST (R-U-Dead-Yet): 300 connections trickling 8 KB bodies, for 30 s",
    ),
}


@dataclass
class LabelRow:
    """One attack as it ran: the label of every flow from its attacker within its window."""

    attacker: str
    tool: str
    family: str
    start: float
    end: float
    returncode: int
    ended_by_timeout: bool
    command: str


def run_attack(
    lab: Lab, name: str, attacker: Host, *, stop: threading.Event | None = None
) -> LabelRow:
    """Run one attack from ``attacker``'s namespace, bounded in size and time; its label row."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {sorted(ATTACKS)}")
    if attacker.role != "attacker":
        raise ValueError(f"{attacker.netns} is a {attacker.role}, not an attacker")
    attack = ATTACKS[name]
    assert lab.workdir is not None
    folder = lab.workdir / "attacks" / f"{name}-{attacker.index}-{time.time_ns()}"
    folder.mkdir(parents=True)
    argv = attack.argv(lab, attacker, folder)
    log = open(folder / "output.log", "wb")  # noqa: SIM115 - closed below
    start = time.time()
    try:
        rc, ended = lab.procs.run(
            lab.exec_argv(attacker.netns, argv),
            timeout=attack.timeout_s,
            stop=stop,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            sigint_first=True,
        )
    finally:
        log.close()
    end = time.time()
    return LabelRow(attacker.address, name, attack.family, start, end, rc, ended, " ".join(argv))


@dataclass(frozen=True)
class ScheduleEntry:
    at: float
    attack: str
    attacker: int


def default_schedule() -> list[ScheduleEntry]:
    """Every attack once across a ~150 s run; families on different attacker hosts."""
    return [
        ScheduleEntry(15, "nmap-syn", 1),
        ScheduleEntry(28, "hydra-ssh", 2),
        ScheduleEntry(40, "nmap-connect", 1),
        ScheduleEntry(50, "hping3-syn-flood", 3),
        ScheduleEntry(62, "hydra-ftp", 2),
        ScheduleEntry(70, "slowloris", 4),
        ScheduleEntry(85, "nmap-udp", 1),
        ScheduleEntry(105, "hydra-http", 2),
        ScheduleEntry(112, "slow-post", 4),
        ScheduleEntry(130, "masscan", 1),
    ]


def parse_schedule(data: object, *, attackers: int, duration: float) -> list[ScheduleEntry]:
    """Validate a schedule: a list of ``{"at": s, "attack": name, "attacker": n}``."""
    if not isinstance(data, list):
        raise ValueError(f"schedule must be a JSON list, got {type(data).__name__}")
    entries = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"at", "attack", "attacker"}:
            raise ValueError(f"schedule entry {i}: want keys at, attack, attacker; got {item!r}")
        at, name, who = item["at"], item["attack"], item["attacker"]
        if not isinstance(at, (int, float)) or isinstance(at, bool) or not 0 <= at < duration:
            raise ValueError(f"schedule entry {i}: at={at!r} must be in [0, {duration})")
        if name not in ATTACKS:
            raise ValueError(
                f"schedule entry {i}: unknown attack {name!r}; known: {sorted(ATTACKS)}"
            )
        if not isinstance(who, int) or isinstance(who, bool) or not 1 <= who <= attackers:
            raise ValueError(f"schedule entry {i}: attacker={who!r} must be in 1..{attackers}")
        entries.append(ScheduleEntry(float(at), name, who))
    return sorted(entries, key=lambda e: e.at)


def run_schedule(
    lab: Lab, schedule: Sequence[ScheduleEntry], t0: float, stop: threading.Event
) -> list[LabelRow]:
    """Start each attack at ``t0 + at``; attacks of different attackers may overlap."""
    rows: list[LabelRow] = []
    lock = threading.Lock()
    busy: dict[int, threading.Thread] = {}

    def one(entry: ScheduleEntry) -> None:
        row = run_attack(lab, entry.attack, lab.attackers[entry.attacker - 1], stop=stop)
        with lock:
            rows.append(row)

    threads = []
    for entry in schedule:
        if stop.wait(max(0.0, t0 + entry.at - time.time())):
            break
        # One tool at a time per attacker, so that a flow's window is never ambiguous.
        previous = busy.get(entry.attacker)
        if previous is not None:
            previous.join()
        thread = threading.Thread(target=one, args=(entry,), daemon=True)
        thread.start()
        busy[entry.attacker] = thread
        threads.append(thread)
    for thread in threads:
        thread.join()
    return sorted(rows, key=lambda r: r.start)


# --------------------------------------------------------------------------------------------
# A session: benign clients + schedule (+ capture)


def write_labels(path: str | Path, rows: Sequence[LabelRow]) -> None:
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(LabelRow.__dataclass_fields__))
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def read_labels(path: str | Path) -> list[LabelRow]:
    """Read a labels CSV; a bad row raises ValueError naming the file, row and column."""
    rows = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        want = list(LabelRow.__dataclass_fields__)
        if reader.fieldnames != want:
            raise ValueError(f"{path}: columns {reader.fieldnames}, want {want}")
        for line, raw in enumerate(reader, start=2):
            try:
                row = LabelRow(
                    attacker=raw["attacker"],
                    tool=raw["tool"],
                    family=raw["family"],
                    start=float(raw["start"]),
                    end=float(raw["end"]),
                    returncode=int(raw["returncode"]),
                    ended_by_timeout=raw["ended_by_timeout"] == "True",
                    command=raw["command"],
                )
            except ValueError as err:
                raise ValueError(f"{path} line {line}: {err}") from None
            if not (math.isfinite(row.start) and math.isfinite(row.end)) or row.end < row.start:
                raise ValueError(f"{path} line {line}: end {row.end} before start {row.start}")
            rows.append(row)
    return rows


def session(
    lab: Lab,
    *,
    duration: float,
    seed: int,
    schedule: Sequence[ScheduleEntry] = (),
    benign: bool = True,
    stop: threading.Event | None = None,
) -> tuple[list[ClientLog], list[LabelRow]]:
    """Benign clients for ``duration`` s and the schedule at its times; waits for both."""
    if duration <= 0 or duration > 3600:
        raise ValueError(f"duration must be in (0, 3600] seconds, got {duration}")
    stop = stop or threading.Event()
    t0 = time.time()
    logs: list[ClientLog] = []
    threads = []
    if benign:
        seeds = random.Random(seed)
        for host in lab.clients:
            client_seed = seeds.randrange(2**31)

            def work(host=host, client_seed=client_seed):
                logs.append(run_client(lab, host, seed=client_seed, until=t0 + duration, stop=stop))

            threads.append(threading.Thread(target=work, daemon=True))
    rows: list[LabelRow] = []
    if schedule:
        threads.append(
            threading.Thread(
                target=lambda: rows.extend(run_schedule(lab, schedule, t0, stop)), daemon=True
            )
        )
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except BaseException:
        stop.set()
        for thread in threads:
            thread.join(30)
        raise
    return sorted(logs, key=lambda log: log.address), rows


def install_signal_handlers() -> None:
    # SIGTERM and SIGHUP become exceptions, so that every `finally` tears the lab down.
    def raise_exit(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)
    signal.signal(signal.SIGHUP, raise_exit)


# --------------------------------------------------------------------------------------------
# Flow labelling (needs latent_sculpting and pandas)

LABEL_COLUMN = "label"
FAMILY_COLUMN = "family"
BENIGN = "benign"
UNSCHEDULED = "attacker-unscheduled"


def label_flows(flows, rows: Sequence[LabelRow], *, slack_s: float = 2.0):
    """Label flows (nfstream columns) by attacker address and time; a new frame.

    A flow with an attacker's address at either end takes the label of that attacker's attack
    whose window, widened by ``slack_s`` on both sides, holds the flow's first packet (the latest
    such window when several do). A flow of an attacker address outside every window is
    labelled ``attacker-unscheduled`` (counted, for the caller to report); every other flow is
    ``benign``.
    """
    import numpy as np

    need = ["src_ip", "dst_ip", "bidirectional_first_seen_ms"]
    missing = [c for c in need if c not in flows.columns]
    if missing:
        raise ValueError(f"flow table lacks columns {missing} (is it `sculpt extract` output?)")
    if slack_s < 0:
        raise ValueError(f"slack_s must be >= 0, got {slack_s}")
    out = flows.copy()
    first = out["bidirectional_first_seen_ms"].to_numpy(dtype="float64") / 1000.0
    label = np.full(len(out), BENIGN, dtype=object)
    family = np.full(len(out), BENIGN, dtype=object)
    chosen_start = np.full(len(out), -np.inf)
    attackers = {r.attacker for r in rows}
    src, dst = out["src_ip"].to_numpy(), out["dst_ip"].to_numpy()
    for address in attackers:
        involved = (src == address) | (dst == address)
        label[involved] = UNSCHEDULED
        family[involved] = UNSCHEDULED
        for row in rows:
            if row.attacker != address:
                continue
            inside = (
                involved
                & (first >= row.start - slack_s)
                & (first <= row.end + slack_s)
                & (row.start > chosen_start)
            )
            label[inside] = row.tool
            family[inside] = row.family
            chosen_start[inside] = row.start
    out[LABEL_COLUMN] = label
    out[FAMILY_COLUMN] = family
    return out


def label_capture(
    pcap: str | Path,
    labels: str | Path,
    output: str | Path,
    *,
    slack_s: float = 2.0,
    idle_timeout: int | None = None,
    active_timeout: int | None = None,
) -> dict:
    """``sculpt extract`` a capture (with nfstream's timeouts, when given), label its flows and
    write them; per-label counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from latent_sculpting.io.extract import extract

    rows = read_labels(labels)
    output = Path(output)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        flows_path = Path(tmp) / "flows.parquet"
        summary = extract(
            [pcap],
            flows_path,
            progress=False,
            idle_timeout=idle_timeout,
            active_timeout=active_timeout,
        )
        flows = pq.read_table(flows_path).to_pandas()
    labelled = label_flows(flows, rows, slack_s=slack_s)
    table = pa.Table.from_pandas(labelled, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"latent_sculpting.lab"] = SYNTHETIC_NOTICE.encode()
    pq.write_table(table.replace_schema_metadata(meta), output, compression="zstd")
    counts = (
        labelled.groupby(LABEL_COLUMN)
        .agg(
            flows=(LABEL_COLUMN, "size"),
            packets=("bidirectional_packets", "sum"),
            bytes=("bidirectional_bytes", "sum"),
        )
        .astype(int)
        .to_dict(orient="index")
    )
    return {
        "notice": SYNTHETIC_NOTICE,
        "output": str(output),
        "capture_packets": summary.packets,
        "flows": summary.flows,
        "by_label": counts,
        "unscheduled_attacker_flows": counts.get(UNSCHEDULED, {}).get("flows", 0),
        "label_column": LABEL_COLUMN,
        "benign_label": BENIGN,
    }


# --------------------------------------------------------------------------------------------
# Replay


def tcpreplay_argv(
    interface: str,
    pcap: str | Path,
    *,
    pps=None,
    mbps=None,
    multiplier=None,
    topspeed=False,
    loop=1,
    duration=None,
) -> list[str]:
    """tcpreplay's command for one of the rate choices; exactly one of them must be given."""
    rates = {"pps": pps, "mbps": mbps, "multiplier": multiplier, "topspeed": topspeed or None}
    given = [k for k, v in rates.items() if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of pps, mbps, multiplier, topspeed; got {given}")
    for name in ("pps", "mbps", "multiplier"):
        value = rates[name]
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if not (isinstance(loop, int) and 1 <= loop <= 100_000):
        raise ValueError(f"loop must be an integer in 1..100000, got {loop}")
    argv = ["tcpreplay", "-i", interface, "--stats=0"]
    if pps is not None:
        argv.append(f"--pps={pps}")
    elif mbps is not None:
        argv.append(f"--mbps={mbps}")
    elif multiplier is not None:
        argv.append(f"--multiplier={multiplier}")
    else:
        argv.append("--topspeed")
    argv.append(f"--loop={loop}")
    if duration is not None:
        if not 0 < duration <= 3600:
            raise ValueError(f"duration must be in (0, 3600] seconds, got {duration}")
        argv.append(f"--duration={int(math.ceil(duration))}")
    return [*argv, str(pcap)]


def replay(pcap: str | Path, *, prefix: str, delay: float, verify: bool, **rate) -> dict:
    """Replay a pcap onto ``rp0`` of namespace ``PREFIX-tap``; a sensor captures on ``cap0``.

    The pair has no addresses, so replayed packets reach the capture end and nothing else.
    """
    pcap = Path(pcap)
    if not pcap.is_file():
        raise ValueError(f"{pcap}: no such capture file")
    _check_prefix(prefix)
    netns = f"{prefix}-tap"
    if Path("/run/netns", netns).exists():
        raise LabError(f"namespace {netns} exists already (lab.py down --prefix {prefix})")
    argv = tcpreplay_argv("rp0", pcap, **rate)
    procs = Processes()
    result: dict = {
        "notice": SYNTHETIC_NOTICE,
        "capture_netns": netns,
        "capture_interface": "cap0",
        "replay_interface": "rp0",
    }
    try:
        _sh(["ip", "netns", "add", netns])
        for key in ("all", "default"):
            _sh(f"ip netns exec {netns} sysctl -qw net.ipv6.conf.{key}.disable_ipv6=1")
        _sh(["ip", "-n", netns, "link", "add", "rp0", "type", "veth", "peer", "name", "cap0"])
        for link in ("lo", "rp0", "cap0"):
            _sh(["ip", "-n", netns, "link", "set", link, "up"])
        print(json.dumps({"ready": True, **result}), flush=True)
        capture = (
            Capture(procs, netns, "cap0", Path(tempfile.mkdtemp()) / "x.pcap") if verify else None
        )
        if delay > 0:
            time.sleep(delay)
        out = subprocess.run(
            ["ip", "netns", "exec", netns, *argv],
            capture_output=True,
            text=True,
            timeout=3700,
            check=False,
        )
        if out.returncode != 0:
            raise LabError(f"tcpreplay failed ({out.returncode}): {out.stderr.strip()[-400:]}")
        result["tcpreplay"] = parse_tcpreplay(out.stdout)
        result["command"] = " ".join(argv)
        if capture is not None:
            stats = capture.stop()
            Path(stats.path).unlink(missing_ok=True)
            Path(stats.path).parent.rmdir()
            result["capture"] = {"captured": stats.captured, "dropped_by_kernel": stats.dropped}
    finally:
        procs.end_all()
        teardown([netns])
    return result


def parse_tcpreplay(text: str) -> dict:
    """The totals tcpreplay prints: packets, bytes, seconds, rates, failures. With ``--stats``
    it prints running figures too; the totals are the last."""

    def last(pattern: str) -> re.Match | None:
        found = list(re.finditer(pattern, text))
        return found[-1] if found else None

    out: dict = {}
    match = last(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds")
    if match:
        out.update(
            packets=int(match.group(1)), bytes=int(match.group(2)), seconds=float(match.group(3))
        )
    match = last(r"Rated: [\d.]+ Bps, ([\d.]+) Mbps, ([\d.]+) pps")
    if match:
        out.update(mbps=float(match.group(1)), pps=float(match.group(2)))
    match = last(r"Failed packets:\s+(\d+)")
    if match:
        out["failed_packets"] = int(match.group(1))
    if "packets" not in out:
        raise LabError(f"could not read tcpreplay's summary: {text.strip()[-400:]}")
    return out


# --------------------------------------------------------------------------------------------
# Command line


def _count_by_attacker(pcap: Path, rows: Sequence[LabelRow]) -> dict[str, dict]:
    """Packets of each attacker address in the capture, and how many fall inside its windows."""
    out = {}
    for address in sorted({r.attacker for r in rows}):
        text = subprocess.run(
            ["tcpdump", "-n", "-tt", "-r", str(pcap), "host", address],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout
        stamps = [float(line.split()[0]) for line in text.splitlines() if line.strip()]
        windows = [(r.start, r.end) for r in rows if r.attacker == address]
        inside = sum(any(s - 2 <= t <= e + 2 for s, e in windows) for t in stamps)
        out[address] = {"packets": len(stamps), "inside_label_windows": inside}
    return out


def cmd_check(args) -> int:
    reasons = missing_requirements(attacks=sorted(ATTACKS))
    print(json.dumps({"ready": not reasons, "missing": reasons}, indent=2))
    return 0 if not reasons else 1


def _load_schedule(args, attackers: int) -> list[ScheduleEntry]:
    if args.schedule == "default":
        data = [asdict(e) for e in default_schedule()]
    elif args.schedule == "none":
        data = []
    else:
        data = json.loads(Path(args.schedule).read_text())
    return parse_schedule(data, attackers=attackers, duration=args.duration)


def cmd_run(args) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    schedule = _load_schedule(args, args.attackers)
    reasons = missing_requirements(attacks=sorted({e.attack for e in schedule}))
    if reasons:
        raise LabError("cannot run the lab: " + "; ".join(reasons))
    install_signal_handlers()
    with Lab(args.prefix, clients=args.clients, attackers=args.attackers) as lab:
        print(json.dumps({"ready": True, **lab.describe()}), flush=True)
        capture = Capture(lab.procs, lab.router, CAPTURE_INTERFACE, out / "lab.pcap")
        t0 = time.time()
        try:
            logs, rows = session(lab, duration=args.duration, seed=args.seed, schedule=schedule)
            time.sleep(2.0)  # the last answers and FINs
        finally:
            stats = capture.stop()
        alive = lab.services_alive()
    write_labels(out / "labels.csv", rows)
    meta = {
        "notice": SYNTHETIC_NOTICE,
        "seed": args.seed,
        "duration_s": args.duration,
        "started": t0,
        "topology": lab.describe(),
        "schedule": [asdict(e) for e in schedule],
        "capture": asdict(stats),
        "services_alive_at_end": alive,
        "clients": [asdict(log) for log in logs],
        "attacks": [asdict(r) for r in rows],
        "attacker_packets": _count_by_attacker(out / "lab.pcap", rows),
    }
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({k: meta[k] for k in ("capture", "attacker_packets")}, indent=2))
    return 0


def cmd_up(args) -> int:
    schedule = _load_schedule(args, args.attackers)
    reasons = missing_requirements(attacks=sorted({e.attack for e in schedule}))
    if reasons:
        raise LabError("cannot run the lab: " + "; ".join(reasons))
    install_signal_handlers()
    with Lab(args.prefix, clients=args.clients, attackers=args.attackers) as lab:
        print(json.dumps({"ready": True, **lab.describe()}), flush=True)
        if args.benign or schedule:
            logs, rows = session(
                lab, duration=args.duration, seed=args.seed, schedule=schedule, benign=args.benign
            )
            if args.labels:
                write_labels(args.labels, rows)
            print(
                json.dumps(
                    {"clients": [asdict(x) for x in logs], "attacks": [asdict(r) for r in rows]}
                ),
                flush=True,
            )
        else:
            time.sleep(args.duration)
    return 0


def cmd_down(args) -> int:
    removed = teardown(lab_namespaces(_check_prefix(args.prefix)))
    # The temporary folders of labs that were killed (a lab removes its own at the end).
    folders = sorted(Path(tempfile.gettempdir()).glob(f"{args.prefix}-lab-*"))
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"removed": removed, "folders_removed": [str(f) for f in folders]}))
    return 0


def cmd_label(args) -> int:
    result = label_capture(
        args.pcap,
        args.labels,
        args.output,
        slack_s=args.slack,
        idle_timeout=args.idle_timeout,
        active_timeout=args.active_timeout,
    )
    print(json.dumps(result, indent=2))
    return 0


def cmd_replay(args) -> int:
    reasons = missing_requirements(replay=True)
    if reasons:
        raise LabError("cannot replay: " + "; ".join(reasons))
    install_signal_handlers()
    result = replay(
        args.pcap,
        prefix=args.prefix,
        delay=args.delay,
        verify=args.verify,
        pps=args.pps,
        mbps=args.mbps,
        multiplier=args.multiplier,
        topspeed=args.topspeed,
        loop=args.loop,
        duration=args.duration,
    )
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab.py",
        description="Synthetic lab traffic in network namespaces (real services, benign "
        "clients, real attack tools) for end-to-end tests and operational measurements; never "
        "pooled with real datasets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="say what is missing to run the lab").set_defaults(func=cmd_check)

    def lab_options(p, duration):
        p.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace name prefix")
        p.add_argument("--clients", type=int, default=3, help="benign client hosts")
        p.add_argument("--attackers", type=int, default=4, help="attacker hosts")
        p.add_argument("--duration", type=float, default=duration, help="seconds of traffic")
        p.add_argument("--seed", type=int, default=0, help="seed of the benign clients")
        p.add_argument(
            "--schedule",
            default="default",
            help="'default', 'none' or a JSON file of {at, attack, attacker}",
        )

    run = sub.add_parser("run", help="capture benign traffic plus an attack schedule")
    lab_options(run, 150.0)
    run.add_argument("-o", "--output", required=True, help="folder for lab.pcap, labels.csv")
    run.set_defaults(func=cmd_run)

    up = sub.add_parser("up", help="keep the lab up, print where to capture, until --duration")
    lab_options(up, 600.0)
    up.set_defaults(schedule="none")
    up.add_argument("--benign", action="store_true", help="run the benign clients meanwhile")
    up.add_argument("--labels", help="write the schedule's labels CSV here")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove namespaces a killed lab left behind")
    down.add_argument("--prefix", default=DEFAULT_PREFIX)
    down.set_defaults(func=cmd_down)

    label = sub.add_parser("label", help="pcap + labels.csv -> labelled flow table (Parquet)")
    label.add_argument("pcap")
    label.add_argument("labels")
    label.add_argument("-o", "--output", required=True, help="labelled .parquet to write")
    label.add_argument("--slack", type=float, default=2.0, help="seconds around each window")
    label.add_argument("--idle-timeout", type=int, help="nfstream's idle timeout, seconds")
    label.add_argument("--active-timeout", type=int, help="nfstream's active timeout, seconds")
    label.set_defaults(func=cmd_label)

    rep = sub.add_parser("replay", help="tcpreplay a pcap onto a veth whose peer a sensor reads")
    rep.add_argument("pcap")
    rep.add_argument("--prefix", default=DEFAULT_PREFIX)
    rate = rep.add_mutually_exclusive_group(required=True)
    rate.add_argument("--pps", type=float)
    rate.add_argument("--mbps", type=float)
    rate.add_argument("--multiplier", type=float)
    rate.add_argument("--topspeed", action="store_true")
    rep.add_argument("--loop", type=int, default=1)
    rep.add_argument("--duration", type=float, help="stop replaying after this many seconds")
    rep.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="seconds between the ready line and the replay (to attach a sensor)",
    )
    rep.add_argument(
        "--verify",
        action="store_true",
        help="count what arrives on cap0 with tcpdump (captured, dropped)",
    )
    rep.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LabError, ValueError) as err:
        print(f"lab.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab.py: interrupted; the lab was torn down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
