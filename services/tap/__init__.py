"""tap — prints what flows on the bus, for diagnostics.

Subscribes to every process's PUB socket (so request/reply shows up too, as the
`rpc.<server>.<method>` traces each request server publishes) and prints one line per
message: time, source, topic, sequence number (with gaps), decoded body.

Never: sends anything on the bus.
"""
