"""metrics — host metrics, per-device usage, consumption history and the heartbeat sample.

Owns: psutil sampling of the host on a drift-free schedule (published as `metrics.host`),
per-container CPU and memory of the managed runtimes (cgroup files or the engine's stats
streams), the consumption history of the host and of each device (SQLite under the state
directory, 48 h), and the request methods that answer consumption queries.

Never: changes anything on the host or in the engine (list, inspect, stats and events
only), talks to the cloud, or looks at containers that are not this agent's runtimes.

Modules: `service` (loops and request methods), `host` (psutil), `devices` (one device
collection cycle), `containers` (engine calls, limits), `engine` (a small read-only Engine
API client) and `access` (its thread pool and availability), `cgroups` and `streams` (the
two sources of container figures), `watch` (the engine events that say when to list),
`readings` (counters → samples), `history` (SQLite), `periods` (the period syntax).
Decisions and figures: `docs/metrics.md`.
"""
