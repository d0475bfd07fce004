"""``kassad journal verify`` and ``export``: read a journal file without the daemon's help.

Verification checks what a consumer relies on: seq gapless from 1, each ``prev_hash`` the
previous ``hash``, each ``hash`` recomputed from the canonical JSON, epoch and register as the
journal's meta says, and the indexed columns equal to the body.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..contract.events import GENESIS_HASH, event_hash


@dataclass
class VerifyReport:
    path: Path
    epoch: int | None = None
    events: int = 0
    last_seq: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return (f"{self.path}: OK — epoch {self.epoch}, {self.events} events, "
                    f"seq 1..{self.last_seq}, head {self.head_hash}")
        shown = "\n  ".join(self.problems[:20])
        more = f"\n  … and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        return f"{self.path}: BROKEN — {len(self.problems)} problem(s):\n  {shown}{more}"


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such journal")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _rows(db: sqlite3.Connection, batch: int = 2000) -> Iterator[tuple[int, str, str, str]]:
    seq = 0
    while True:
        rows = db.execute(
            "SELECT seq, event_id, hash, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, batch),
        ).fetchall()
        if not rows:
            return
        yield from rows
        seq = rows[-1][0]


def verify_journal(path: Path) -> VerifyReport:
    report = VerifyReport(path)
    db = _open_read_only(path)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        report.epoch = int(meta["epoch"]) if "epoch" in meta else None
        expected_prev = GENESIS_HASH
        for seq, event_id, stored_hash, body in _rows(db):
            report.events += 1
            where = f"seq {seq}"
            if seq != report.last_seq + 1:
                report.problems.append(f"{where}: gap, previous seq was {report.last_seq}")
            report.last_seq = seq
            try:
                event = json.loads(body)
            except json.JSONDecodeError as e:
                report.problems.append(f"{where}: body is not JSON ({e})")
                expected_prev = stored_hash
                continue
            if event.get("seq") != seq or event.get("event_id") != event_id:
                report.problems.append(f"{where}: body's seq/event_id differ from the row")
            if event.get("epoch") != report.epoch:
                report.problems.append(f"{where}: epoch {event.get('epoch')} is not the "
                                       f"journal's {report.epoch}")
            if (event.get("store"), event.get("register")) != (meta.get("store"),
                                                                 meta.get("register")):
                report.problems.append(f"{where}: store/register differ from the journal's")
            if event.get("prev_hash") != expected_prev:
                report.problems.append(f"{where}: prev_hash does not chain to seq {seq - 1}")
            recomputed = event_hash(event)
            if recomputed != event.get("hash") or recomputed != stored_hash:
                report.problems.append(f"{where}: hash does not match the content (edited?)")
            expected_prev = str(event.get("hash"))
            report.head_hash = expected_prev
    finally:
        db.close()
    return report


def export_events(path: Path, out: TextIO, from_seq: int = 1) -> int:
    """Write events as JSON lines (canonical form, ``replayed`` omitted); return the count."""
    db = _open_read_only(path)
    count = 0
    try:
        for seq, _, _, body in _rows(db):
            if seq >= from_seq:
                out.write(body + "\n")
                count += 1
    finally:
        db.close()
    return count
