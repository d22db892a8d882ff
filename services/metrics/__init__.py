"""metrics — host metrics, consumption history and the heartbeat sample.

Owns: psutil sampling of the host on a drift-free schedule (published as `metrics.host`),
the orchestrator consumption history (SQLite under the state directory, 48 h), and the
request methods that answer consumption queries.

Never: changes anything on the host, talks to the cloud, or calls Docker for writes.
"""
