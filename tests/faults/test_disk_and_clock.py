"""The disk under the journal fills up; the register's wall clock jumps back an hour.

Disk full: the journal lives on a small tmpfs; mid-burst a filler file takes every free byte.
The register stays up and answers every new command ``journal_unavailable`` with nothing
journaled; what it wants to journal meanwhile (the printer's status, the drawer opened by hand,
the consumers' acks, the connection counter at a reconnect, ``daemon.stopped``) waits for the
disk or is refused, never lost once journaled; a start on the full disk fails with a clear
message (systemd starts it again). Once the filler is gone the POS's resends and new commands
go through, and the session closes balanced with the store holding exactly the journal.

Clock: the register runs under libfaketime, its wall clock stepped back an hour and forward
again mid-burst (as an NTP step does; the monotonic clock goes on). Commands keep working,
events after the step carry earlier ``ts`` and still rising ``seq``, the drawer's timers do
not fire, and a journal created while the clock is back gets a new epoch of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.journal.verify import verify_journal
from tests.faults.conftest import FaultReport
from tests.faults.rig import FaultRig, Sent, journal_on_small_disk
from tests.support.register import eventually, journal_events, until

pytestmark = pytest.mark.timeout(120)

#: Commands answered ``journal_unavailable`` before the test lets the disk go on filling no
#: longer (each a POS that was refused and will resend).
REFUSED_WHILE_FULL = 12


# -- the disk -------------------------------------------------------------------------------


def fill_disk(folder: Path) -> Path:
    """Write a filler file until the file system says ENOSPC, down to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 64, 1):
            block = b"\0" * size
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def disk_free(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def journal_row(journal: Path, cmd_id: str) -> tuple[Any, ...] | None:
    con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        row: tuple[Any, ...] | None = con.execute(
            "SELECT status FROM commands WHERE cmd_id = ?", (cmd_id,)).fetchone()
        return row
    finally:
        con.close()


def caused_by(events: list[dict[str, Any]], cmd_id: str) -> list[dict[str, Any]]:
    return [e for e in events if (e.get("cause") or {}).get("cmd_id") == cmd_id
            or e["data"].get("cmd_id") == cmd_id]


def answered(rig: FaultRig, outcome: str | None = None) -> int:
    return sum(1 for s in rig.sent.values()
               if s.outcome is not None and (outcome is None or s.outcome == outcome))


async def stop(rig: FaultRig) -> int:
    """SIGTERM the register and wait for its exit, the loop running meanwhile: the proxy and
    the POS live on it, and the register says goodbye through them."""
    assert rig.register.proc is not None
    rig.register.proc.send_signal(signal.SIGTERM)
    return await rig.register.wait_exit(timeout=30)


class QueryingRig(FaultRig):
    """The rig, and the register's state as its POS reads it (a query: never journaled)."""

    async def drawer_is(self, state: str) -> bool:
        assert self._pos is not None
        result = await self._pos.send("state.get", {})
        return bool(result.data["state"]["devices"]["drawer"]["state"] == state)


async def test_disk_full_under_the_journal(tmp_path: Path, fault_report: FaultReport) -> None:
    with journal_on_small_disk(tmp_path / "disk", size="24m") as disk:
        async with QueryingRig(tmp_path, journal=disk / "journal.db") as rig:
            await rig.open_session()
            stop_burst = asyncio.Event()
            refusals: list[Sent] = []

            async def pos_worker(first: int) -> None:
                n = first
                while not stop_burst.is_set():
                    command, params = rig.sale(n)
                    n += 4
                    sent = await rig.send(command, params)
                    if sent.outcome == "journal_unavailable":
                        refusals.append(sent)
                        # The cashier reads the error and tries the next sale a moment later.
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop_burst.wait(), 0.05)

            async def refused(more: int, what: str) -> None:
                target = len(refusals) + more
                await until(lambda: len(refusals) >= target, 30, what)

            async with asyncio.TaskGroup() as group:
                for w in range(4):
                    group.create_task(pos_worker(w + 1))
                await until(lambda: answered(rig, "ok") >= 30, 30, "30 sales before the fill")
                pid = rig.register.proc.pid if rig.register.proc else None
                # 1. The disk fills mid-burst: new commands are refused, nothing journaled.
                filler = fill_disk(disk)
                assert disk_free(disk) == 0
                await refused(REFUSED_WHILE_FULL, "commands refused journal_unavailable")
                # While full the devices speak, the link drops, the store goes on acking.
                head_when_full = len(journal_events(rig.journal))
                rig.printer.paper_near_end()
                # Opened with the key (no kick: drawer.open is refused too); the cashier
                # closes it again.
                await until(lambda: not rig.printer.state.drawer_open, 10, "drawer shut")
                await eventually(lambda: rig.drawer_is("closed"), 10, what="drawer seen shut")
                rig.printer.open_drawer_by_hand()
                rig.proxy.reset()
                await refused(REFUSED_WHILE_FULL, "refusals after the reconnect")
                await until(lambda: not rig.printer.state.drawer_open, 10, "drawer closed")
                assert rig.register.alive, rig.register.log_tail()
                assert rig.register.proc is not None and rig.register.proc.pid == pid
                events = journal_events(rig.journal)
                for sent in refusals:  # nothing of a refused command: no row, no event
                    assert journal_row(rig.journal, sent.cmd_id) is None, sent
                    assert caused_by(events, sent.cmd_id) == [], sent
                assert verify_journal(rig.journal).ok
                # 2. Space again: what waited is journaled, the burst goes on.
                filler.unlink()
                await until(lambda: sum(1 for e in journal_events(rig.journal)
                                        if e["type"] == "drawer.closed"
                                        and e["data"].get("cause") == "unexpected") == 1,
                            10, "the drawer's events, journaled once the disk had room")
                ok_then = answered(rig, "ok")
                await until(lambda: answered(rig, "ok") >= ok_then + 20, 30, "sales again")
                # 3. Full again, and the daemon stopped on it: a clean exit (daemon.stopped
                # cannot be journaled, the log says so); a start on it fails clearly (exit 3,
                # systemd starts it again) and corrupts nothing.
                filler = fill_disk(disk)
                await refused(4, "commands refused on the second fill")
                assert await stop(rig) == 0, rig.register.log_tail()
                report = verify_journal(rig.journal)
                assert report.ok, report.summary()
                rig.register.start()
                assert await rig.register.wait_exit(timeout=30) == 3
                assert "disk is full" in rig.register.log_tail(3), rig.register.log_tail()
                filler.unlink()
                rig.register.start()
                ok_then = answered(rig, "ok")
                await until(lambda: answered(rig, "ok") >= ok_then + 20, 30, "sales after it")
                stop_burst.set()
            # The same POS sends what was refused again, same cmd_id: now it is done.
            for sent in list(refusals):
                again = await rig.send(sent.command, sent.params, cmd_id=sent.cmd_id)
                assert again.outcome in ("ok", "drawer_open"), again
            events = journal_events(rig.journal)
            assert head_when_full <= len(events)
            types = Counter(e["type"] for e in events)
            assert any(e["type"] == "printer.status" and e["data"].get("paper") == "near_end"
                       for e in events), "the printer's status while full was lost"
            assert types["drawer.unexpected_open"] == 1, types
            # daemon.stopped made it only if the write found room (a WAL page freed by a
            # checkpoint); the start on the full disk journaled nothing.
            assert types["daemon.stopped"] <= 1 and types["daemon.started"] == 2, types
            figures = await rig.settle_and_check()
            log = rig.register.log.read_text(errors="replace")
            assert "Traceback" not in log, log[-4000:]
    figures.faults = 2 + 1 + 1 + 1  # two fills, a stop and a start on a full disk, a reconnect
    figures.refused += len(refusals)
    fault_report.add("journal's disk full mid-burst (refused, resent)", figures)
