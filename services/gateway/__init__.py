"""gateway — the only process that talks to the cloud.

Owns: the mTLS Socket.IO client, the agent identity, contract validation of cloud
commands, the topic → bus route table and the heartbeat emit.
Never: touches Docker or netlink.

At this stage the process holds its bus presence only (sockets, ping, liveness beat); the
cloud link is built on top of it.
"""
