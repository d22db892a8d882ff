"""netbridge — brings the network monitor onto the bus.

Owns: the netmon socket client, the interface cache, `net.*` events on the bus and the
`host_interfaces` / `interfaces` request methods.
Never: changes anything on the host, talks to Docker or the cloud.
"""
