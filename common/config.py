"""The one configuration object of every agent process.

`Config.load(argv, environ)` is called once, in a process's `main()`, and is the only place
that reads `ORCH_*` environment variables.  Everything below `main()` receives the frozen
object, which is what lets tests build services against private run directories.

CLI flags override the environment; the environment overrides the defaults.
"""

from __future__ import annotations

import argparse
import grp
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PULL_POLICIES = ("auto", "always", "missing", "never")
RT_LIMIT_MODES = ("auto", "require", "off")
CONTAINER_STATS_MODES = ("auto", "cgroup", "api")
STATIC_MISFIT_MODES = ("assign", "detach")


class ConfigError(ValueError):
    """A setting has a value the agent cannot work with."""


@dataclass(frozen=True)
class Config:
    cloud_url: str = "https://api.getedge.me"
    # Development only: accept a plain http:// cloud URL (no TLS, no mTLS identity).
    allow_insecure_cloud: bool = False
    mtls_dir: Path = Path("~/.mtls")  # expanded when the config is loaded
    ca_file: Path | None = None
    state_dir: Path = Path("/var/orchestrator")
    run_dir: Path = Path("/run/orchestrator")
    log_level: str = "INFO"
    log_retention_days: int = 14
    log_max_file_mb: int = 64
    runtime_image: str = "ghcr.io/autonomy-logic/openplc-runtime"
    heartbeat_interval: float = 5.0
    metrics_interval: float = 5.0
    beat_interval: float = 2.0
    reconnect_max: float = 5.0
    rpc_timeout: float = 8.0
    replay_window: float = 600.0
    internal_pool: str = "172.30.0.0/16"
    internal_prefix: int = 28
    # --- executor: the Docker engine and the runtimes it creates ---
    docker_host: str = "unix:///var/run/docker.sock"
    docker_timeout: float = 15.0  # seconds per engine API call (streams excepted)
    docker_workers: int = 8  # bounded thread pool for blocking engine calls
    pull_policy: str = "auto"  # auto (pinned tags local-first) | always | missing | never
    pull_timeout: float = 120.0
    runtime_rt_limits: str = "auto"  # auto (fall back when refused) | require | off
    stop_grace: float = 10.0
    instance_id: str = ""  # empty: generated once and kept under the state directory
    agent_container: str = ""  # empty: detected (cgroup, mountinfo, hostname)
    sidecar_container: str = "autonomy_netmon"
    # The group shared by the agent's processes (a name, or a numeric gid for containers
    # that lack the name): owns the netmon socket (0660) and the run directory when the
    # programs run as different users.  Empty: the process's own group, nothing shared.
    agent_group: str = ""
    # --- metrics: where per-container usage comes from (docs/metrics.md) ---
    container_stats: str = "auto"  # auto (cgroup files when visible) | cgroup | api
    cgroup_root: Path = Path("/sys/fs/cgroup")
    # Re-homing: a static IP that does not fit the new subnet gets an engine-assigned
    # address (assign) or leaves the vNIC disconnected (detach).
    rehome_static_misfit: str = "assign"
    # --- lifecycle (docs/lifecycle.md): boot sync, watchdog, crash-loop guard ---
    restart_delay: float = 2.0  # seconds before the watchdog restarts a dead runtime
    restart_backoff_max: float = 60.0  # the delay doubles per exit in the window, up to this
    crash_loop_exits: int = 5  # this many unexpected exits ...
    crash_loop_window: float = 600.0  # ... within this many seconds: left stopped
    boot_netmon_wait: float = 60.0  # how long boot sync waits for the host's interfaces
    boot_concurrency: int = 4  # runtimes started at once by boot sync
    # Serial passthrough: the directory of stable adapter links that netmon reports and
    # `serial_configs.device_id` must name an entry of (docs/features.md).
    serial_by_id_dir: Path = Path("/dev/serial/by-id")
    # DHCP for "dhcp" vNICs (docs/dhcp.md): off leaves them on the engine's IPAM address
    # (the behaviour before leases); no_offer_after bounds the wait before `no_offer`;
    # lease_cap (seconds, 0: off) gives up longer leases early — a local policy, and how
    # a test sees expiry with a server whose shortest lease is two minutes.
    dhcp_leases: bool = True
    dhcp_no_offer_after: float = 30.0
    dhcp_lease_cap: float = 0.0
    # Interfaces taken as wireless besides those sysfs shows as such (names separated by
    # commas or spaces): their vNICs use a veth pair, not MACVLAN (docs/features.md).
    wireless_interfaces: str = ""

    # env name -> field name; every field can be set from the environment.
    @staticmethod
    def env_name(field_name: str) -> str:
        return "ORCH_" + field_name.upper()

    @classmethod
    def load(
        cls,
        argv: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        prog: str | None = None,
        description: str | None = None,
        parser: argparse.ArgumentParser | None = None,
    ) -> tuple[Config, argparse.Namespace]:
        """Build the config from the environment and CLI flags.

        Returns the config and the parsed namespace, so a program can add flags of its own
        to `parser` and read them back.
        """
        env = os.environ if environ is None else environ
        parser = parser or argparse.ArgumentParser(prog=prog, description=description)
        _add_flags(parser)
        args = parser.parse_args(list(argv) if argv is not None else None)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw: object | None = getattr(args, f.name, None)
            if raw is None:
                raw = env.get(cls.env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.setdefault("mtls_dir", Path(str(cls.mtls_dir)).expanduser())
        config = cls(**values)  # type: ignore[arg-type]
        config.check()
        return config, args

    def check(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        for name in ("heartbeat_interval", "metrics_interval", "beat_interval", "rpc_timeout",
                     "reconnect_max", "replay_window"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.pull_policy not in PULL_POLICIES:
            raise ConfigError(f"pull_policy must be one of {', '.join(PULL_POLICIES)}")
        if self.runtime_rt_limits not in RT_LIMIT_MODES:
            raise ConfigError(f"runtime_rt_limits must be one of {', '.join(RT_LIMIT_MODES)}")
        if self.container_stats not in CONTAINER_STATS_MODES:
            raise ConfigError(
                f"container_stats must be one of {', '.join(CONTAINER_STATS_MODES)}")
        if self.rehome_static_misfit not in STATIC_MISFIT_MODES:
            raise ConfigError("rehome_static_misfit must be one of "
                              f"{', '.join(STATIC_MISFIT_MODES)}")
        self._check_lifecycle()
        if self.docker_workers < 1:
            raise ConfigError("docker_workers must be at least 1")
        for name in ("docker_timeout", "pull_timeout", "dhcp_no_offer_after"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.dhcp_lease_cap < 0:
            raise ConfigError("dhcp_lease_cap must not be negative")
        if self.stop_grace < 0:
            raise ConfigError("stop_grace must not be negative")
        if not 16 <= self.internal_prefix <= 30:
            raise ConfigError("internal_prefix must be between 16 and 30")
        self._check_cloud_url()
        self.agent_gid()
        # A unix socket path is limited to 107 bytes; leave room for the endpoint names.
        if len(str(self.run_dir)) > 80:
            raise ConfigError(f"run directory path is too long for ipc endpoints: {self.run_dir}")

    def _check_lifecycle(self) -> None:
        for name in ("restart_delay", "boot_netmon_wait"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.restart_backoff_max < self.restart_delay:
            raise ConfigError("restart_backoff_max must be at least restart_delay")
        if self.crash_loop_exits < 1:
            raise ConfigError("crash_loop_exits must be at least 1")
        if self.crash_loop_window <= 0:
            raise ConfigError("crash_loop_window must be positive")
        if self.boot_concurrency < 1:
            raise ConfigError("boot_concurrency must be at least 1")

    def _check_cloud_url(self) -> None:
        scheme = urlsplit(self.cloud_url).scheme.lower()
        if scheme == "https":
            return
        if scheme == "http":
            if self.allow_insecure_cloud:
                return
            raise ConfigError(
                f"cloud URL {self.cloud_url} is plain http: commands and credentials would "
                "travel unencrypted and unauthenticated; use https://, or for development "
                "only set ORCH_ALLOW_INSECURE_CLOUD=1 (--allow-insecure-cloud)")
        raise ConfigError(f"cloud URL {self.cloud_url} must start with https://")

    def agent_gid(self) -> int | None:
        """The gid of `agent_group`, or None when no group is configured."""
        name = self.agent_group.strip()
        if not name:
            return None
        if name.isdigit():
            return int(name)
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise ConfigError(f"agent_group {name!r} is not a known group; "
                              "give a numeric gid") from None

    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def debug_log_dir(self) -> Path:
        return self.state_dir / "debug"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", dest="log_level", type=str.upper, choices=LOG_LEVELS)
    parser.add_argument("--state-dir", dest="state_dir")
    parser.add_argument("--run-dir", dest="run_dir")
    parser.add_argument("--cloud-url", dest="cloud_url")
    parser.add_argument("--allow-insecure-cloud", dest="allow_insecure_cloud",
                        action="store_const", const="1",
                        help="development only: accept a plain http:// cloud URL")
    parser.add_argument("--mtls-dir", dest="mtls_dir")
    parser.add_argument("--ca-file", dest="ca_file")
    parser.add_argument("--runtime-image", dest="runtime_image")


def _convert(name: str, type_name: object, raw: object) -> object:
    text = str(raw)
    kind = str(type_name)
    try:
        if "Path" in kind:
            return Path(text).expanduser()
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return _boolean(text)
    except ValueError as exc:
        raise ConfigError(f"{Config.env_name(name)}={text!r}: {exc}") from None
    if name == "log_level":
        return text.upper()
    return text


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")
