"""The broker and the network fail under a burst: the broker SIGKILLed (its persistence a
stale snapshot) and restarted, the register's link to it cut, stalled past the keepalive,
and reset. Every accepted command took effect once, every journaled event reached the store
once, in order."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.conftest import FaultReport
from tests.faults.rig import FaultRig
from tests.support.register import until

pytestmark = pytest.mark.timeout(240)

BROKER_KILLS = 6
#: Each network fault, in a seeded random order: a cut (connections reset, new ones refused),
#: a short stall (bytes held, less than the keepalive), a long stall (past the register's
#: 5 s keepalive: both ends give the connection up), a reset (RST, reconnect at once).
NETWORK_FAULTS = ["cut"] * 6 + ["stall"] * 4 + ["long_stall"] + ["reset"] * 7


async def test_broker_killed_and_restarted_6_times_in_a_burst(
        tmp_path: Path, fault_report: FaultReport) -> None:
    rng = random.Random(6)
    async with FaultRig(tmp_path) as rig:
        await rig.open_session()
        kills = 0

        async def killer() -> None:
            nonlocal kills
            while kills < BROKER_KILLS:
                await rig.until_answered(rng.randint(5, 20))
                await asyncio.sleep(rng.uniform(0, 0.2))  # a random moment of the burst
                # SIGKILL: no persistence save (the snapshot it reloads is stale), no clean
                # disconnects, queued QoS 1 messages gone. Odd kills come back at once, even
                # ones after the register has noticed and buffered in its journal.
                lost = rig.register.log_count("unreachable or lost")
                rig.broker.kill()
                if kills % 2:
                    await until(lambda n=lost: rig.register.log_count("unreachable or lost") > n,
                                timeout=30, what="the register to notice the broker gone")
                rig.broker.start()
                kills += 1

        async with asyncio.TaskGroup() as group:
            group.create_task(killer())
            group.create_task(rig.burst(4, until_done=lambda: kills >= BROKER_KILLS,
                                        at_least=60))
        figures = await rig.settle_and_check()
    figures.faults = kills
    fault_report.add("broker SIGKILLed and restarted", figures)


async def test_network_cut_stalled_and_reset_18_times_in_a_burst(
        tmp_path: Path, fault_report: FaultReport) -> None:
    rng = random.Random(18)
    faults = list(NETWORK_FAULTS)
    rng.shuffle(faults)
    done: Counter[str] = Counter()
    async with FaultRig(tmp_path) as rig:
        await rig.open_session()
        finished = False

        async def saboteur() -> None:
            nonlocal finished
            for fault in faults:
                await rig.until_answered(rng.randint(3, 10))
                if fault == "cut":
                    rig.proxy.cut()
                    await asyncio.sleep(rng.uniform(0.3, 1.5))  # how long the cable is out
                elif fault == "stall":
                    rig.proxy.stall()
                    await asyncio.sleep(rng.uniform(0.5, 2.0))
                elif fault == "long_stall":
                    connects = rig.proxy.connections_accepted
                    rig.proxy.stall()
                    # Past the keepalive the register gives the connection up and dials again
                    # (through the stalled proxy, which accepts and forwards nothing).
                    await until(lambda c=connects: rig.proxy.connections_accepted > c,
                                timeout=30, what="the register to reconnect")
                else:
                    rig.proxy.reset()
                rig.proxy.restore()
                done[fault] += 1
            finished = True

        async with asyncio.TaskGroup() as group:
            group.create_task(saboteur())
            group.create_task(rig.burst(4, until_done=lambda: finished))
        figures = await rig.settle_and_check()
    assert sum(done.values()) == len(NETWORK_FAULTS)
    figures.faults = sum(done.values())
    fault_report.add("register-broker link cut, stalled, reset", figures)
