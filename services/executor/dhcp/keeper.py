"""The lease keeper: the DHCP clients of every dhcp vNIC, in one thread.

Concurrency: one thread (`dhcp-keeper`) runs a selector over the clients' sockets and a
wake-up pipe and sleeps until the nearest timer of any client, so fifty vNICs cost one
thread and a few wake-ups per lease period.  Public methods may be called from any
thread: they hand their work to the loop and wait for it (bounded); `status` reads a
snapshot and never waits.  Work in a runtime's namespace (opening the socket, applying a
lease) runs in a short thread that enters it (`netns.py`).

Each vNIC's state is kept in `<state>/dhcp/<device>@<vnic>.json` (`lease.py`), written at
every change, so a restarted executor resumes: a lease the interface still carries is
kept and renewed on time; otherwise the previous address is asked for first.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from services.executor.dhcp import netns, packet
from services.executor.dhcp.client import BROADCAST, Client, Timing
from services.executor.dhcp.lease import Lease, LeaseStore, file_name, iso, lease_record

log = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0
MAX_SLEEP = 30.0
RETRY_AFTER_FAILURE = 5.0
T = TypeVar("T")
Key = tuple[str, str]
_NOTHING = object()


class DhcpError(Exception):
    """A vNIC could not be taken in hand (namespace or interface not reachable)."""


@dataclass(frozen=True)
class VnicTarget:
    """A dhcp vNIC of a runtime, as the executor knows it."""

    device: str
    vnic: str
    mac: str
    netns: str  # "/proc/<pid>/ns/net" of the runtime (any path to a netns file works)
    hostname: str | None = None  # sent as option 12: the runtime's name
    resolv_conf: str | None = None  # the runtime's resolv.conf as seen from here
    dns: tuple[str, ...] = ()  # the vNIC's configured DNS servers, put before the lease's
    route_metric: int = 0
    # A vNIC behind a wireless parent (a veth pair, docs/features.md): the broadcast
    # exchanges go out and come back on this interface of the host's namespace
    # (`relay_netns`; None: the executor's own); unicast renewals stay in the runtime's.
    relay: str | None = None
    relay_netns: str | None = None


# Told (keeper thread) what a relayed vNIC's address became.
OnAddress = Callable[[VnicTarget, netns.Addressing | None], None]


@dataclass
class _Vnic:
    """One managed vNIC: its target, socket and client; the client's `Effects`."""

    keeper: LeaseKeeper
    target: VnicTarget
    sock: socket.socket
    ifname: str
    client: Client = field(init=False)
    error: str | None = None
    applied: object = _NOTHING  # what the last successful apply put there
    relay_sock: socket.socket | None = None

    def send(self, data: bytes, dest: str) -> None:
        if self.relay_sock is not None and dest == BROADCAST:
            self.relay_sock.sendto(data, (dest, packet.SERVER_PORT))
            return
        self.sock.sendto(data, (dest, packet.SERVER_PORT))

    def apply(self, lease: Lease | None) -> None:
        want = None if lease is None else netns.Addressing(
            lease.ip_address, lease.prefixlen, lease.gateway, self.target.route_metric)
        if self.applied is not _NOTHING and self.applied == (want, self.dns(lease)) \
                and not self.error:
            return  # a renewal that changes nothing: no namespace work
        try:
            for change in netns.apply(self.target.netns, self.target.mac, want):
                log.info("%s/%s: %s", self.target.device, self.target.vnic, change)
            if lease is not None and self.target.resolv_conf:
                netns.write_resolv(self.target.resolv_conf, self.dns(lease), lease.domain)
            if self.target.relay and self.keeper.on_address is not None:
                self.keeper.on_address(self.target, want)
            self.error = None
            self.applied = (want, self.dns(lease))
        except (netns.NetnsError, OSError) as exc:
            self.error = str(exc)
            log.warning("%s/%s: applying the lease failed: %s", self.target.device,
                        self.target.vnic, exc)

    def dns(self, lease: Lease | None) -> list[str]:
        merged = list(self.target.dns)
        merged += [s for s in (lease.dns or []) if s not in merged] if lease else []
        return merged

    def changed(self) -> None:
        self.keeper._changed(self)

    def record(self) -> dict[str, Any]:
        client, lease = self.client, self.client.lease
        return {"device": self.target.device, "vnic": self.target.vnic,
                "mac_address": self.target.mac, "state": client.reported,
                "lease": lease_record(lease), "previous_ip": client.previous_ip,
                "updated_at": time.time()}

    def status(self) -> dict[str, Any]:
        lease = self.client.lease
        out: dict[str, Any] = {
            "state": self.client.reported, "mac_address": self.target.mac,
            "interface": self.ifname, "ip_address": None, "prefixlen": None,
            "gateway": None, "dns": list(self.target.dns), "server": None,
            "lease_start": None, "lease_expiry": None, "renew_at": None,
            "rebind_at": None, "lease_time": None}
        if lease is not None:
            out.update(ip_address=lease.ip_address, prefixlen=lease.prefixlen,
                       gateway=lease.gateway, dns=self.dns(lease), server=lease.server,
                       lease_start=iso(lease.start), lease_expiry=iso(lease.expires_at),
                       renew_at=iso(lease.renew_at), rebind_at=iso(lease.rebind_at),
                       lease_time=lease.lease_time)
        if self.error:
            out["error"] = self.error
        return out


class LeaseKeeper:
    def __init__(self, state_dir: Path, timing: Timing | None = None,
                 on_change: Callable[[str, str, dict[str, Any]], None] | None = None,
                 on_address: OnAddress | None = None) -> None:
        self.store = LeaseStore(state_dir)
        # Called (keeper thread) after a relayed vNIC's address is applied: the host's
        # route and proxy entry follow the lease.
        self.on_address = on_address
        self.timing = timing or Timing()
        self.on_change = on_change
        self._vnics: dict[Key, _Vnic] = {}
        self._status: dict[Key, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._queue = queue.SimpleQueue()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None
        self._stopping = False

    # --- public API (any thread) ---------------------------------------------------------

    def start(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._run, name="dhcp-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop and close the sockets.  Leases stay applied and on file: a
        keeper started later resumes them."""
        if self._thread is None:
            return
        self._call(self._close_all)
        self._stopping = True
        self._wake()
        self._thread.join(CALL_TIMEOUT)
        self._thread = None
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def attach(self, target: VnicTarget, resume: bool = True) -> dict[str, Any]:
        """Take a dhcp vNIC in hand (after create, after every start of the runtime, at
        executor start for every running runtime, after a re-homing with
        `resume=False`).  Removes any address the server did not lease from the
        interface, then resumes or acquires the lease.  Returns the status."""
        file_name(target.device, target.vnic)  # a bad name fails here, changing nothing
        return self._call(lambda: self._attach(target, resume))

    def release(self, device: str, vnic: str) -> bool:
        """Delete: DHCPRELEASE for a held lease, address removed, state forgotten.
        True when the vNIC was managed here."""
        return self._call(lambda: self._drop((device, vnic), release=True, forget=True))

    def detach(self, device: str, vnic: str) -> bool:
        """Stop managing the vNIC (its runtime stopped) but keep its lease on file, so the
        next `attach` asks for the same address."""
        return self._call(lambda: self._drop((device, vnic), release=False, forget=False))

    def forget(self, device: str, vnic: str) -> bool:
        """Drop everything about the vNIC without a RELEASE (its runtime vanished)."""
        return self._call(lambda: self._drop((device, vnic), release=False, forget=True))

    def status(self, device: str, vnic: str) -> dict[str, Any] | None:
        """The vNIC's DHCP status (see docs/dhcp.md), or None if it is not managed."""
        with self._cond:
            found = self._status.get((device, vnic))
            return dict(found) if found is not None else None

    def managed(self) -> list[Key]:
        with self._cond:
            return sorted(self._status)

    def known(self) -> list[Key]:
        """(device, vnic) of every lease on file, managed now or not (at start-up the
        executor attaches those whose runtime runs and forgets the others)."""
        return self.store.keys()

    def wait(self, device: str, vnic: str, check: Callable[[dict[str, Any]], bool],
             timeout: float) -> dict[str, Any]:
        """Block until the vNIC's status satisfies `check`; TimeoutError otherwise."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._status.get((device, vnic))
                if found is not None and check(found):
                    return dict(found)
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{device}/{vnic}: last status {found}")
                self._cond.wait(left)

    # --- inside the loop -----------------------------------------------------------------

    def _call(self, work: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return work()
        if self._thread is None or self._stopping:
            raise DhcpError("the lease keeper is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((work, future))
        self._wake()
        return future.result(CALL_TIMEOUT)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the loop anyway
            os.write(self._wake_w, b"x")

    def _attach(self, target: VnicTarget, resume: bool) -> dict[str, Any]:
        key = (target.device, target.vnic)
        old = self._vnics.get(key)
        if old is not None and old.target == target and resume:
            return old.status()
        record = self.store.load(*key) if resume else None
        if record is not None and record.get("mac_address") != target.mac:
            record = None  # another MAC: another client as far as the server knows
        previous = Lease.from_dict(record["lease"]) if record and record.get("lease") else None
        try:
            sock, ifname = netns.open_socket(target.netns, target.mac)
            carried = previous is not None and (previous.ip_address, previous.prefixlen) in \
                netns.current(target.netns, target.mac)
            relay = netns.relay_socket(target.relay, target.relay_netns) \
                if target.relay else None
        except (netns.NetnsError, OSError) as exc:
            raise DhcpError(f"{target.device}/{target.vnic}: {exc}") from exc
        if old is not None:
            self._close(old)
        entry = _Vnic(self, target, sock, ifname, relay_sock=relay)
        entry.client = Client(target.mac, target.hostname, entry, self.timing,
                              name=f"{target.device}/{target.vnic}")
        if record is not None and previous is None:
            entry.client.previous_ip = record.get("previous_ip")
        self._vnics[key] = entry
        self._sel.register(sock, selectors.EVENT_READ, entry)
        if relay is not None:
            self._sel.register(relay, selectors.EVENT_READ, entry)
        entry.client.start(time.time(), previous, carried)
        self._changed(entry)
        log.info("%s/%s: DHCP on %s (%s)", target.device, target.vnic, ifname,
                 "resumed" if carried else "INIT-REBOOT" if previous else "DISCOVER")
        return entry.status()

    def _drop(self, key: Key, release: bool, forget: bool) -> bool:
        entry = self._vnics.pop(key, None)
        if entry is not None:
            if release:
                entry.client.release()
            self._close(entry)
        if forget:
            self.store.remove(*key)
        with self._cond:
            self._status.pop(key, None)
            self._cond.notify_all()
        return entry is not None

    def _close(self, entry: _Vnic) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(entry.sock)
        entry.sock.close()
        if entry.relay_sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(entry.relay_sock)
            entry.relay_sock.close()

    def _close_all(self) -> None:
        for entry in list(self._vnics.values()):
            self._close(entry)
        self._vnics.clear()

    def _changed(self, entry: _Vnic) -> None:
        key = (entry.target.device, entry.target.vnic)
        if self._vnics.get(key) is not entry:
            return  # a dropped entry's last words (its RELEASE) are not kept
        try:
            self.store.save(*key, entry.record())
        except OSError as exc:
            log.error("%s/%s: lease file not written: %s", *key, exc)
        status = entry.status()
        with self._cond:
            self._status[key] = status
            self._cond.notify_all()
        if self.on_change is not None:
            try:
                self.on_change(key[0], key[1], dict(status))
            except Exception:
                log.exception("DHCP change listener failed")

    def _run(self) -> None:
        while not self._stopping:
            deadline = min((e.client.deadline for e in self._vnics.values()), default=math.inf)
            timeout = max(0.0, min(MAX_SLEEP, deadline - time.time()))
            for key, _mask in self._sel.select(timeout):
                if key.data is None:
                    self._commands()
                else:
                    self._receive(key.data, key.fileobj)  # type: ignore[arg-type]
            now = time.time()
            for entry in list(self._vnics.values()):
                if entry.client.deadline <= now:
                    self._guard(entry, entry.client.tick, now)

    def _commands(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                work, future = self._queue.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

    def _receive(self, entry: _Vnic, sock: socket.socket) -> None:
        for _ in range(64):  # bounded: a flood cannot hold the loop
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            except OSError as exc:
                log.info("%s/%s: receive failed: %s", entry.target.device,
                         entry.target.vnic, exc)
                return
            self._guard(entry, entry.client.handle, data, time.time())

    def _guard(self, entry: _Vnic, work: Callable[..., None], *args: Any) -> None:
        # One vNIC's failure must not stop the others' leases; it is logged in full.
        try:
            work(*args)
        except Exception:
            log.exception("%s/%s: DHCP client failed", entry.target.device, entry.target.vnic)
            # A timer that keeps failing must not spin the loop: try again later.
            entry.client.retransmit_at = max(entry.client.retransmit_at,
                                             time.time() + RETRY_AFTER_FAILURE)
            entry.client.no_offer = True  # so the no_offer bound is no timer any more
