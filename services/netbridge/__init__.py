"""netbridge — brings the network monitor onto the bus.

Owns: the netmon socket client, the interface cache, `net.*` events on the bus.
Never: changes anything on the host.

At this stage the process holds its bus presence only (sockets, ping, liveness beat); the
netmon client is built on top of it.
"""
