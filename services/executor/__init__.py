"""executor — every Docker call of the agent.

Owns: runtime containers and their internal and MACVLAN networks, the vNIC store
(`runtime_vnics.json`), the operations journal, the live view of the engine, the
run_command proxy, self-destruct.  Objects it creates carry its labels; it only ever
changes objects that carry them.
Never: talks to the cloud (the gateway validates and routes commands to it).

Module map: `service.py` (bus methods, loops) → `create.py`, `lifecycle.py`,
`status.py`, `selfdestruct.py`, `reconcile.py` (the operations) over `context.py`;
engine access in `docker_api.py` (pool, availability), `events.py` (watcher thread),
`liveview.py`, `networks.py`, `containers.py`, `macfix.py`; pure rules in `validate.py`,
`names.py`, `ipam.py`, `labels.py`; state files in `journal.py`, `vnic_store.py` and
`devicefile.py`.
"""
