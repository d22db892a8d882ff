"""Network monitor sidecar.

Owns netlink monitoring of the host's IPv4 interfaces, per-interface debouncing, the
discovery snapshot and the Unix socket server that streams JSON lines to the netbridge.
Never knows about Docker, the bus or the cloud.

Concurrency model: one asyncio event loop; pyroute2's asyncio netlink sockets, one bound
to the link / IPv4 address / IPv4 route multicast groups for events and one for dumps.
"""
