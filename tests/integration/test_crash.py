"""The daemon killed in the middle of a burst: nothing acknowledged is lost, nothing is done
twice, the journal verifies, and an interrupted command is ``indeterminate``."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import ERRORS, CommandError, KassadClient
from kassad.daemon.contract.errors import ErrorCode
from kassad.daemon.journal.verify import verify_journal
from kassad.simulators.broker import MosquittoBroker
from tests.support.register import (
    RegisterProcess,
    broker_config,
    consumer_events,
    journal_events,
    running_consumer,
    until,
    write_config,
)


def card(n: int) -> dict[str, Any]:
    return {"kind": "other", "payment_type": "card", "amount": {"amount": n, "currency": "SEK"}}


@pytest.fixture
def register_process(broker: MosquittoBroker, tmp_path: Path) -> RegisterProcess:
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db")
    return RegisterProcess(config, tmp_path / "register.log")


async def _restart_when_dead(process: RegisterProcess) -> int:
    code = await process.wait_exit(timeout=60)
    process.start()
    return code


def _payments_by_cmd(journal: Path) -> Counter[str]:
    return Counter(e["cause"]["cmd_id"] for e in journal_events(journal)
                   if e["type"] == "payment.recorded")


async def test_crash_between_intent_and_result_makes_the_command_indeterminate(
        broker: MosquittoBroker, register_process: RegisterProcess, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    register_process.start(KASSAD_CRASH_AT="after_intent:21")  # the 20th payment
    answers: dict[str, str] = {}
    try:
        async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                                requester="pos-1", employee="e1", retry_interval=0.3) as pos:
            await pos.send("session.open", {"starting_float": {"amount": 0, "currency": "SEK"}},
                           cmd_id="open", ttl=60)
            restarter = asyncio.create_task(_restart_when_dead(register_process))
            for n in range(1, 41):
                cmd_id = f"pay-{n}"
                try:
                    await pos.send("payment.record", card(n), cmd_id=cmd_id, ttl=60)
                    answers[cmd_id] = "ok"
                except ERRORS[ErrorCode.INDETERMINATE] as e:
                    answers[cmd_id] = "indeterminate"
                    assert "not changed" in e.message
            assert await restarter == 137
            status = await pos.send("cmd.status", {"of_cmd_id": "pay-20"})
            assert status.data["command"]["status"] == "indeterminate"
    finally:
        register_process.terminate()

    assert answers["pay-20"] == "indeterminate"
    assert [c for c, a in answers.items() if a != "ok"] == ["pay-20"]
    payments = _payments_by_cmd(journal)
    assert "pay-20" not in payments  # session commands are all-or-nothing
    assert set(payments) == {c for c, a in answers.items() if a == "ok"}
    assert set(payments.values()) == {1}
    types = [e["type"] for e in journal_events(journal)]
    assert types.count("cmd.indeterminate") == 1
    assert verify_journal(journal).ok


async def test_sigkill_in_a_burst_loses_nothing_acknowledged(
        broker: MosquittoBroker, register_process: RegisterProcess, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    register_process.start()
    acknowledged: dict[str, str] = {}  # cmd_id → outcome the POS was told
    kill_after = random.Random(7).randint(40, 120)
    killed = asyncio.Event()
    try:
        async with running_consumer(broker.port, tmp_path / "agg.db") as agg, \
                KassadClient(broker_config(broker.port), store="S1", register="R1",
                             requester="pos-1", employee="e1", retry_interval=0.3) as pos:
            await pos.send("session.open", {"starting_float": {"amount": 0, "currency": "SEK"}},
                           ttl=60)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(1, 201):
                queue.put_nowait(n)

            async def worker() -> None:
                while not queue.empty():
                    n = queue.get_nowait()
                    try:
                        await pos.send("payment.record", card(n), cmd_id=f"pay-{n}", ttl=90)
                        acknowledged[f"pay-{n}"] = "ok"
                    except CommandError as e:
                        acknowledged[f"pay-{n}"] = e.code
                    if len(acknowledged) == kill_after and not killed.is_set():
                        killed.set()
                        register_process.kill()  # SIGKILL: no cleanup, mid-burst
                        register_process.start()

            async with asyncio.TaskGroup() as group:
                for _ in range(6):
                    group.create_task(worker())
            assert killed.is_set()
            last = len(journal_events(journal))
            await until(lambda: max(agg.acked("R1").values(), default=0) >= last,
                        timeout=60, wake=agg.progress, what="consumer caught up")
    finally:
        register_process.terminate()

    assert len(acknowledged) == 200
    assert set(acknowledged.values()) <= {"ok", "indeterminate"}
    payments = _payments_by_cmd(journal)
    # Every payment the POS was told is done is journaled, and nothing is journaled twice.
    assert {c for c, a in acknowledged.items() if a == "ok"} == set(payments)
    assert set(payments.values()) == {1}
    report = verify_journal(journal)
    assert report.ok, report.summary()
    stored = consumer_events(tmp_path / "agg.db")
    seqs = [e["seq"] for e in stored]
    assert seqs == sorted(set(seqs))
    assert stored == journal_events(journal)[: len(stored)]


async def test_a_stop_under_a_steady_stream_of_commands_finishes_the_one_in_hand(
        broker: MosquittoBroker, register_process: RegisterProcess, tmp_path: Path) -> None:
    """SIGTERM while POS keep sending: the daemon finishes the command in hand and takes no
    other (queued ones are resent to the next start), instead of waiting for a queue that
    never empties."""
    register_process.start()
    answered: dict[str, str] = {}
    stopping = asyncio.Event()
    async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                            requester="pos-1", employee="e1", retry_interval=0.3) as pos:
        await pos.send("session.open", {"starting_float": {"amount": 0, "currency": "SEK"}},
                       ttl=60)

        async def worker(w: int) -> None:
            for n in range(10**6):
                if stopping.is_set():
                    return
                cmd_id = f"pay-{w}-{n}"
                await pos.send("payment.record", card(n + 1), cmd_id=cmd_id, ttl=60)
                answered[cmd_id] = "ok"

        workers = [asyncio.create_task(worker(w)) for w in range(4)]
        await until(lambda: len(answered) >= 40, timeout=30, what="a steady stream")
        assert register_process.proc is not None
        register_process.proc.terminate()
        assert await register_process.wait_exit(timeout=30) == 0
        stopping.set()
        register_process.start()  # the commands sent meanwhile are answered by the next start
        await asyncio.gather(*workers)
    register_process.terminate()
    log = register_process.log.read_text()
    assert "a command is still running at shutdown" not in log
    payments = _payments_by_cmd(journal := tmp_path / "j.db")
    assert set(answered) <= set(payments)
    assert set(payments.values()) == {1}
    stops = [e for e in journal_events(journal) if e["type"] == "daemon.stopped"]
    assert len(stops) == 2
