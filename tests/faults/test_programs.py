"""Each program of the suite killed (-9) or restarted by supervisorctl under a steady
command stream: every command gets one ack, nothing is half-created, state stays readable,
and a change the cloud resends after a gateway kill runs at most once."""

from __future__ import annotations

import functools

import pytest

from testkit import faults
from testkit.suite import PROGRAMS
from tests.faults.conftest import Faulty

pytestmark = [pytest.mark.docker, pytest.mark.netns]

# The gateway last: it is the one whose death makes the cloud resend.
ORDER = (*tuple(p for p in PROGRAMS if p != "gateway"), "gateway")
SERVED = ("creating", "deleting")


def check_once(f: Faulty) -> None:
    """The executor ran at most one state change per command, however often the cloud
    resent it (a trace may be missed while the executor restarts, never invented)."""
    acks = f.ledger.acks.values()
    served = sum(1 for a in acks if isinstance(a, dict) and a.get("status") in SERVED)
    assert served > 0, f.ledger.summary()
    assert 0 < f.executions() <= len(f.ledger.acks), (f.executions(), f.ledger.summary())


async def test_kill_9_of_each_program_in_turn(faulty: Faulty) -> None:
    await faulty.under_stream([functools.partial(faults.kill9, faulty.agent, p) for p in ORDER])
    # The gateway's death loses the acks in flight: the cloud resends those.
    faulty.check_acks(resends_allowed=True)
    check_once(faulty)
    await faulty.check_settled()


async def test_supervisorctl_restart_of_each_program_in_turn(faulty: Faulty) -> None:
    await faulty.under_stream([functools.partial(faults.ctl_restart, faulty.agent, p)
                               for p in ORDER])
    # A gateway stopped politely may still drop the link with commands in flight.
    faulty.check_acks(resends_allowed=True)
    check_once(faulty)
    await faulty.check_settled()

