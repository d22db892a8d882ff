"""Metrics' handle on the engine: one `Engine` client, a bounded thread pool, and the
engine's availability.

Concurrency: every blocking engine call runs in a small `ThreadPoolExecutor`, so the bus
loop never waits on the engine.  A call that fails at the transport level (socket missing,
connection refused or reset, timeout) marks the engine unavailable and raises
`DockerUnavailable`; from then on calls fail at once with that error until the next
collection cycle reconnects.  Engine refusals (`EngineError`, `NotFound`) pass through as
they are: they are the engine speaking, not the engine gone.

The API version is negotiated at each (re)connection, so the same code reads an old engine
(API 1.41) and a current one.
"""

from __future__ import annotations

from common.enginepool import EnginePool
from common.errors import DockerUnavailable
from services.metrics.engine import Engine, EngineAddressError, EngineError, EngineUnavailable


class EngineAccess(EnginePool[Engine]):
    def connect(self) -> None:
        """Build a fresh client and negotiate its version; DockerUnavailable on failure
        (a refusal counts too: an engine that cannot tell its version is of no use)."""
        try:
            engine = Engine(self.base_url, max(1.0, self.timeout))
            engine.negotiate()
        except (EngineAddressError, EngineUnavailable, EngineError) as exc:
            self.mark_unavailable(str(exc)[:300])
            raise DockerUnavailable(self.last_error) from None
        self._install(engine, engine.api_version)

    def is_transport(self, exc: BaseException) -> bool:
        return isinstance(exc, EngineUnavailable)
