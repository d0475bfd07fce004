"""``kassad demo`` as a person runs it: the whole simulated store comes up, a day of sales goes
through both registers, the store view and the files show it, and Ctrl-C stops everything."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from kassad.simulators.broker import free_port
from kassad.simulators.pos import DAY, Action, CloseSession, OpenSession, Refund, SafeDrop, Sale
from tests.support.register import journal_events

READY = "Ctrl-C stops everything"
DAY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Lines:
    """A pipe read on a thread, so the test can wait for a line with a deadline."""

    def __init__(self, pipe: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, text: str, timeout: float) -> list[str]:
        """Every line up to the first containing ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                shown = "\n".join(self.seen[-40:])
                raise AssertionError(f"no line with {text!r} (output ended or timed out):\n"
                                     f"{shown}")
            self.seen.append(line)
            if text in line:
                return self.seen

    def rest(self, timeout: float) -> str:
        """What is left once the pipe is closed."""
        self._thread.join(timeout)
        while (line := self._queue.get_nowait()) is not None:
            self.seen.append(line)
        return "\n".join(self.seen)


def expected_session(actions: Sequence[Action]) -> dict[str, int]:
    """A register's session figures, summed from the script itself (minor units, SEK)."""
    opening = next(a for a in actions if isinstance(a, OpenSession))
    close = next(a for a in actions if isinstance(a, CloseSession))
    sales = [a for a in actions if isinstance(a, Sale)]
    refunds = [a.item.price for a in actions if isinstance(a, Refund)]
    drops = [sum(a.pieces) for a in actions if isinstance(a, SafeDrop)]
    cash = [s.total for s in sales if s.cash]
    expected = opening.starting_float + sum(cash) - sum(refunds) - sum(drops)
    return {"float": opening.starting_float, "cash": sum(cash), "cash_n": len(cash),
            "card": sum(s.total for s in sales if not s.cash), "refunds": sum(refunds),
            "refunds_n": len(refunds), "drops": sum(drops), "expected": expected,
            "counted": close.counted, "discrepancy": close.counted - expected,
            "left": close.leave,
            # a receipt per sale and refund, a slip per safe drop, the Z report the register
            # prints at the close and its slip for the cash removed
            "receipts": len(sales) + len(refunds) + len(drops) + 1
            + (1 if close.counted > close.leave else 0)}


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def field(lines: list[str], label: str) -> str:
    line = next(line for line in lines if line.strip().startswith(label))
    return line.strip()[len(label):].strip()


@pytest.mark.timeout(120)
def test_a_day_in_the_demo_store_then_ctrl_c_stops_everything(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "kassad.daemon", "demo", "--workdir", str(work), "--pace", "0",
         "--http-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0)
    assert demo.stdout is not None and demo.stderr is not None
    out, err = Lines(demo.stdout), Lines(demo.stderr)
    pids: dict[str, int] = {}
    try:
        lines = out.until(READY, DAY_TIMEOUT)
        pids = {name: int(pid) for name, pid in
                re.findall(r"(\S+) (\d+)", field(lines, "processes"))}
        assert set(pids) == {"mosquitto", "R1", "R2", "store"}
        api = field(lines, "JSON API").split()[0].removesuffix("/sessions")
        assert field(lines, "store view").startswith("http://127.0.0.1:")
        assert re.search(r"send --host 127\.0\.0\.1 --port \d+ --store S0421 --register R1 "
                         r"state\.get", field(lines, "a register"))

        registers = get(f"{api}/registers")
        assert registers["online"] == 2 and registers["with_alarms"] == 0
        for register in registers["registers"]:
            assert register["devices"]["printer"]["state"] == "ready"
            assert register["devices"]["drawer"]["state"] == "closed"

        sessions = get(f"{api}/sessions")["sessions"]
        assert sorted(s["register"] for s in sessions) == ["R1", "R2"]
        for item in sessions:
            want = expected_session(DAY[item["register"]])
            s = get(f"{api}/sessions/{item['session_id']}")
            assert s["status"] == "closed"
            assert s["starting_float"] == {"SEK": want["float"]}
            assert s["cash_sales"] == {"SEK": want["cash"]}
            assert s["cash_sales_count"] == want["cash_n"]
            assert s["payments_by_type"]["card"] == {"SEK": want["card"]}
            assert s["cash_refunds"] == ({"SEK": want["refunds"]} if want["refunds"] else {})
            assert s["cash_refunds_count"] == want["refunds_n"]
            assert s["adjustments_removed"] == ({"SEK": want["drops"]} if want["drops"] else {})
            assert s["expected"] == {"SEK": want["expected"]}
            assert s["counted"] == {"SEK": want["counted"]}
            assert s["discrepancy"] == {"SEK": want["discrepancy"]}
            assert s["left_in_drawer"] == {"SEK": want["left"]}
            assert s["removed"] == {"SEK": want["counted"] - want["left"]}
            receipts = sorted((work / "receipts" / item["register"]).glob("receipt-*.txt"))
            assert len(receipts) == want["receipts"]
            assert len(list(receipts[0].parent.glob("receipt-*.png"))) == want["receipts"]
            texts = [r.read_text(encoding="utf-8") for r in receipts]
            assert sum("Z-DAGRAPPORT" in t and "Z-nr 1" in t for t in texts) == 1
        by_register = {s["register"]: s for s in sessions}
        assert by_register["R1"]["discrepancy"] == {"SEK": -200}  # 2.00 short
        assert by_register["R2"]["discrepancy"] == {"SEK": 0}
        printed = [p.read_text(encoding="utf-8") for p in (work / "receipts" / "R2").iterdir()
                   if p.suffix == ".txt"]
        assert any("Order 2004" in text for text in printed)  # waited for paper, then printed

        for name in ("R1", "R2"):
            verify = subprocess.run(
                [sys.executable, "-m", "kassad.daemon", "journal", "verify", "--journal",
                 str(work / name / "journal.db")],
                capture_output=True, text=True, timeout=30, check=False)
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert ": OK" in verify.stdout

        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        assert demo.wait(STOP_TIMEOUT) == 0
        stdout, stderr = out.rest(STOP_TIMEOUT), err.rest(STOP_TIMEOUT)
        assert "Traceback" not in stdout and stderr.strip() == ""
        assert "stopped: R1 exit 0, R2 exit 0, store exit 0, broker stopped." in stdout
        assert not [name for name, pid in pids.items() if alive(pid)]
        with pytest.raises(ProcessLookupError):
            os.killpg(demo.pid, 0)  # nobody left in the demo's process group
        for name in ("R1", "R2"):
            assert journal_events(work / name / "journal.db")[-1]["type"] == "daemon.stopped"
    except AssertionError as e:
        # What the demo said on stderr and the daemons' logs: a failure here is otherwise
        # only the demo's progress lines.
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                demo.wait(STOP_TIMEOUT)
        logs = "".join(f"\n--- {log.name} (last 20 lines)\n" + "\n".join(
            log.read_text(errors="replace").splitlines()[-20:])
            for log in sorted((work / "logs").glob("*.log")))
        raise AssertionError(f"{e}\n--- demo stderr\n{err.rest(5)}{logs}") from None
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
