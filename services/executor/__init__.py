"""executor — every Docker call of the agent.

Owns: runtimes, internal and MACVLAN networks, the vNIC store, the operations journal, the
run_command proxy, self-destruct and re-homing on network change.
Never: talks to the cloud.

At this stage the process holds its bus presence only (sockets, ping, liveness beat); the
Docker work is built on top of it.
"""
