"""The journal file: epoch, gapless seqs, the hash chain, append-only, commands, acks, verify."""

from __future__ import annotations

import io
import itertools
import json
import sqlite3
from pathlib import Path

import pytest

from kassad.daemon.contract.events import GENESIS_HASH, canonical_json, event_hash
from kassad.daemon.journal import store as store_module
from kassad.daemon.journal.store import (
    CommandRecord,
    EventDraft,
    JournalFile,
    JournalMismatch,
)
from kassad.daemon.journal.verify import export_events, verify_journal

TS = "2026-11-25T17:02:11.204Z"


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(path):
    j = JournalFile(path, "S1", "R1", "boot-1")
    yield j
    j.close()


def draft(n: int = 0, **data) -> EventDraft:
    return EventDraft(type="test.event", ts=TS, session_id="sess-1",
                      data={"n": n, **data}, cause={"cmd_id": f"c{n}"}, actor={"employee": "e1"})


def record(cmd_id: str = "cmd-1", status: str = "executing", **kw) -> CommandRecord:
    values = {
        "command": "drawer.open", "requester": "pos-1", "status": status,
        "received_at": TS, "updated_at": TS, "response_topic": "kassad/v1/S1/R1/res/pos-1",
        "ack": None, "result": None,
    }
    values.update(kw)
    return CommandRecord(cmd_id=cmd_id, **values)


def rows(path: Path) -> list[tuple[int, str, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT seq, hash, body FROM events ORDER BY seq").fetchall()
    finally:
        db.close()


def command_rows(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT cmd_id, status FROM commands ORDER BY cmd_id").fetchall()
    finally:
        db.close()


# -- a new journal ----------------------------------------------------------------------------


def test_new_journal_has_an_epoch_and_starts_at_seq_1(journal):
    assert journal.created is True
    assert isinstance(journal.epoch, int) and journal.epoch > 0
    assert journal.last_seq == 0
    assert journal.last_hash == GENESIS_HASH
    sealed = journal.append([draft()])
    assert [e.seq for e in sealed] == [1]


def test_append_builds_a_gapless_hash_chain(journal, path):
    sealed = journal.append([draft(1), draft(2)])
    sealed += journal.append([draft(3)])
    sealed += journal.append([draft(4), draft(5), draft(6)])
    assert [e.seq for e in sealed] == [1, 2, 3, 4, 5, 6]
    bodies = [json.loads(e.body) for e in sealed]
    assert bodies[0]["prev_hash"] == "0" * 64
    for previous, current in itertools.pairwise(bodies):
        assert current["prev_hash"] == previous["hash"]
    for e, body in zip(sealed, bodies, strict=True):
        assert body["seq"] == e.seq
        assert body["hash"] == e.hash == event_hash(body)
        assert body["epoch"] == journal.epoch
        assert (body["store"], body["register"], body["boot_id"]) == ("S1", "R1", "boot-1")
        assert "replayed" not in body
        assert e.body == canonical_json(body)
    assert journal.last_seq == 6
    assert journal.last_hash == sealed[-1].hash
    assert [(s, h) for s, h, _ in rows(path)] == [(e.seq, e.hash) for e in sealed]
    assert len({b["event_id"] for b in bodies}) == 6


def test_append_of_nothing_changes_nothing(journal):
    assert journal.append([]) == []
    assert journal.last_seq == 0
    assert journal.last_hash == GENESIS_HASH


def test_reopen_keeps_the_head_and_continues_the_chain(path):
    first = JournalFile(path, "S1", "R1", "boot-1")
    sealed = first.append([draft(1), draft(2)])
    epoch = first.epoch
    first.close()

    again = JournalFile(path, "S1", "R1", "boot-2")
    try:
        assert again.created is False
        assert again.epoch == epoch
        assert again.last_seq == 2
        assert again.last_hash == sealed[-1].hash
        [third] = again.append([draft(3)])
        body = json.loads(third.body)
        assert third.seq == 3
        assert body["prev_hash"] == sealed[-1].hash
        assert body["boot_id"] == "boot-2"
    finally:
        again.close()
    report = verify_journal(path)
    assert report.ok, report.summary()
    assert report.events == 3


@pytest.mark.parametrize(("store", "register"), [("S2", "R1"), ("S1", "R2")])
def test_journal_of_another_register_is_refused(path, store, register):
    JournalFile(path, "S1", "R1", "boot-1").close()
    with pytest.raises(JournalMismatch, match="S1/R1"):
        JournalFile(path, store, register, "boot-2")


def test_a_journal_created_anew_gets_a_new_epoch(tmp_path, monkeypatch):
    """``epoch`` changes when the journal is created anew (contract). Consumers deduplicate on
    (register, epoch, seq), so a recreated journal reusing an epoch would have its events
    dropped as duplicates. Two creations within one second of wall-clock time (or after the
    clock was set back) must still give different epochs."""
    monkeypatch.setattr(store_module.time, "time", lambda: 1_800_000_000.25)
    path = tmp_path / "journal.db"
    old = JournalFile(path, "S1", "R1", "boot-1")
    old_epoch = old.epoch
    old.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    new = JournalFile(path, "S1", "R1", "boot-2")
    try:
        assert new.created is True
        assert new.epoch != old_epoch
    finally:
        new.close()


# -- append-only ------------------------------------------------------------------------------


def test_events_refuse_update(journal, path):
    journal.append([draft(1)])
    db = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE events SET type = 'forged' WHERE seq = 1")
    finally:
        db.close()
    assert verify_journal(path).ok


def test_events_refuse_delete(journal, path):
    journal.append([draft(1), draft(2)])
    db = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM events WHERE seq = 2")
    finally:
        db.close()
    assert len(rows(path)) == 2


# -- verify and export ------------------------------------------------------------------------


def test_verify_good_journal(journal, path):
    sealed = journal.append([draft(i) for i in range(1, 6)])
    report = verify_journal(path)
    assert report.ok, report.summary()
    assert report.events == 5
    assert report.last_seq == 5
    assert report.epoch == journal.epoch
    assert report.head_hash == sealed[-1].hash
    assert "OK" in report.summary()


def test_verify_empty_journal(journal, path):
    report = verify_journal(path)
    assert report.ok
    assert report.events == 0


def test_verify_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        verify_journal(tmp_path / "nope.db")


def _tamper(path: Path, *statements: str, params: tuple = ()) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("DROP TRIGGER events_no_update")
        db.execute("DROP TRIGGER events_no_delete")
        for sql in statements:
            db.execute(sql, params)
    finally:
        db.close()


def test_verify_finds_an_edited_body(journal, path):
    journal.append([draft(1), draft(2), draft(3)])
    body = json.loads(rows(path)[1][2])
    body["data"]["n"] = 999  # the hash is left as it was
    _tamper(path, "UPDATE events SET body = ? WHERE seq = 2", params=(canonical_json(body),))
    report = verify_journal(path)
    assert not report.ok
    problems = [p for p in report.problems if p.startswith("seq 2:")]
    assert any("hash" in p for p in problems), report.problems
    assert "BROKEN" in report.summary()


def test_verify_finds_a_rehashed_edit_by_the_chain(journal, path):
    """An editor who recomputes the edited event's hash still breaks the next prev_hash."""
    journal.append([draft(1), draft(2), draft(3)])
    body = json.loads(rows(path)[1][2])
    body["data"]["n"] = 999
    body["hash"] = event_hash(body)
    _tamper(path, "UPDATE events SET body = ?, hash = ? WHERE seq = 2",
            params=(canonical_json(body), body["hash"]))
    report = verify_journal(path)
    assert not report.ok
    assert any(p.startswith("seq 3:") and "prev_hash" in p for p in report.problems)


def test_verify_finds_a_deleted_row(journal, path):
    journal.append([draft(1), draft(2), draft(3)])
    _tamper(path, "DELETE FROM events WHERE seq = 2")
    report = verify_journal(path)
    assert not report.ok
    assert any(p.startswith("seq 3:") and "gap" in p for p in report.problems), report.problems


def test_export_writes_one_json_line_per_event(journal, path):
    sealed = journal.append([draft(i, note="Kvitto för kaffe") for i in range(1, 5)])
    out = io.StringIO()
    assert export_events(path, out) == 4
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines == [e.body for e in sealed]
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4]
    assert "Kvitto för kaffe" in lines[0]

    out = io.StringIO()
    assert export_events(path, out, from_seq=3) == 2
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [3, 4]


# -- commands ---------------------------------------------------------------------------------


def test_start_command_stores_the_decided_row_and_its_events(journal, path):
    calls = []

    def decide():
        calls.append(1)
        return record("cmd-1", "executing"), [draft(1), draft(2)]

    row, duplicate, sealed = journal.start_command(record("cmd-1", "received"), decide)
    assert calls == [1]
    assert duplicate is False
    assert row.status == "executing"
    assert [e.seq for e in sealed] == [1, 2]
    assert journal.get_command("cmd-1") == record("cmd-1", "executing")
    assert command_rows(path) == [("cmd-1", "executing")]
    assert len(rows(path)) == 2


def test_start_command_rejected_row_round_trips_json(journal):
    ack = {"phase": "result", "status": "error", "error": {"code": "expired"}}

    def decide():
        return record("cmd-r", "rejected", ack=ack, result=ack), [draft(1)]

    _, duplicate, sealed = journal.start_command(record("cmd-r"), decide)
    assert duplicate is False and len(sealed) == 1
    stored = journal.get_command("cmd-r")
    assert stored is not None
    assert stored.ack == ack and stored.result == ack
    assert stored.as_json()["status"] == "rejected"


def test_start_command_known_cmd_id_is_a_duplicate(journal):
    journal.start_command(record("cmd-1"), lambda: (record("cmd-1"), [draft(1)]))

    def must_not_run():
        raise AssertionError("decide called for a known cmd_id")

    row, duplicate, sealed = journal.start_command(record("cmd-1", "received"), must_not_run)
    assert duplicate is True
    assert sealed == []
    assert row == record("cmd-1", "executing")
    assert journal.last_seq == 1


def test_start_command_decide_raising_stores_nothing(journal, path):
    journal.append([draft(1)])
    head = (journal.last_seq, journal.last_hash)

    def decide():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        journal.start_command(record("cmd-x"), decide)
    assert journal.get_command("cmd-x") is None
    assert command_rows(path) == []
    assert len(rows(path)) == 1
    assert (journal.last_seq, journal.last_hash) == head

    # The same cmd_id can still be decided afterwards.
    _, duplicate, sealed = journal.start_command(record("cmd-x"),
                                                 lambda: (record("cmd-x"), [draft(2)]))
    assert duplicate is False
    assert [e.seq for e in sealed] == [2]
    assert verify_journal(path).ok


def test_failed_transaction_mid_seal_restores_the_head(journal, path):
    """A transaction that fails after sealing some events (here: the second draft cannot be
    serialised) rolls back and restores last_seq/last_hash, so the chain continues."""
    journal.append([draft(1)])
    head = (journal.last_seq, journal.last_hash)
    bad = EventDraft(type="test.event", ts=TS, data={"x": object()})
    with pytest.raises(TypeError):
        journal.finish_command(record("cmd-1", "done"), [draft(2), bad])
    assert (journal.last_seq, journal.last_hash) == head
    assert len(rows(path)) == 1
    assert journal.get_command("cmd-1") is None

    [e] = journal.append([draft(3)])
    assert e.seq == 2
    assert json.loads(e.body)["prev_hash"] == head[1]
    report = verify_journal(path)
    assert report.ok, report.summary()
    assert report.events == 2


def test_finish_command_updates_the_row_and_appends_events(journal, path):
    journal.start_command(record("cmd-1"), lambda: (record("cmd-1"), [draft(1)]))
    result = {"phase": "result", "status": "ok", "data": {"drawer": "open"}}
    sealed = journal.finish_command(
        record("cmd-1", "done", updated_at="2026-11-25T17:02:12.000Z", result=result),
        [draft(2), draft(3)],
    )
    assert [e.seq for e in sealed] == [2, 3]
    stored = journal.get_command("cmd-1")
    assert stored is not None
    assert stored.status == "done"
    assert stored.result == result
    assert stored.updated_at == "2026-11-25T17:02:12.000Z"
    assert command_rows(path) == [("cmd-1", "done")]
    assert verify_journal(path).ok


def test_interrupted_commands_lists_executing_rows(journal, path):
    journal.start_command(record("a"), lambda: (record("a", "executing"), []))
    journal.start_command(record("b"), lambda: (record("b", "rejected"), [draft(1)]))
    journal.start_command(record("c"), lambda: (record("c", "executing"), []))
    journal.finish_command(record("c", "done"), [])
    journal.start_command(record("d"), lambda: (record("d", "executing",
                                                       received_at="2026-11-25T18:00:00.000Z"),
                                                []))
    assert [r.cmd_id for r in journal.interrupted_commands()] == ["a", "d"]
    journal.close()

    again = JournalFile(path, "S1", "R1", "boot-2")
    try:
        assert [r.cmd_id for r in again.interrupted_commands()] == ["a", "d"]
    finally:
        again.close()


# -- delivery bookkeeping ---------------------------------------------------------------------


def test_acks_round_trip_capped_and_per_epoch(journal, path):
    journal.append([draft(i) for i in range(1, 6)])
    journal.save_ack("agg", journal.epoch, 3, TS)
    journal.save_ack("backup", journal.epoch, 99, TS)  # beyond what was ever written
    journal.save_ack("old", journal.epoch - 1, 4, TS)  # an ack of a previous epoch
    assert journal.load_acks() == {"agg": 3, "backup": 5}

    journal.save_ack("agg", journal.epoch, 5, TS)
    assert journal.load_acks()["agg"] == 5
    journal.close()

    again = JournalFile(path, "S1", "R1", "boot-2")
    try:
        assert again.load_acks() == {"agg": 5, "backup": 5}
    finally:
        again.close()


def test_next_conn_seq_increments_and_survives_reopen(path):
    j = JournalFile(path, "S1", "R1", "boot-1")
    assert [j.next_conn_seq() for _ in range(3)] == [1, 2, 3]
    j.close()
    j = JournalFile(path, "S1", "R1", "boot-2")
    try:
        assert j.next_conn_seq() == 4
    finally:
        j.close()


# -- canonical JSON and the hash --------------------------------------------------------------


def test_canonical_json_is_the_documented_form():
    event = {"z": 1, "a": {"y": [1, 2], "b": None}, "data": {"text": "Kvitto för kaffe"},
             "emoji": "☕"}
    expected = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(event) == expected
    assert "Kvitto för kaffe" in canonical_json(event)
    assert "\\u" not in canonical_json(event)


def test_event_hash_ignores_hash_and_replayed():
    import hashlib

    event = {"seq": 1, "prev_hash": GENESIS_HASH, "data": {"text": "Kvitto för kaffe"}}
    digest = event_hash(event)
    expected = hashlib.sha256(
        json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    assert digest == expected
    assert len(digest) == 64 and digest == digest.lower()
    assert event_hash({**event, "hash": "x" * 64, "replayed": True}) == digest
    assert event_hash({**event, "replayed": False}) == digest
    assert event_hash({**event, "prev_hash": "1" * 64}) != digest
    assert event_hash({**event, "data": {"text": "Kvitto for kaffe"}}) != digest
