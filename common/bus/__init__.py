"""The agent's ZeroMQ bus.

Concurrency model: asyncio with `zmq.asyncio`; one context per process, created by the
service runner (`common/service.py`) together with every socket the process uses, and
handed in.  Frames are encoded and decoded only by `common/wire.py`.

Modules, each owning one thing:

* `endpoints` — the endpoint table (`ipc://` files in one private run directory);
* `options` — the one place where socket options are set;
* `reader` — the one place that reads a socket from the event loop (its descriptor);
* `pubsub` — `Publisher` and `Subscriber`: lossy, never blocking, gaps counted;
* `rpc` — `RpcServer` and `RpcClient`: DEALER → ROUTER calls with deadlines and exactly
  one reply each;
* `errors` — the typed errors and the `Counters` of a process.

The names below are the bus's public interface; import them from `common.bus`.
"""

from common.bus.endpoints import SERVICES, Endpoints, prepare_run_dir
from common.bus.errors import BusError, Counters, RemoteError, RpcError, RpcTimeout
from common.bus.pubsub import Publisher, Subscriber
from common.bus.rpc import Handler, RpcClient, RpcServer

__all__ = [
    "SERVICES", "BusError", "Counters", "Endpoints", "Handler", "Publisher", "RemoteError",
    "RpcClient", "RpcError", "RpcServer", "RpcTimeout", "Subscriber", "prepare_run_dir",
]
