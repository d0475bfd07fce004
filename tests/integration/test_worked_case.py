"""The worked case of the register core, through a real broker, end to end."""

from __future__ import annotations

from pathlib import Path

from kassad.daemon.client import CommandError, KassadClient
from kassad.daemon.journal.verify import verify_journal
from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.pos import run_steps
from tests.support.register import (
    broker_config,
    consumer_events,
    journal_events,
    running_consumer,
    running_register,
    until,
    write_config,
)


async def test_worked_case_through_mqtt(broker: MosquittoBroker, tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=journal)
    async with running_register(config) as register, \
            running_consumer(broker.port, tmp_path / "agg.db") as agg, \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos:
        outcomes = await run_steps(pos)
        opened, _sale, _card, _refund, drop, refused, closed, auto = outcomes

        assert not isinstance(opened, CommandError)
        first = opened.data["session"]
        assert first["starting_float"] == {"SEK": 100000}
        assert first["opened_by"] == "e17"

        assert not isinstance(drop, CommandError)
        assert drop.data["session"]["expected_cash"] == {"SEK": 100000 + 14950 - 2000 - 30000}

        assert isinstance(refused, CommandError)
        assert refused.code == "amount_out_of_range"
        assert "more than" in refused.message

        assert not isinstance(closed, CommandError)
        session = closed.data["session"]
        assert session["status"] == "closed"
        assert session["expected"] == {"SEK": 82950}
        assert session["counted"] == {"SEK": 82800}
        assert session["discrepancy"] == {"SEK": -150}
        assert session["left_in_drawer"] == {"SEK": 50000}
        assert session["removed"] == {"SEK": 32800}
        assert session["payments_by_type"] == {"cash": {"SEK": 14950 - 2000},
                                              "card": {"SEK": 32000}}
        assert session["adjustments"][0]["note"] == "safe drop"

        assert not isinstance(auto, CommandError)
        nxt = auto.data["session"]
        assert auto.data["session_opened_automatically"] is True
        assert nxt["automatic"] is True
        assert nxt["starting_float"] == {"SEK": 50000}
        assert nxt["number"] == first["number"] + 1
        assert nxt["session_id"] != first["session_id"]
        assert nxt["expected_cash"] == {"SEK": 55000}

        # Every journaled event reaches the consumer, in seq order, and is acknowledged.
        last = register.state_snapshot()["last_seq"]
        await until(lambda: agg.acked("R1").get(register.state_snapshot()["epoch"]) == last,
                    wake=agg.progress, what="consumer ack of every event")
        assert register.state_snapshot()["delivery"]["pending"] == 0

    stored = consumer_events(tmp_path / "agg.db")
    assert [e["seq"] for e in stored] == list(range(1, last + 1))
    journaled = journal_events(journal)
    assert stored == journaled[:last]
    # The clean stop is journaled too; it is delivered when the register next connects.
    assert journaled[last]["type"] == "daemon.stopped"
    types = [e["type"] for e in stored]
    assert types.count("session.opened") == 2
    assert types.count("payment.recorded") == 4
    assert types.count("session.closed") == 1
    assert types.count("cmd.rejected") == 1  # the refused close
    assert verify_journal(journal).ok
