"""gateway — the only process that talks to the cloud.

Owns: the mTLS Socket.IO client, the agent identity, contract validation of cloud
commands, the topic → bus route table and the heartbeat emit.
Never: touches Docker or netlink.

Modules: `tls` (credentials, SSLContext, agent id), `link` (the connection loop),
`router` (the topic table and the one-ack rule), `replay` (idempotency), `heartbeat`,
`peers` (what the bus says about the other processes), `service` (the wiring).
"""
