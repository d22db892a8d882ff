"""executor — every Docker call of the agent.

Owns: runtime containers and their internal and MACVLAN networks, the vNIC store
(`runtime_vnics.json`), the operations journal, the live view of the engine, the
run_command proxy, self-destruct.  Objects it creates carry its labels
(`common/labels.py`); it only ever changes objects that carry them.
Never: talks to the cloud (the gateway validates and routes commands to it).

Module map (`service.py` holds the bus methods and loops, over `context.py`; typed errors
in `errors.py`):

* `engine/` — engine access: `docker_api` (the SDK handle over `common/enginepool.py`),
  `events` (watcher thread), `liveview`, `containers`, `macfix`, `selfinfo`;
* `runtime/` — runtime lifecycle and its records: `create`, `lifecycle`, `status`,
  `selfdestruct`, `reconcile` (the operations), `watchdog` and `bootsync` (restarts,
  the crash-loop guard, starting what should run: docs/lifecycle.md), `validate`
  (request checks over `common/vnic_rules.py`), `registry` (one operation per device),
  state files `journal`, `intents` (desired states), `vnic_store`, `devicefile`;
* `net/` — networks: `networks`, `ipam`, `names`, `netinfo` (the host's interfaces),
  `hostnets` (subnets each parent carried), `netevents`;
* `rehome/` — re-homing: `watch` (triggers), `check` (which parents move, the pass,
  recovery), `move`, `settle`, `model`;
* `proxy/` — the run_command HTTP proxy: `forward`, `exchange`, `http`.
* `dhcp/` — DHCP leases of "dhcp" vNICs: `keeper` (one thread), `client`, `netns`,
  `lease`, `packet`, and `wiring` (the hook points the operations call).
"""
