"""Commands through a real broker: idempotent replay of a cmd_id, and every error code.

Malformed commands are sent with a bare aiomqtt client (the POS client only sends valid
ones); each must be answered with its code, and must change nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kassad.daemon.client import ERRORS, CommandError, KassadClient
from kassad.daemon.contract.errors import ErrorCode
from kassad.daemon.register.service import RegisterService
from kassad.simulators.broker import MosquittoBroker
from tests.support.register import (
    broker_config,
    journal_events,
    running_register,
    until,
    write_config,
)

BASE = "kassad/v1/S1/R1"


def sek(n: int) -> dict[str, Any]:
    return {"amount": n, "currency": "SEK"}


def envelope(cmd_id: str | None = "c-1", params: dict[str, Any] | None = None,
             **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"v": 1, "cmd_id": cmd_id, "requester": "raw", "employee": "e1",
                            "params": params or {}}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


class RawPos:
    """A bare MQTT 5 client: publish any bytes as a command, read the replies."""

    def __init__(self, client: aiomqtt.Client):
        self.client = client
        self.replies: asyncio.Queue[tuple[str, dict[str, Any], bytes | None]] = asyncio.Queue()

    async def pump(self) -> None:
        async for m in self.client.messages:
            corr = getattr(m.properties, "CorrelationData", None) if m.properties else None
            assert isinstance(m.payload, bytes)
            self.replies.put_nowait((m.topic.value, json.loads(m.payload), corr))

    async def send(self, name: str, payload: bytes | dict[str, Any], *,
                   response_topic: str | None = f"{BASE}/res/raw",
                   correlation: bytes | None = b"corr") -> None:
        props = Properties(PacketTypes.PUBLISH)
        if response_topic:
            props.ResponseTopic = response_topic
        if correlation is not None:
            props.CorrelationData = correlation
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(f"{BASE}/cmd/{name}", data, qos=1, properties=props)

    async def result(self) -> tuple[str, dict[str, Any], bytes | None]:
        """The next result-phase reply (acks are skipped)."""
        async with asyncio.timeout(10):
            while True:
                topic, reply, corr = await self.replies.get()
                if reply["phase"] == "result":
                    return topic, reply, corr


@pytest.fixture
async def register(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RegisterService]:
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                          consumers=[], commands={"max_payload_bytes": 4096})
    async with running_register(config) as service:
        yield service


@pytest.fixture
async def raw(broker: MosquittoBroker, register: RegisterService) -> AsyncIterator[RawPos]:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="raw-pos",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"{BASE}/res/#", qos=1)
        pos = RawPos(client)
        pump = asyncio.create_task(pos.pump())
        await register_connected(register)
        yield pos
        pump.cancel()


async def register_connected(register: RegisterService) -> None:
    assert register._link is not None
    async with asyncio.timeout(10):
        await register._link.connected.wait()


@pytest.fixture
async def pos(broker: MosquittoBroker, register: RegisterService) -> AsyncIterator[KassadClient]:
    async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                            requester="pos-1", employee="e1") as client:
        yield client


async def test_resent_cmd_id_is_answered_from_the_journal(
        pos: KassadClient, register: RegisterService, tmp_path: Path) -> None:
    await pos.send("session.open", {"starting_float": sek(100000)}, cmd_id="open-1")
    sale = {"kind": "cash_sale", "tendered": sek(20000), "change": sek(5050)}
    first = await pos.send("payment.record", sale, cmd_id="sale-1")
    events_after_first = len(journal_events(tmp_path / "j.db"))

    again = await pos.send("payment.record", sale, cmd_id="sale-1")
    assert again.duplicate is True
    assert first.duplicate is False
    assert again.data == first.data
    assert [r["phase"] for r in again.replies] == ["ack", "result"]
    assert all(r["duplicate"] for r in again.replies)
    assert len(journal_events(tmp_path / "j.db")) == events_after_first
    assert register.ledger.open_session is not None
    assert register.ledger.open_session.cash_sales_count == 1

    # Another command under a used cmd_id is not run either: the first answer stands.
    other = await pos.send("payment.record", {**sale, "tendered": sek(99900)}, cmd_id="sale-1")
    assert other.data == first.data

    status = await pos.send("cmd.status", {"of_cmd_id": "sale-1"})
    assert status.data["command"]["status"] == "done"
    assert status.data["command"]["result"]["data"] == first.data


async def test_rejected_command_resent_gets_the_same_error(pos: KassadClient) -> None:
    with pytest.raises(ERRORS[ErrorCode.SESSION_NOT_OPEN]) as first:
        await pos.send("session.close", {"counted": sek(0), "leave_in_drawer": sek(0)},
                       cmd_id="close-early")
    with pytest.raises(CommandError) as again:
        await pos.send("session.close", {"counted": sek(0), "leave_in_drawer": sek(0)},
                       cmd_id="close-early")
    assert again.value.reply["duplicate"] is True
    assert again.value.message == first.value.message


async def _error(raw: RawPos, name: str, payload: bytes | dict[str, Any],
                 **kw: Any) -> tuple[str, dict[str, Any], bytes | None]:
    await raw.send(name, payload, **kw)
    topic, reply, corr = await raw.result()
    assert reply["status"] in ("error", "indeterminate"), reply
    return topic, reply, corr


async def test_error_codes_for_malformed_commands(raw: RawPos,
                                                  register: RegisterService) -> None:
    before = register.state_snapshot()["last_seq"]
    _, reply, corr = await _error(raw, "session.open", b"{not json")
    assert (reply["error"]["code"], reply["cmd_id"]) == ("invalid_json", None)
    assert corr == b"corr"  # Correlation Data is echoed even when nothing else is readable

    _, reply, _ = await _error(raw, "session.open", b"\xff\xfe{}")
    assert reply["error"]["code"] == "invalid_json"
    assert "UTF-8" in reply["error"]["message"]

    _, reply, _ = await _error(raw, "session.open", b"x" * 5000)
    assert reply["error"]["code"] == "payload_too_large"

    topic, reply, _ = await _error(raw, "session.open", envelope(cmd_id=None),
                                   response_topic=None)
    assert (topic, reply["cmd_id"]) == (f"{BASE}/res/_invalid", None)
    assert reply["error"]["code"] == "invalid_payload"

    _, reply, _ = await _error(raw, "session.open", envelope("c-v2", v=2))
    assert reply["error"]["code"] == "unsupported_version"

    _, reply, _ = await _error(raw, "session.teleport", envelope("c-unknown"))
    assert reply["error"]["code"] == "unknown_command"

    _, reply, _ = await _error(raw, "session.open",
                               envelope("c-bad", {"starting_float": {"amount": "100"}}))
    assert reply["error"]["code"] == "invalid_payload"
    assert "params.starting_float" in reply["error"]["message"]

    _, reply, _ = await _error(raw, "session.open",
                               envelope("c-neg", {"starting_float": sek(-100)}))
    assert reply["error"]["code"] == "amount_out_of_range"

    # A response topic outside our res/ is not used: the reply goes to res/{requester}.
    topic, reply, _ = await _error(raw, "session.open", envelope("c-redirect", {}),
                                   response_topic="kassad/v1/S1/R2/evt")
    assert topic == f"{BASE}/res/raw"

    assert register.ledger.open_session is None
    # Rejections with a readable cmd_id are journaled as cmd.rejected, nothing else.
    events = register.state_snapshot()["last_seq"] - before
    assert events == 5


async def test_expired_command_is_refused(raw: RawPos, register: RegisterService) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    _, reply, _ = await _error(raw, "session.open",
                               envelope("c-old", {"starting_float": sek(100)}, expires_at=past))
    assert reply["error"]["code"] == "expired"
    assert register.ledger.open_session is None


@pytest.mark.parametrize(("command", "params", "code"), [
    ("session.adjust", {"direction": "add", "amount": sek(100)}, "session_not_open"),
    ("payment.record", {"kind": "other", "payment_type": "card", "amount": sek(100)},
     "session_not_open"),
    ("payment.record", {"kind": "cash_sale", "tendered": {"amount": 100, "currency": "NOK"}},
     "currency_not_accepted"),
    ("payment.record", {"kind": "cash_sale", "tendered": {"amount": 100, "currency": "XYZ"}},
     "currency_not_accepted"),
    ("payment.record", {"kind": "cash_sale", "tendered": sek(100), "change": sek(200)},
     "amount_out_of_range"),
    ("payment.record", {"kind": "cash_sale", "tendered": sek(10**12)}, "amount_out_of_range"),
    ("drawer.open", {"reason": "no_sale"}, "device_unavailable"),
    ("print.raw", {"data": "G0A="}, "device_unavailable"),
    ("print.receipt", {"document": {"blocks": [{"type": "text", "text": "hej"}]}},
     "device_unavailable"),
    ("counter.count", {"device": "coins", "action": "start"}, "device_unavailable"),
    ("session.report", {"kind": "x"}, "session_not_open"),
    ("cmd.status", {"of_cmd_id": "never-sent"}, "unknown_cmd_id"),
])
async def test_error_codes_for_impossible_commands(
        pos: KassadClient, register: RegisterService, command: str, params: dict[str, Any],
        code: str) -> None:
    with pytest.raises(CommandError) as caught:
        await pos.send(command, params)
    assert caught.value.code == code
    assert caught.value.message  # a sentence a person can act on
    assert register.ledger.open_session is None


async def test_session_errors_with_an_open_session(pos: KassadClient,
                                                  register: RegisterService) -> None:
    await pos.send("session.open", {"starting_float": sek(10000)})
    with pytest.raises(ERRORS[ErrorCode.SESSION_ALREADY_OPEN]):
        await pos.send("session.open", {"starting_float": sek(10000)})
    with pytest.raises(ERRORS[ErrorCode.AMOUNT_OUT_OF_RANGE]) as caught:
        await pos.send("payment.record", {"kind": "cash_refund", "amount": sek(20000)})
    assert "expected to hold only 100.00 SEK" in caught.value.message
    with pytest.raises(ERRORS[ErrorCode.INVALID_PAYLOAD]) as missing:
        await pos.send("session.close", {"counted": {"amount": 0, "currency": "EUR"},
                                         "leave_in_drawer": sek(0)})
    assert "SEK" in missing.value.message
    assert register.ledger.open_session is not None
    assert register.ledger.open_session.expected_cash() == {"SEK": 10000}
    report = await pos.send("session.report", {"kind": "x"})
    assert report.data["report"]["session"]["expected_cash"] == {"SEK": 10000}


class _Broken:
    """A handler with a bug: the register must answer and keep serving."""

    def plan(self, view: Any, params: Any, envelope: Any) -> Any:
        raise RuntimeError("boom")

    async def execute(self, *args: Any) -> Any:  # pragma: no cover - plan raises
        raise AssertionError


async def test_a_bug_in_a_handler_is_answered_and_the_register_goes_on(
        pos: KassadClient, register: RegisterService) -> None:
    assert register._worker is not None
    register._worker._handlers["session.report"] = _Broken()
    with pytest.raises(ERRORS[ErrorCode.INTERNAL_ERROR]):
        await pos.send("session.report", {"kind": "x"})
    opened = await pos.send("session.open", {"starting_float": sek(100)})
    assert opened.data["session"]["expected_cash"] == {"SEK": 100}


async def test_a_burst_of_session_commands_is_journaled_in_groups_in_order(
        raw: RawPos, register: RegisterService, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Session commands that queue up while the journal is busy are settled together (group
    commit), each exactly as if alone: planned against the ledger the ones before it leave, a
    refused one journaled in its place, a resent cmd_id answered from the journal, and the
    journal folding to the ledger the register holds."""
    from tests.integration.test_auto_close import in_memory, refold

    assert register._journal is not None and register._worker is not None
    journal = register._journal
    await raw.send("session.open", envelope("open", {"starting_float": sek(10000)}))
    assert (await raw.result())[1]["status"] == "ok"

    groups: list[tuple[int, int]] = []  # (commands offered, commands taken) per transaction
    start_commands = journal.file.start_commands

    def counting(records: Any, decide: Any) -> Any:
        taken = start_commands(records, decide)
        groups.append((len(records), len(taken)))
        return taken

    monkeypatch.setattr(journal.file, "start_commands", counting)

    def sale(n: int) -> dict[str, Any]:
        return {"kind": "cash_sale", "tendered": sek(n)}

    burst: list[tuple[str, str, dict[str, Any]]] = [
        *[("payment.record", f"p{i}", sale(100 + i)) for i in range(1, 6)],
        ("payment.record", "nok", {"kind": "cash_sale", "tendered": {"amount": 5,
                                                                    "currency": "NOK"}}),
        ("payment.record", "p3", sale(99_900)),  # a resend of p3: answered, not run again
        *[("payment.record", f"p{i}", sale(100 + i)) for i in range(6, 9)],
        ("session.close", "close", {"counted": sek(10000 + sum(100 + i for i in range(1, 9))),
                                    "leave_in_drawer": sek(10000)}),
        *[("payment.record", f"p{i}", sale(100 + i)) for i in range(9, 13)],
    ]
    gate = threading.Event()
    held = asyncio.create_task(journal.run(gate.wait, 10))  # the journal is busy meanwhile
    try:
        for name, cmd_id, params in burst:
            await raw.send(name, envelope(cmd_id, params))
        # The first is in hand, waiting for the journal; the rest queue up behind it.
        await until(lambda: register._worker is not None
                    and register._worker.queue.qsize() >= len(burst) - 1, 10, "queued")
    finally:
        gate.set()
        await held
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in burst:
        _, reply, _ = await raw.result()
        results.setdefault(reply["cmd_id"], []).append(reply)

    assert max(taken for _, taken in groups) > 2, groups
    assert len(groups) < len(burst) - 1, groups
    assert results["nok"][0]["error"]["code"] == "currency_not_accepted"
    first_p3, again_p3 = results["p3"]
    assert again_p3["duplicate"] is True and again_p3["data"] == first_p3["data"]
    # Each sale saw the ones before it: the drawer's expected cash grows in the order sent.
    expected = 10000
    for i in range(1, 9):
        (reply,) = results[f"p{i}"] if i != 3 else [first_p3]
        expected += 100 + i
        assert reply["status"] == "ok"
        assert reply["data"]["session"]["number"] == 1
        assert reply["data"]["session"]["expected_cash"] == {"SEK": expected}
    assert results["close"][0]["data"]["session"]["discrepancy"] == {"SEK": 0}
    # The sales after the close open session 2 with what was left in the drawer.
    expected = 10000
    for i in range(9, 13):
        (reply,) = results[f"p{i}"]
        expected += 100 + i
        assert reply["data"]["session"]["number"] == 2
        assert reply["data"]["session"]["expected_cash"] == {"SEK": expected}
    assert results["p9"][0]["data"]["session_opened_automatically"] is True

    events = journal_events(tmp_path / "j.db")
    order = [e["cause"]["cmd_id"] for e in events
             if e["type"] in ("payment.recorded", "session.closed", "cmd.rejected")]
    assert order == ["p1", "p2", "p3", "p4", "p5", "nok", "p6", "p7", "p8", "close",
                     "p9", "p10", "p11", "p12"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert in_memory(register) == refold(tmp_path / "j.db")
