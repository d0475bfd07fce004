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
import glob
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import CommandError, CommandTimeout
from kassad.daemon.journal.verify import verify_journal
from tests.faults.conftest import FaultReport
from tests.faults.rig import TTL, FaultRig, Sent, journal_on_small_disk
from tests.support.register import eventually, journal_events, until

pytestmark = pytest.mark.timeout(120)

#: Commands answered ``journal_unavailable`` the test waits for while the disk is full (each
#: one is sent again, same cmd_id, once there is room).
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
    fault_report.add("journal's disk full mid-burst (refused, resent)", figures)


# -- the clock ------------------------------------------------------------------------------

#: Debian's libfaketime (scripts/setup.sh ensure_faketime installs it): under the
#: architecture's library folder, /usr/lib/x86_64-linux-gnu/faketime/ on amd64.
FAKETIME_LIBRARIES = (*sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")),
                      "/usr/lib/faketime/libfaketime.so.1")
HOUR = 3600


def faketime_env(offset_file: Path) -> dict[str, str]:
    """A process whose wall clock (CLOCK_REALTIME) is the real one plus the offset in
    ``offset_file`` ("-3600" is an hour back), read again at every call; the monotonic clock
    is left alone, as when NTP steps the clock."""
    library = next((lib for lib in FAKETIME_LIBRARIES if Path(lib).exists()), None)
    if library is None:
        pytest.skip("libfaketime is not installed (scripts/setup.sh ensure_faketime)")
    return {"LD_PRELOAD": library, "FAKETIME_TIMESTAMP_FILE": str(offset_file),
            "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def run_python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def test_faketime_steps_the_wall_clock_only(tmp_path: Path) -> None:
    """The tool first: rewriting the file steps time.time() and datetime.now() of a running
    Python process back and forth; time.monotonic() goes on undisturbed."""
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    out = run_python(f"""
import time, datetime, pathlib
f = pathlib.Path({str(offset)!r})
def read():
    return time.time(), datetime.datetime.now(datetime.UTC).timestamp(), time.monotonic()
a = read(); f.write_text("-3600\\n"); b = read(); f.write_text("+0\\n"); c = read()
print(*(round(x, 3) for x in (*a, *b, *c)))
""", faketime_env(offset))
    wall_a, now_a, mono_a, wall_b, now_b, mono_b, wall_c, now_c, mono_c = map(float, out.split())
    assert wall_b - wall_a == pytest.approx(-HOUR, abs=1)
    assert now_b - now_a == pytest.approx(-HOUR, abs=1)
    assert wall_c - wall_a == pytest.approx(0, abs=1) and now_c - now_a == pytest.approx(0, abs=1)
    assert 0 <= mono_b - mono_a < 1 and 0 <= mono_c - mono_b < 1


class ClockRig(QueryingRig):
    """The rig, and a POS that can date a command in the past (its own clock is right)."""

    async def send_issued(self, command: str, params: dict[str, Any],
                          issued_at: datetime) -> Sent:
        assert self._pos is not None
        sent = Sent(self.next_id(command.replace(".", "-")), command, params)
        self.sent[sent.cmd_id] = sent
        try:
            result = await self._pos.send(command, params, cmd_id=sent.cmd_id, ttl=TTL,
                                          issued_at=issued_at)
        except CommandError as e:
            sent.outcome, sent.data = e.code, e.details
        except CommandTimeout:
            sent.outcome = "timeout"
        else:
            sent.outcome, sent.data = "ok", result.data
        return sent


def ts_of(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["ts"])


async def test_wall_clock_steps_back_an_hour_mid_burst(tmp_path: Path,
                                                       fault_report: FaultReport) -> None:
    offset = tmp_path / "clock-offset"
    offset.write_text("+0\n")
    env = faketime_env(offset)
    steps: list[tuple[int, int]] = []  # (journal head just before, new offset in seconds)
    async with ClockRig(tmp_path, register_env=env) as rig:
        await rig.open_session()

        def step(seconds: int) -> None:
            steps.append((len(journal_events(rig.journal)), seconds))
            offset.write_text(f"{seconds:+d}\n")

        # A kick waiting for its sensor while the clock steps back: the drawer is jammed, the
        # open_timeout (1 s, on the monotonic clock) still ends it; on the wall clock it would
        # wait an hour.
        await until(lambda: not rig.printer.state.drawer_open, 10, "drawer shut")
        await eventually(lambda: rig.drawer_is("closed"), 10, what="drawer seen shut")
        rig.printer.jam_drawer(True)
        cmd_id = rig.next_id("drawer-open")
        kick = asyncio.create_task(rig.send("drawer.open", {"reason": "sale"}, cmd_id=cmd_id))
        await until(lambda: caused_by(journal_events(rig.journal), cmd_id) != [], 10,
                    "the jammed kick sent")
        step(-HOUR)
        async with asyncio.timeout(10):
            jammed = await kick
        assert jammed.outcome == "kick_failed", jammed
        rig.printer.jam_drawer(False)

        # Commands from the POS (its clock is right, an hour ahead of the register's) are all
        # taken: issued "in the future" is no refusal, and kicks are not too old. One that
        # expired 80 s ago by the POS's clock is taken too: expiry (and max_kick_age) is
        # judged by the register's clock, the one it stamps its events with, so a step back
        # of an hour defers it by an hour. The register cannot tell a wrong step from a
        # correction (most NTP steps are), and trusting its old timeline would refuse every
        # command as expired after a correction; a copy queued in the broker is still dropped
        # by its Message Expiry (ttl + 1 s, on the broker's clock). After the step forward the
        # same late command is refused ``expired``.
        late = await rig.send_issued("payment.record", {
            "kind": "other", "payment_type": "card", "amount": {"amount": 977,
                                                                "currency": "SEK"}},
            issued_at=datetime.now(UTC) - timedelta(seconds=TTL + 80))
        assert late.outcome == "ok", late
        stop_burst = asyncio.Event()

        async def stepper() -> None:
            await until(lambda: answered(rig, "ok") >= 40, 30, "40 sales with the clock back")
            # The drawer open (a kick's or by hand) across the step forward: left_open_after
            # (30 s, monotonic) must not see an hour pass.
            head = len(journal_events(rig.journal))
            rig.printer.open_drawer_by_hand()
            await until(lambda: any(e["type"] == "drawer.opened"
                                    for e in journal_events(rig.journal)[head:]), 10,
                        "the drawer seen open")
            step(0)
            await until(lambda: answered(rig, "ok") >= 80, 30, "40 more, the clock right")
            expired = await rig.send_issued("payment.record", {
                "kind": "other", "payment_type": "card", "amount": {"amount": 978,
                                                                    "currency": "SEK"}},
                issued_at=datetime.now(UTC) - timedelta(seconds=TTL + 80))
            assert expired.outcome == "expired", expired
            step(-HOUR)  # and back again: the close below is stamped before the opening
            await until(lambda: answered(rig, "ok") >= 110, 30, "30 more, the clock back")
            stop_burst.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(stepper())
            group.create_task(rig.burst(4, until_done=stop_burst.is_set))
        figures = await rig.settle_and_check()

    events = journal_events(rig.journal)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    previous = 0
    for head, seconds in steps:  # events just after each step: ts moved by the step
        before = ts_of(events[head - 1])
        moved = [(ts_of(e) - before).total_seconds() for e in events[head:head + 10]]
        assert any(m == pytest.approx(seconds - previous, abs=30) for m in moved), (
            head, seconds, moved)
        previous = seconds
    types = Counter(e["type"] for e in events)
    assert types["drawer.left_open"] == 0, types
    assert types["drawer.kick_failed"] == 1, types  # the jammed kick's, no other
    closed = next(e for e in events if e["type"] == "session.closed")
    opened = next(e for e in events if e["type"] == "session.opened")
    assert ts_of(closed) < ts_of(opened)  # closed an hour "before" it opened: still balanced

    # A journal created while the clock is an hour back still gets an epoch of its own (the
    # 20 random low bits); it sorts before the old one, as the register's clock says.
    epoch = events[0]["epoch"]
    offset.write_text(f"{-HOUR:+d}\n")
    recreated = int(run_python(f"""
from pathlib import Path
from kassad.daemon.journal.store import JournalFile
print(JournalFile(Path({str(tmp_path / "recreated.db")!r}), "S1", "R1", "boot").epoch)
""", env))
    assert recreated != epoch
    assert (epoch >> 20) - (recreated >> 20) == pytest.approx(HOUR, abs=120)

    figures.faults = len(steps)
    fault_report.add("register's wall clock stepped back 1 h, forward", figures)
