"""Re-homing: runtimes follow their parent interface to its new subnet.

The engine allows **one MACVLAN network per parent interface** ("network ... is already
using parent interface"), so a move is made per parent, for every vNIC on it at once:

1. claim every member device (the per-device operation lock; a busy device postpones the
   whole move, which is retried shortly) and journal an operation `rehome` for each;
2. `disconnecting` — disconnect the members from the old network and remove it (it must
   be ours and have no other users);
3. `connecting` — get or create `macvlan_<parent>_<new subnet>` with the parent's gateway
   (the host's own address reserved), then connect the members with their MACs: static
   IPs that still fit the new subnet first, then the others, so the engine's automatic
   assignment can never take an address a static vNIC needs;
4. set the MACs the engine could not (older engines), update `runtime_vnics.json`, record
   the outcome in each device's network events, publish `runtime.rehome`.

The containers are never restarted.  A failure in step 2 or 3 puts the members back on
the old network (re-created when needed) and reports why.  A static IP that does not fit
the new subnet is handled by `ORCH_REHOME_STATIC_MISFIT`: `assign` (default) connects the
vNIC with an engine-assigned address and says so; `detach` leaves it disconnected with the
reason in its events.  The requested static IP stays in the vNIC file either way, so a
later move back to a subnet where it fits restores it.

Crash safety: each member's journal entry holds the target (parent, subnet, gateway, host
address) and the networks being left.  After a restart the move is carried through with
that target (every step is idempotent); the next pass then re-checks the parent's
current subnet and moves again if it changed meanwhile.

Which networks move (`check_parent`): a MACVLAN network on an active parent whose subnet
is no longer among the parent's subnets, when it *follows* the parent — its subnet is
one the parent was seen to carry (`hostnets.py`), or one of its vNICs had its subnet
detected from the parent.  Nothing moves while a parent is inactive (link down, address
gone, device removed): networks and runtimes are left as they are until a subnet appears.
A gateway-only change does not move anything (the network keeps its gateway).

Modules: `watch` (the triggers: network events, discoveries, restarts), `check` (which
parents move, the pass, carrying moves through after a restart), `move` (claiming,
leaving, connecting), `settle` (putting back after a failure, the records a move leaves),
`model` (the target and members of a move).
"""
