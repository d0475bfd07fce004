"""Processes killed mid-burst: the register daemon at 50+ points (SIGKILL at random moments and
at each named crash point — between the journal write and the reply, between the kick and its
event), the store aggregator likewise. Every accepted command took effect once, every journaled
event reached the store once, in order."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.faults.conftest import FaultReport
from tests.faults.rig import FaultRig
from tests.support.register import until

#: Crash points the daemon passes on the way (daemon/register/faults.py), each hit several
#: times in the run: between the intent's commit and the ack, after the ack, between the kick
#: and its journaled event, between the result's commit and its reply.
CRASH_POINTS = ("after_intent", "after_ack", "after_kick", "after_result_commit")
REGISTER_KILLS = 52
AGGREGATOR_KILLS = 12
pytestmark = pytest.mark.timeout(300)


async def test_register_killed_at_52_points_of_a_burst(tmp_path: Path,
                                                      fault_report: FaultReport) -> None:
    rng = random.Random(1042)
    async with FaultRig(tmp_path) as rig:
        await rig.open_session()
        kills = 0
        how: list[str] = []

        async def killer() -> None:
            nonlocal kills
            while kills < REGISTER_KILLS:
                # Let the restarted daemon do some work first: a crash loop proves nothing.
                await rig.until_answered(rng.randint(1, 2))
                if kills % 3 == 2:
                    # A named point: the daemon dies there by itself (os._exit, like SIGKILL),
                    # at the 1st or 2nd pass after this start.
                    point = CRASH_POINTS[(kills // 3) % len(CRASH_POINTS)]
                    rig.register.sigkill()
                    await rig.register.wait_exit(timeout=10)
                    rig.register.start(KASSAD_CRASH_AT=f"{point}:{rng.randint(1, 2)}")
                    how.append(point)
                    await rig.register.wait_exit(timeout=60)
                else:
                    await asyncio.sleep(rng.uniform(0, 0.25))  # a random moment of the burst
                    rig.register.sigkill()
                    how.append("sigkill")
                    await rig.register.wait_exit(timeout=10)
                kills += 1
                rig.register.start()

        async with asyncio.TaskGroup() as group:
            group.create_task(killer())
            group.create_task(rig.burst(4, until_done=lambda: kills >= REGISTER_KILLS))
        figures = await rig.settle_and_check()
    assert kills == REGISTER_KILLS
    assert {"sigkill", *CRASH_POINTS} <= set(how)
    figures.faults = kills
    fault_report.add("register SIGKILLed / crashed at a named point", figures)
    assert figures.indeterminate > 0  # the named points leave some, as the contract says


async def test_aggregator_killed_at_12_points_of_a_burst(tmp_path: Path,
                                                        fault_report: FaultReport) -> None:
    rng = random.Random(2024)
    async with FaultRig(tmp_path) as rig:
        await rig.open_session()
        kills = 0

        async def killer() -> None:
            nonlocal kills
            while kills < AGGREGATOR_KILLS:
                stored = rig.store_acked()
                # Kill it while it ingests: after it stored something more since its start.
                await until(lambda s=stored: rig.store_acked() > s, timeout=60,
                            what="the aggregator storing more")
                await asyncio.sleep(rng.uniform(0, 0.2))
                rig.aggregator.sigkill()
                await rig.aggregator.wait_exit(timeout=10)
                kills += 1
                rig.aggregator.start()

        async with asyncio.TaskGroup() as group:
            group.create_task(killer())
            group.create_task(rig.burst(4, until_done=lambda: kills >= AGGREGATOR_KILLS))
        figures = await rig.settle_and_check()
    figures.faults = kills
    fault_report.add("store aggregator SIGKILLed while ingesting", figures)
