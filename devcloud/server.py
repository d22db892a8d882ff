"""``DevCloud``: the development cloud assembled, for the CLI and for tests.

Three listeners, one asyncio loop:

* Socket.IO over TLS that requires a client certificate from the cloud's CA
  (the agent's link), on ``host:port``;
* provisioning over TLS, no client certificate (the installer), on
  ``host:provision_port``;
* the admin interface, plain HTTP on 127.0.0.1 only, on ``admin_port``, behind a token
  made afresh at every start and written (0600) to ``<dir>/admin.token``.

Every port may be 0 (ephemeral); the bound ports are readable after
``start()`` and are written to ``<dir>/run.json`` for the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from cryptography import x509

from devcloud import admin, agentcerts, pki, provisioning
from devcloud.adminclient import AdminClient
from devcloud.enroll import Credentials, enroll, write_credentials
from devcloud.fsutil import write_atomic
from devcloud.hub import AckRecord, AgentHub, Heartbeat, Refusal
from devcloud.registry import Registry

log = logging.getLogger(__name__)

PKI_DIR = "pki"
REGISTRY_FILE = "state/registry.json"
RUN_FILE = "run.json"
DEFAULT_PORT = 3001
DEFAULT_PROVISION_PORT = 3000
DEFAULT_ADMIN_PORT = 3002


def server_ssl_context(
    cert: Path, key: Path, cafile: Path | None, *, require_client_cert: bool
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if require_client_cert:
        if cafile is None:
            raise ValueError("a CA file is needed to verify client certificates")
        ctx.load_verify_locations(cafile=str(cafile))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128, reuse_port=False)


def _dial_host(host: str) -> str:
    """The address a local client dials for a listener bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class DevCloud:
    """The development cloud in this process. Use ``async with DevCloud(...) as cloud``."""

    def __init__(
        self,
        directory: Path | str,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        admin_port: int = DEFAULT_ADMIN_PORT,
        provision_port: int = DEFAULT_PROVISION_PORT,
        *,
        server_names: tuple[str, ...] | list[str] = (),
        id_ttl: int = 900,
        cert_days: float = 365,
        ping_interval: float = 25,
        ping_timeout: float = 20,
        command_timeout: float = 15,
        server_cert: Path | None = None,
        server_key: Path | None = None,
    ) -> None:
        """``server_cert``/``server_key`` replace the server certificate on both TLS
        listeners (for tests that need a wrong host name or an expired one)."""
        self.directory = Path(directory)
        self.host = host
        self._requested = {"port": port, "provision_port": provision_port, "admin_port": admin_port}
        self.server_names = tuple(server_names)
        self.id_ttl = id_ttl
        self.cert_days = cert_days
        self._hub_options = {
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "default_timeout": command_timeout,
        }
        self._server_override = (server_cert, server_key)
        self.pki_paths = pki.PkiPaths(self.directory / PKI_DIR)
        self.port = 0
        self.provision_port = 0
        self.admin_port = 0
        self._runners: list[web.AppRunner] = []
        self._registry: Registry | None = None
        self._hub: AgentHub | None = None
        self._ca: pki.CertificateAuthority | None = None
        self.admin_token = secrets.token_urlsafe(32)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.pki_paths = pki.init_pki(self.directory / PKI_DIR, self.server_names)
        self._ca = pki.load_ca(self.pki_paths.directory)
        self._registry = Registry(
            self.directory / REGISTRY_FILE, id_ttl=self.id_ttl, cert_days=self.cert_days
        )
        self._hub = AgentHub(self._registry, **self._hub_options)
        cert = self._server_override[0] or self.pki_paths.server_cert
        key = self._server_override[1] or self.pki_paths.server_key
        sio_ctx = server_ssl_context(cert, key, self.pki_paths.ca_cert, require_client_cert=True)
        prov_ctx = server_ssl_context(cert, key, None, require_client_cert=False)

        # Before the listener exists, so no client ever meets an interface without a token.
        write_atomic(self.admin_token_path, (self.admin_token + "\n").encode(), 0o600)
        sio_app = web.Application()
        self._hub.attach(sio_app)
        try:
            self.port = await self._serve(sio_app, self.host, self._requested["port"], sio_ctx)
            self.provision_port = await self._serve(
                provisioning.make_app(self._registry, self._ca),
                self.host,
                self._requested["provision_port"],
                prov_ctx,
            )
            self.admin_port = await self._serve(
                admin.make_app(self._hub, self.info, self.admin_token),
                admin.ADMIN_HOST,
                self._requested["admin_port"],
                None,
            )
        except BaseException:
            await self.stop()
            raise
        write_atomic(
            self.directory / RUN_FILE, (json.dumps(self.info(), indent=2) + "\n").encode(), 0o644
        )
        log.info(
            "devcloud up: agents %s, provisioning %s, admin %s",
            self.url,
            self.provision_url,
            self.admin_url,
        )

    async def _serve(
        self, app: web.Application, host: str, port: int, ctx: ssl.SSLContext | None
    ) -> int:
        # Open websockets and admin long-polls only end when cut, so a long
        # grace period would only delay every stop.
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        self._runners.append(runner)
        sock = _bind(host, port)
        site = web.SockSite(runner, sock, ssl_context=ctx)
        await site.start()
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        if self._hub is not None:
            for agent in self._hub.agents():
                if agent["connected"]:
                    await self._hub.disconnect_agent(agent["id"])
            # Ends Engine.IO's background tasks and open websockets, so the
            # runner below does not wait for them.
            await self._hub.sio.shutdown()
        while self._runners:
            await self._runners.pop().cleanup()
        run_file = self.directory / RUN_FILE
        try:
            if json.loads(run_file.read_text()).get("pid") == os.getpid():
                run_file.unlink()
        except (OSError, ValueError):
            pass

    async def __aenter__(self) -> DevCloud:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """The cloud URL an agent uses (``ORCH_CLOUD_URL``)."""
        return f"https://{_dial_host(self.host)}:{self.port}"

    @property
    def provision_url(self) -> str:
        return f"https://{_dial_host(self.host)}:{self.provision_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{admin.ADMIN_HOST}:{self.admin_port}"

    @property
    def admin_token_path(self) -> Path:
        return self.directory / admin.TOKEN_FILE

    def admin_client(self, timeout: float = 10.0) -> AdminClient:
        """A client of this cloud's admin interface, holding its token."""
        return AdminClient(self.admin_url, self.admin_token, timeout=timeout)

    @property
    def ca_cert_path(self) -> Path:
        return self.pki_paths.ca_cert

    @property
    def ca(self) -> pki.CertificateAuthority:
        if self._ca is None:
            raise RuntimeError("DevCloud is not started")
        return self._ca

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": self.host,
            "port": self.port,
            "provision_port": self.provision_port,
            "admin_port": self.admin_port,
            "url": self.url,
            "provision_url": self.provision_url,
            "admin_url": self.admin_url,
            "ca_cert": str(self.ca_cert_path),
        }

    @property
    def hub(self) -> AgentHub:
        if self._hub is None:
            raise RuntimeError("DevCloud is not started")
        return self._hub

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise RuntimeError("DevCloud is not started")
        return self._registry

    # ------------------------------------------------------------ agents

    async def enroll(self, out_dir: Path | str, *, key_kind: str = "ec") -> Credentials:
        """Enrol a new agent through the HTTP provisioning endpoints (the installer's way)."""
        return await enroll(
            self.provision_url, Path(out_dir), cafile=self.ca_cert_path, key_kind=key_kind
        )

    def issue_credentials(self, out_dir: Path | str) -> Credentials:
        """Enrol a new agent in-process (same registry rules, no HTTP)."""
        issued = self.registry.request_id()
        key = pki.make_key()
        done = self.registry.enroll(self.ca, agentcerts.make_csr(key, issued.id), issued.id)
        return write_credentials(
            Path(out_dir),
            done.agent_id,
            done.certificate.cert_pem,
            pki.key_to_pem(key),
            self.ca.cert_pem,
            expires_at=issued.as_data()["expiresAt"],
            expires_in=issued.expires_in,
        )

    def register_certificate(self, cert: x509.Certificate) -> str:
        """Admit a client certificate made out of band (e.g. ``agentcerts.issue_client_cert``)."""
        return self.registry.register_certificate(cert)

    def agents(self) -> list[dict[str, Any]]:
        return self.hub.agents()

    async def send(
        self,
        agent_id: str,
        topic: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        stamp: bool = True,
    ) -> Any:
        """Emit a command with an ack callback; return the ack (``AckTimeout`` if none)."""
        record = await self.send_record(
            agent_id, topic, {} if payload is None else payload, timeout=timeout, stamp=stamp
        )
        return record.ack

    async def send_record(
        self,
        agent_id: str,
        topic: str,
        payload: Any,
        *,
        timeout: float | None = None,
        stamp: bool = True,
    ) -> AckRecord:
        return await self.hub.send(agent_id, topic, payload, timeout=timeout, stamp=stamp)

    @property
    def acks(self) -> list[AckRecord]:
        return list(self.hub.acks)

    @property
    def refusals(self) -> list[Refusal]:
        return list(self.hub.refusals)

    async def wait_connected(self, agent_id: str, timeout: float = 15) -> bool:
        return await self.hub.wait_connected(agent_id, timeout)

    async def wait_disconnected(self, agent_id: str, timeout: float = 15) -> bool:
        return await self.hub.wait_for(lambda: not self.hub.is_connected(agent_id), timeout)

    async def wait_heartbeats(
        self, agent_id: str, count: int = 1, *, after_seq: int = 0, timeout: float = 15
    ) -> list[Heartbeat]:
        return await self.hub.wait_heartbeats(agent_id, count, after_seq=after_seq, timeout=timeout)

    async def wait_refusals(self, count: int = 1, timeout: float = 10) -> list[Refusal]:
        await self.hub.wait_for(lambda: len(self.hub.refusals) >= count, timeout)
        return list(self.hub.refusals)

    async def disconnect_agent(self, agent_id: str) -> bool:
        return await self.hub.disconnect_agent(agent_id)


def read_run_file(directory: Path | str) -> dict[str, Any]:
    """The addresses a running ``serve`` wrote (for CLI commands and subprocess tests)."""
    return dict(json.loads((Path(directory) / RUN_FILE).read_text()))
