"""A plant LAN with a DHCP server, and stand-ins for runtimes, all in namespaces.

* LAN: a veth pair `oatd<tag>` / `oatd<tag>p`; the `p` end lives in namespace
  `oatdl<tag>` with the LAN's router address (.1) and a dnsmasq serving DHCP only
  (`--port=0`) on that interface alone.
* A runtime stand-in: namespace `oatdr<tag>n<k>` holding a MACVLAN link whose parent is the
  host end of the veth — what the engine makes for a runtime on a MACVLAN network — with
  an address of our choosing on it, standing in for the engine's IPAM address.

Network safety: only these veths, MACVLANs and namespaces are made and changed, and all
are removed by `close()`.  Addresses are from 198.51.100.0/24 (`renumber`: a /27 of it
or of 203.0.113.0/24), and only ever inside the namespaces (the host end of the veth
carries none), so they collide with nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.helpers import wait_for
from testkit.movinglan import host

SUBNET = "198.51.100.0/24"
ROUTER = "198.51.100.1"
DNS = "198.51.100.53"
RANGE = ("198.51.100.100", "198.51.100.150")
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"  # dnsmasq-base: /usr/sbin
_counter = itertools.count()


def sh(*args: str, timeout: float = 20) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True,
                          timeout=timeout).stdout


def mac_for(tag: str, k: int) -> str:
    digits = f"{abs(hash(tag)) % 0xFFFF:04x}"
    return f"02:0d:{digits[:2]}:{digits[2:]}:00:{k:02x}"


@dataclass
class Runtime:
    """A runtime stand-in: its namespace and its MACVLAN link (by MAC)."""

    ns: str
    link: str
    mac: str

    @property
    def netns(self) -> str:
        return f"/var/run/netns/{self.ns}"

    @property
    def resolv_conf(self) -> str:
        return f"/etc/netns/{self.ns}/resolv.conf"

    def addresses(self) -> list[str]:
        out = sh("ip", "-n", self.ns, "-4", "-o", "addr", "show", "dev", self.link)
        return [line.split()[3] for line in out.splitlines()]

    def default_route(self) -> str:
        return sh("ip", "-n", self.ns, "-4", "route", "show", "default").strip()

    def resolv(self) -> str:
        return Path(self.resolv_conf).read_text(encoding="utf-8")


@dataclass
class DhcpLan:
    tag: str
    tmp: Path
    lease_time: str = "2m"
    router: str = ROUTER
    dns: str = DNS
    pool: tuple[str, str] = RANGE
    prefixlen: int = 24
    # dnsmasq probes a new address with a ping before offering it, one address at a
    # time (3 s each, the server answering nothing meanwhile); `ping=False` skips it.
    ping: bool = True
    options: list[str] = field(default_factory=list)
    reservations: dict[str, str] = field(default_factory=dict)
    runtimes: list[Runtime] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None

    @property
    def parent(self) -> str:
        return f"oatd{self.tag}"

    @property
    def peer(self) -> str:
        return f"oatd{self.tag}p"

    @property
    def ns(self) -> str:
        return f"oatdl{self.tag}"

    @property
    def mask(self) -> str:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefixlen}").netmask)

    @property
    def leasefile(self) -> Path:
        return self.tmp / "dnsmasq.leases"

    def setup(self) -> DhcpLan:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.parent, "type", "veth", "peer", "name", self.peer)
        sh("ip", "link", "set", self.peer, "netns", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.router}/{self.prefixlen}", "dev",
           self.peer)
        sh("ip", "-n", self.ns, "link", "set", self.peer, "up")
        sh("ip", "link", "set", self.parent, "up")
        return self

    def start_server(self) -> None:
        assert self.server is None
        args = ["ip", "netns", "exec", self.ns, DNSMASQ, "--keep-in-foreground",
                "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0",
                "--user=root", f"--interface={self.peer}", "--bind-interfaces",
                f"--dhcp-range={self.pool[0]},{self.pool[1]},{self.mask},{self.lease_time}",
                f"--dhcp-leasefile={self.leasefile}", f"--pid-file={self.tmp / 'pid'}",
                f"--dhcp-option=option:router,{self.router}",
                f"--dhcp-option=option:dns-server,{self.dns}", "--log-dhcp",
                f"--log-facility={self.tmp / 'dnsmasq.log'}"]
        args += [f"--dhcp-host={mac},{ip}" for mac, ip in self.reservations.items()]
        args += [f"--dhcp-option={opt}" for opt in self.options]
        if not self.ping:
            args.append("--no-ping")
        self.server = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        server = self.server

        def bound() -> bool:  # the pid file is written once the socket is bound
            if server.poll() is not None:
                raise RuntimeError(f"dnsmasq did not start: {self.log()}")
            return (self.tmp / "pid").exists()
        wait_for(bound, 10, "dnsmasq to bind", interval=0.05)

    def renumber(self, block: str) -> None:
        """The LAN moves to `block` (a free /27 of the engine's view): router .1, DNS .29
        (announced only), and the server's side of the wire carries the router address
        alone."""
        self.router, self.dns = host(block, 1), host(block, 29)
        self.prefixlen = ipaddress.IPv4Network(block).prefixlen
        sh("ip", "-n", self.ns, "addr", "flush", "dev", self.peer)
        sh("ip", "-n", self.ns, "addr", "add", f"{self.router}/{self.prefixlen}", "dev",
           self.peer)

    def serve(self, block: str, pool: tuple[int, int] = (16, 24)) -> None:
        """dnsmasq for `block` (see `renumber`), leasing hosts `pool[0]` to `pool[1]`."""
        self.renumber(block)
        self.pool = (host(block, pool[0]), host(block, pool[1]))
        self.start_server()

    def host_interface(self, block: str) -> dict[str, Any]:
        """What netmon would report for the LAN's parent on `block` (.2: the host)."""
        net = ipaddress.IPv4Network(block)
        return {"interface": self.parent, "index": 0, "operstate": "UP", "active": True,
                "ipv4_addresses": [{"address": host(block, 2), "prefixlen": net.prefixlen,
                                    "subnet": block,
                                    "network_address": str(net.network_address)}],
                "gateway": host(block, 1), "timestamp": "2026-01-01T00:00:00+00:00"}

    def retire_server(self, next_dir: Path) -> None:
        """The server goes for good: the next one started keeps its files (lease file,
        log) in `next_dir`, a new directory, so it knows no lease."""
        self.stop_server()
        self.tmp = next_dir
        next_dir.mkdir()

    def stop_server(self) -> None:
        if self.server is None:
            return
        self.server.send_signal(signal.SIGTERM)
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(5)
        self.server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp / "pid")

    def leases(self) -> dict[str, str]:
        """MAC → IP from dnsmasq's lease file."""
        out = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self.leasefile.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3:
                    out[parts[1].lower()] = parts[2]
        return out

    def log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.tmp / "dnsmasq.log").read_text(errors="replace")
        return ""

    def runtime(self, ipam_address: str | None = "198.51.100.77/24") -> Runtime:
        """A runtime stand-in on this LAN, carrying `ipam_address` as the engine would."""
        k = len(self.runtimes)
        rt = Runtime(f"oatdr{self.tag}n{k}", f"oatdm{self.tag}n{k}", mac_for(self.tag, k))
        self.runtimes.append(rt)
        sh("ip", "netns", "add", rt.ns)
        Path(rt.resolv_conf).parent.mkdir(parents=True, exist_ok=True)
        Path(rt.resolv_conf).write_text("nameserver 127.0.0.11\n", encoding="utf-8")
        sh("ip", "link", "add", rt.link, "link", self.parent, "address", rt.mac,
           "type", "macvlan", "mode", "bridge")
        sh("ip", "link", "set", rt.link, "netns", rt.ns)
        sh("ip", "-n", rt.ns, "link", "set", "lo", "up")
        sh("ip", "-n", rt.ns, "link", "set", rt.link, "up")
        if ipam_address:
            sh("ip", "-n", rt.ns, "addr", "add", ipam_address, "dev", rt.link)
            sh("ip", "-n", rt.ns, "route", "add", "default", "via", self.router, "dev", rt.link)
        return rt

    def reach_from_lan(self, rt: Runtime, ip: str, timeout: float = 10.0) -> bool:
        """A TCP connection from the LAN namespace to `ip`:8080, answered by a listener in
        the runtime's namespace (so the reply comes from the leased address there)."""
        listener = subprocess.Popen(
            ["ip", "netns", "exec", rt.ns, sys.executable, "-c",
             "import socket\n"
             f"s=socket.create_server(('{ip}',8080));s.settimeout({timeout})\n"
             "c,_=s.accept();c.sendall(b'ok');c.close()\n"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            probe = ("import socket,sys,time\n"
                     f"end=time.time()+{timeout}\n"
                     "while time.time()<end:\n"
                     "  try:\n"
                     f"    c=socket.create_connection(('{ip}',8080),1)\n"
                     "    sys.exit(0 if c.recv(2)==b'ok' else 1)\n"
                     "  except OSError: time.sleep(0.1)\n"
                     "sys.exit(1)\n")
            result = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c",
                                     probe], capture_output=True, check=False,
                                    timeout=timeout + 10)
            return result.returncode == 0
        finally:
            listener.kill()
            listener.wait(5)

    def close(self) -> None:
        self.stop_server()
        for rt in self.runtimes:
            subprocess.run(["ip", "netns", "del", rt.ns], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                Path(rt.resolv_conf).unlink()
                Path(rt.resolv_conf).parent.rmdir()
        subprocess.run(["ip", "link", "del", self.parent], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)


def make_lan(tmp: Path, **kwargs: object) -> DhcpLan:
    tag = f"{os.getpid() % 10000}x{next(_counter)}"
    lan = DhcpLan(tag, tmp, **kwargs)  # type: ignore[arg-type]
    try:
        lan.setup()
    except BaseException:
        lan.close()
        raise
    return lan
