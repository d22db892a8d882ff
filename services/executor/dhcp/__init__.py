"""dhcp — real DHCP leases for the runtimes' "dhcp" vNICs.

Owns: a DHCP client per dhcp vNIC (`client.py`, RFC 2131, standard library only) running
in the executor process, with its socket opened inside the runtime's network namespace
(`netns.py`), the lease applied there (address, default route, resolv.conf), all clients
driven by one thread (`keeper.py`), and the lease files `<state>/dhcp/*.json`
(`lease.py`).  Nothing is needed inside the runtime image.
Never: touches an interface other than the vNIC's (found by its MAC), or keeps an address
on it that the LAN's server did not lease.

API: `LeaseKeeper(state_dir).start()`, then `attach(VnicTarget(...))`, `status(device,
vnic)`, `detach`, `release`, `forget`, `known`, `stop`.  See docs/dhcp.md.
"""

from services.executor.dhcp.client import Timing
from services.executor.dhcp.keeper import DhcpError, LeaseKeeper, VnicTarget

__all__ = ["DhcpError", "LeaseKeeper", "Timing", "VnicTarget"]
