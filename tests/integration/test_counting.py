"""Counting the till through MQTT: counter.count on the simulated counters, then a close that
takes its counted cash from the counter, and a person's count beside the counter's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import ERRORS, KassadClient
from kassad.daemon.config import DevicesConfig, load_register_config
from kassad.daemon.contract.errors import ErrorCode
from kassad.daemon.register.service import RegisterService
from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.cctalk.bus import CcTalkSimulator
from kassad.simulators.ssp.device import SspSimulator
from tests.support.register import broker_config, journal_events, until, write_config


@contextlib.asynccontextmanager
async def register_with(broker: MosquittoBroker, tmp_path: Path, counters: list[dict[str, Any]],
                        ) -> AsyncIterator[tuple[RegisterService, KassadClient]]:
    config = load_register_config(write_config(
        tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db", consumers=[]))
    config = config.model_copy(update={"devices": DevicesConfig.model_validate(
        {"counters": counters})})
    service = RegisterService(config)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await service.ready.wait()
        async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                                requester="pos-1", employee="e1") as pos:
            yield service, pos
    finally:
        service.stop()
        async with asyncio.timeout(30):
            await task


def pieces(service: RegisterService, name: str) -> int:
    run = service.state_snapshot()["devices"]["counters"][name]["run"]
    return int(run["pieces"]) if run else 0


def connected(service: RegisterService, name: str) -> bool:
    return bool(service.state_snapshot()["devices"]["counters"].get(name, {}).get("connected"))


async def test_note_counter_run_fills_the_close(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with SspSimulator() as sim:
        path = sim.open_pty()
        counters = [{"name": "notes", "protocol": "ssp", "kind": "note_validator", "path": path,
                     "poll_interval": 0.05, "quiet_time": 30.0}]
        async with register_with(broker, tmp_path, counters) as (service, pos):
            await until(lambda: connected(service, "notes"), what="validator identified")
            await pos.send("session.open", {"starting_float": {"currency": "SEK",
                                                               "amount": 50000}})
            run = asyncio.create_task(pos.send("counter.count",
                                               {"device": "notes", "action": "start"}))
            await until(lambda: service.state_snapshot()["devices"]["counters"]["notes"]
                        ["counting"], what="counting run started")
            for channel in (3, 3, 4, 1):  # 100, 100, 200, 20 SEK
                assert sim.insert_note(channel)
            await until(lambda: pieces(service, "notes") == 4, what="four notes counted")
            stopped = await pos.send("counter.count", {"device": "notes", "action": "stop"})
            started = await run
            count = stopped.data["count"]
            assert count == started.data["count"]
            assert count["counts"] == {"SEK": {"2000": 1, "10000": 2, "20000": 1}}
            assert count["totals"] == {"SEK": 42000}
            closed = await pos.send("session.close", {
                "counted": {"currency": "SEK", "from_counter": "notes"},
                "leave_in_drawer": {"currency": "SEK", "amount": 0}})
            session = closed.data["session"]
            assert session["counted"] == {"SEK": 42000}
            assert session["counted_by"] == {"SEK": "notes"}
            assert session["discrepancy"] == {"SEK": 42000 - 50000}
    runs = [e for e in journal_events(tmp_path / "j.db") if e["type"] == "counter.counted"]
    assert len(runs) == 1 and runs[0]["data"]["ended"] == "stopped"


async def test_counter_and_person_both_recorded(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with SspSimulator() as sim:
        path = sim.open_pty()
        counters = [{"name": "notes", "protocol": "ssp", "path": path, "poll_interval": 0.05,
                     "quiet_time": 0.5}]
        async with register_with(broker, tmp_path, counters) as (service, pos):
            await until(lambda: connected(service, "notes"), what="validator identified")
            await pos.send("session.open", {"starting_float": {"currency": "SEK",
                                                               "amount": 0}})
            run = asyncio.create_task(pos.send("counter.count",
                                               {"device": "notes", "action": "start"}))
            await until(lambda: service.state_snapshot()["devices"]["counters"]["notes"]
                        ["counting"], what="counting run started")
            assert sim.insert_note(2)  # 50 SEK
            result = await run  # ends by itself after the quiet time
            assert result.data["count"]["totals"] == {"SEK": 5000}
            closed = await pos.send("session.close", {
                "counted": {"currency": "SEK", "counts": {"5000": 1, "2000": 1}},
                "leave_in_drawer": {"currency": "SEK", "amount": 0}})
            session = closed.data["session"]
            assert session["counter_counted"] == {"SEK": 5000}
            assert session["person_minus_counter"] == {"SEK": 2000}


async def test_counter_errors(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with SspSimulator() as sim:
        path = sim.open_pty()
        counters = [{"name": "notes", "protocol": "ssp", "path": path, "poll_interval": 0.05}]
        async with register_with(broker, tmp_path, counters) as (service, pos):
            await until(lambda: connected(service, "notes"), what="validator identified")
            with pytest.raises(ERRORS[ErrorCode.DEVICE_UNAVAILABLE]):
                await pos.send("counter.count", {"device": "coins", "action": "start"})
            with pytest.raises(ERRORS[ErrorCode.INVALID_PAYLOAD]):
                await pos.send("counter.count", {"device": "notes", "action": "stop"})


async def test_coin_run_over_cctalk_counts_each_coin_once_through_line_faults(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    async with CcTalkSimulator() as sim:
        path = sim.open_pty()
        counters = [{"name": "coins", "protocol": "cctalk", "kind": "coin_acceptor",
                     "path": path, "poll_interval": 0.05, "quiet_time": 30.0},
                    {"name": "bills", "protocol": "cctalk", "kind": "bill_validator",
                     "path": path, "poll_interval": 0.05, "quiet_time": 30.0}]
        async with register_with(broker, tmp_path, counters) as (service, pos):
            await until(lambda: connected(service, "coins") and connected(service, "bills"),
                        what="coin acceptor and bill validator identified on one bus")
            await pos.send("session.open", {"starting_float": {"currency": "SEK", "amount": 0}})
            coins = asyncio.create_task(pos.send("counter.count",
                                                 {"device": "coins", "action": "start"}))
            await until(lambda: service.state_snapshot()["devices"]["counters"]["coins"]
                        ["counting"], what="counting run started")
            sim.insert_coin("SE1K0A")                      # 10 kr
            sim.lose_reply(address=2)                      # a poll reply lost on the line
            sim.insert_coin("SE500A")                      # 5 kr
            sim.repeat_reply(address=2)                    # a reply heard twice
            sim.insert_coin("SE1K0A")
            sim.corrupt_byte(address=2)                    # a reply with a bad checksum
            sim.garbage(b"\x00\xff\x17garbage\x02")        # noise on the line
            sim.insert_coin("SE200A")                      # 2 kr
            sim.jam()                                      # reported, not counted
            await until(lambda: pieces(service, "coins") == 4, what="four coins counted")
            stopped = await pos.send("counter.count", {"device": "coins", "action": "stop"})
            result = (await coins).data["count"]
            assert result == stopped.data["count"]
            assert result["counts"] == {"SEK": {"200": 1, "500": 1, "1000": 2}}
            assert result["totals"] == {"SEK": 2700}
            await until(lambda: any(e["type"] == "counter.fault"
                                    for e in journal_events(tmp_path / "j.db")),
                        what="the jam journaled")
    faults = [e["data"]["fault"] for e in journal_events(tmp_path / "j.db")
              if e["type"] == "counter.fault"]
    assert "jam" in faults
