"""Docker test environment: the engine, the local base image, the runtime stand-in.

Importable without pytest. Everything is idempotent and cached: the engine is
started only when it does not answer, the base image is built only when its tag
is missing, and the stand-in image is rebuilt only when its sources changed
(the image carries a hash of tests/standin/ as a label).

What tests create is labelled, never the image: a container made from the stand-in image
by a person (`make run`) carries no test label and is never swept.  Each test session
labels its containers, networks and volumes `orchestrator.test=<session>`, and gives the
agents it starts instance ids beginning `oattest<session>`, so the session's sweep finds
what the agents made too (their ownership labels carry the instance id).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.models.containers
import docker.models.networks
import docker.types

from testkit.helpers import wait_for

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
STANDIN_DIR = REPO / "tests" / "standin"
BASE_IMAGE = os.environ.get("ORCH_BASE_IMAGE", "orchestrator/base:bookworm")
STANDIN_IMAGE = "orchestrator/openplc-standin:test"
# Everything tests create carries this label, valued with the session, so leftovers can
# be found; the stand-in image does not carry it (only its sources' hash, under its own key).
TEST_LABEL = "orchestrator.test"
SESSION = uuid.uuid4().hex[:6]
TEST_LABELS = {TEST_LABEL: SESSION}
STANDIN_HASH_LABEL = "orchestrator.standin.hash"
# Agents started by tests get instance ids with this prefix (then the session): what they
# create carries `orchestrator.instance=<id>` (services/executor/labels.py).
TEST_INSTANCE_PREFIX = "oattest"
INSTANCE_LABEL = "orchestrator.instance"

ENGINE_SCRIPT = REPO / "install" / "docker-engine.sh"
BASE_SCRIPT = REPO / "install" / "build-base-image.sh"
_LOCK_FILE = REPO / ".build" / "dockerenv.lock"
# Test bridges take /28 blocks from the top of a documentation range.
TEST_BRIDGE_SUBNETS = [f"203.0.113.{16 * i}/28" for i in range(15, 7, -1)]
STANDIN_PORT = 8443

class DockerEnvError(Exception):
    """The Docker test environment could not be prepared."""


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Serialise builds between concurrent test sessions on one machine."""
    _LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(_LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_script(script: Path, timeout: float) -> None:
    if os.geteuid() != 0:
        raise DockerEnvError(f"{script.name} needs root; run it once as root")
    try:
        proc = subprocess.run(
            [str(script)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerEnvError(f"{script.name} did not finish within {timeout:.0f}s") from exc
    if proc.stderr:
        log.info("%s: %s", script.name, proc.stderr.strip())
    if proc.returncode != 0:
        raise DockerEnvError(
            f"{script.name} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )


def client(timeout: int = 120) -> docker.DockerClient:
    """A client for the local engine, API version negotiated with the server."""
    return docker.from_env(timeout=timeout)


def engine_answers() -> bool:
    try:
        with contextlib.closing(client(timeout=10)) as probe:
            return bool(probe.ping())
    except docker.errors.DockerException:
        return False


def ensure_engine() -> None:
    """Make sure the engine answers, starting (or installing) it when it does not."""
    if engine_answers():
        return
    with _build_lock():
        if not engine_answers():
            _run_script(ENGINE_SCRIPT, timeout=900)
    if not engine_answers():
        raise DockerEnvError("the Docker engine does not answer after docker-engine.sh")


def ensure_base_image(docker_client: docker.DockerClient | None = None) -> str:
    """Build the local Python base image when its tag is missing; returns the tag."""
    dc = docker_client or client()
    with _build_lock():
        try:
            dc.images.get(BASE_IMAGE)
            return BASE_IMAGE
        except docker.errors.ImageNotFound:
            pass
        started = time.monotonic()
        _run_script(BASE_SCRIPT, timeout=1800)
        log.info("built %s in %.0fs", BASE_IMAGE, time.monotonic() - started)
    return BASE_IMAGE


def standin_sources_hash() -> str:
    """Hash of everything that goes into the stand-in image."""
    digest = hashlib.sha256()
    for path in sorted(STANDIN_DIR.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(path.relative_to(STANDIN_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def ensure_standin_image(docker_client: docker.DockerClient | None = None) -> str:
    """Build the stand-in image when missing or stale; returns the tag."""
    dc = docker_client or client()
    ensure_base_image(dc)
    wanted = standin_sources_hash()
    with _build_lock():
        stale_id: str | None = None
        try:
            image = dc.images.get(STANDIN_IMAGE)
            # Builds from before the image stopped carrying the test label are rebuilt.
            if image.labels.get(STANDIN_HASH_LABEL) == wanted and TEST_LABEL not in image.labels:
                return STANDIN_IMAGE
            stale_id = image.id
        except docker.errors.ImageNotFound:
            pass
        log.info("building %s (sources %s)", STANDIN_IMAGE, wanted)
        try:
            dc.images.build(
                path=str(STANDIN_DIR),
                tag=STANDIN_IMAGE,
                labels={STANDIN_HASH_LABEL: wanted},
                pull=False,
                rm=True,
                forcerm=True,
            )
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            raise DockerEnvError(f"building {STANDIN_IMAGE} failed: {exc}") from exc
        if stale_id is not None:
            # The old build is now untagged; drop it unless a container still uses it.
            with contextlib.suppress(docker.errors.APIError):
                dc.images.remove(stale_id)
    return STANDIN_IMAGE


def test_instance(kind: str = "") -> str:
    """An agent instance id for a test: found by this session's sweep."""
    return f"{TEST_INSTANCE_PREFIX}{SESSION}{kind}{uuid.uuid4().hex[:6]}"


def remove_test_objects(docker_client: docker.DockerClient, session: str | None = None) -> None:
    """Remove what test session `session` created (every session's when None): containers,
    networks and volumes with the test label, and the containers and networks of agents
    running under a test instance id.  Nothing else: a container from the stand-in image
    without the test label (a person's `make run`) stays.

    The session fixture calls it at the end; by hand it cleans up an interrupted run.
    """
    label = TEST_LABEL if session is None else f"{TEST_LABEL}={session}"
    prefix = TEST_INSTANCE_PREFIX + (session or "")

    def ours(labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        tagged = labels.get(TEST_LABEL) == session if session else TEST_LABEL in labels
        return tagged or labels.get(INSTANCE_LABEL, "").startswith(prefix)

    containers = docker_client.containers.list(all=True, filters={"label": label}) + \
        docker_client.containers.list(all=True, filters={"label": INSTANCE_LABEL})
    for container in containers:
        if ours(container.labels):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True, v=True)
    networks = docker_client.networks.list(filters={"label": label}) + \
        docker_client.networks.list(filters={"label": INSTANCE_LABEL})
    for network in networks:
        if ours(network.attrs.get("Labels")):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                network.remove()
    for volume in docker_client.volumes.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            volume.remove(force=True)


def create_test_bridge(
    docker_client: docker.DockerClient, prefix: str = "oat-test"
) -> docker.models.networks.Network:
    """A labelled user-defined bridge on the first free test subnet; the caller removes it."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    for subnet in TEST_BRIDGE_SUBNETS:
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
        try:
            return docker_client.networks.create(
                name, driver="bridge", ipam=ipam, labels=TEST_LABELS, check_duplicate=True
            )
        except docker.errors.APIError as exc:
            if "overlap" not in str(exc).lower():
                raise
    raise DockerEnvError(f"no free test subnet among {TEST_BRIDGE_SUBNETS}")


@dataclass
class StandinContainer:
    container: docker.models.containers.Container
    network: str
    ip: str

    @property
    def base_url(self) -> str:
        return f"https://{self.ip}:{STANDIN_PORT}/api/"

    def refresh_ip(self) -> str:
        """Re-read the address (after a restart) and return it."""
        self.container.reload()
        self.ip = self.container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        return self.ip


def standin_answers(ip: str, timeout: float = 5.0) -> bool:
    """True when GET /api/version over HTTPS answers 200 (certificate not verified,
    as the runtime's clients do; no proxy from the environment)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(ip, STANDIN_PORT, timeout=timeout, context=context)
    return answers_ok(conn, "/api/version")


def answers_ok(conn: http.client.HTTPConnection, path: str) -> bool:
    """True when GET `path` on `conn` answers 200; False when it fails to; closes `conn`."""
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def start_standin(
    docker_client: docker.DockerClient,
    network: str,
    image: str = STANDIN_IMAGE,
    environment: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> StandinContainer:
    """Run a labelled stand-in on `network` and wait until it answers over HTTPS.

    The caller removes the container (`container.remove(force=True, v=True)`),
    also when this raises after the container was created.
    """
    container = docker_client.containers.run(
        image,
        detach=True,
        name=f"oat-standin-{uuid.uuid4().hex[:8]}",
        labels=TEST_LABELS,
        network=network,
        environment=environment or {},
    )
    standin = StandinContainer(container, network, "")
    try:
        wait_for(standin.refresh_ip, 15, what="stand-in address", ignore=(Exception,))
        wait_for(lambda: standin_answers(standin.ip), timeout, what="stand-in answering")
    except AssertionError:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=True)
        raise
    return standin
