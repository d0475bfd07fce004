"""Issue 10, point 2: random bytes from every device, into a real register daemon.

The register runs as its own process with every kind of device configured: the ESC/POS printer
on TCP, the serial drawer box, a ccTalk coin acceptor, a ccTalk bill validator and an SSP note
validator, each on its own pty (reached through a symlink, as udev names them). On the far end
of each line sits a garbage peer instead of the device: it answers every request (or, when none
comes, the silence) with the next chunk hypothesis made — random bytes, partial and truncated
frames, frames with bad checksums and CRCs, absurd length fields, STX and DLE floods, NUL
floods, status bytes, ASB and ``GS ( H`` look-alikes. Meanwhile the daemon must stay up and
answer ``state.get``, invent no coin or note credit (no ``counter.counted``, no unexpected
credit), change no session figure and keep its memory flat. Then the garbage stops, the
project's own simulators take the lines over (the symlinks are pointed at their ptys, the
printer simulator listens on the port) and every device comes back connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
import threading
import time
import tty
from collections import deque
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.cctalk.bus import CcTalkSimulator
from kassad.simulators.printer.device import PrinterSimulator
from kassad.simulators.serial_drawer import SerialDrawerSimulator
from kassad.simulators.ssp.device import SspSimulator
from tests.faults.test_fuzz_commands import FUZZ, RawPeer, Rig
from tests.support.register import RegisterProcess, journal_events, write_config

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
DEVICES = ("printer", "drawer", "coins", "bills", "notes")


class GarbagePeer:
    """The far end of a line, answering with what it is given, on a thread of its own.

    Each queued chunk is written when the driver has sent something (a request) or when the
    line has been quiet for ``quiet`` seconds, whichever is first: a driver that waits for an
    answer gets garbage, one that reads unprompted (ASB, a validator's stream) gets it too."""

    def __init__(self, name: str, quiet: float = 0.02) -> None:
        self.name = name
        self.quiet = quiet
        self.chunks: deque[bytes] = deque()
        self.requests = 0
        self.written = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"garbage-{name}", daemon=True)

    # the line: subclasses give the file descriptors to serve
    def _fds(self) -> list[int]:
        raise NotImplementedError

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            self._gone(fd)
            return
        self.requests += 1
        self._answer()

    def _gone(self, fd: int) -> None:
        """The driver's side closed (a reconnect): nothing to do for a pty."""

    def _targets(self) -> list[int]:
        return self._fds()

    def _answer(self) -> None:
        with self._cond:
            if not self.chunks:
                return
            chunk = self.chunks.popleft()
            self.written += 1
            self._cond.notify_all()
        for fd in self._targets():
            with contextlib.suppress(OSError):  # full or closed: dropped, like a wire
                os.write(fd, chunk)

    def _run(self) -> None:
        while not self._stop.is_set():
            fds = self._fds()
            if not fds:
                self._stop.wait(self.quiet)
                continue
            try:
                readable, _, _ = select.select(fds, [], [], self.quiet)
            except (OSError, ValueError):
                continue
            for fd in readable:
                self._on_readable(fd)
            if not readable:
                self._answer()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def feed(self, chunks: list[bytes]) -> None:
        with self._cond:
            self.chunks.extend(chunks)

    def drained(self, timeout: float = 20.0) -> None:
        """Until every chunk fed has gone out on the line."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self.chunks, timeout):
                raise AssertionError(f"{self.name}: {len(self.chunks)} chunks never sent "
                                     f"({self.requests} requests so far)")


class PtyPeer(GarbagePeer):
    """A pty whose slave the daemon opens through ``link`` (a symlink, like /dev/kassad/…)."""

    def __init__(self, name: str, link: Path) -> None:
        super().__init__(name)
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.link = link
        point(link, os.ttyname(self._slave))

    def _fds(self) -> list[int]:
        return [] if self._stop.is_set() else [self.master]

    def stop(self) -> None:
        super().stop()
        os.close(self.master)  # the daemon's side sees the line gone
        os.close(self._slave)


class TcpPeer(GarbagePeer):
    """A listening socket that garbles like a :9100 printer would talk."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.port = int(self.server.getsockname()[1])
        self.conns: dict[int, socket.socket] = {}

    def _fds(self) -> list[int]:
        return [self.server.fileno(), *self.conns]

    def _targets(self) -> list[int]:
        return list(self.conns)

    def _on_readable(self, fd: int) -> None:
        if fd == self.server.fileno():
            with contextlib.suppress(BlockingIOError):
                conn, _ = self.server.accept()
                conn.setblocking(False)
                self.conns[conn.fileno()] = conn
            return
        super()._on_readable(fd)

    def _gone(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        super().stop()
        for conn in self.conns.values():
            with contextlib.suppress(OSError):
                # RST, not FIN: the printer is gone at once
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
        self.conns.clear()
        self.server.close()


def point(link: Path, target: str) -> None:
    """(Re)point ``link`` at ``target`` atomically, as udev would."""
    tmp = link.with_name(link.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)


class LoopThread:
    """An event loop on a thread, for the simulators (async) under a synchronous test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="simulators",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


# -- garbage -------------------------------------------------------------------------------------

noise = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.builds(lambda b, n: bytes([b]) * n, st.sampled_from([0x00, 0xFF, 0x7F, 0x10, 0x02, 0x1B]),
              st.integers(1, 600)),  # NUL, 0xFF, STX, DLE floods
    st.builds(lambda n: b"\x10\x02" * n, st.integers(1, 200)),  # DLE STX pairs
)


def _cctalk_frame(draw: st.DrawFn) -> bytes:
    dest = draw(st.sampled_from([1, 2, 40, 0, 255]))
    data = draw(st.binary(max_size=20))
    length = draw(st.sampled_from([len(data), 255, 0, len(data) + 7]) | st.integers(0, 255))
    src = draw(st.sampled_from([2, 1, 40]))
    header = draw(st.sampled_from([0, 5, 229, 254]) | st.integers(0, 255))
    body = bytes([dest, length, src, header]) + data
    good = (-sum(body)) % 256
    checksum = draw(st.integers(0, 255).filter(lambda c: c != good))  # never a valid frame
    frame = body + bytes([checksum])
    return frame[: draw(st.integers(1, len(frame)))]  # a truncated frame, or all of it


def _ssp_frame(draw: st.DrawFn) -> bytes:
    seq = draw(st.sampled_from([0x80, 0x00, 0x7F]))
    data = draw(st.binary(max_size=24))
    length = draw(st.sampled_from([len(data), 0xFF, 0]) | st.integers(0, 255))
    crc = draw(st.binary(min_size=2, max_size=2))  # random: right once in 65,536
    frame = b"\x7f" + bytes([seq, length]) + data + crc
    if draw(st.booleans()):
        frame = frame.replace(b"\x7f", b"\x7f\x7f")[1:]  # stuffed, minus the STX
    return frame[: draw(st.integers(1, len(frame)))]


def _printer_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["status", "asb", "gs_h", "mixed"]))
    if kind == "status":  # DLE EOT replies: one byte each, fixed bits right or wrong
        return draw(st.binary(min_size=1, max_size=8))
    if kind == "asb":  # 4 bytes, the first 0xx1xx00, any of them wrong
        return bytes([draw(st.integers(0, 255)) & 0x93 | 0x10]) + draw(
            st.binary(min_size=0, max_size=6))
    if kind == "gs_h":  # 37 22 pid 00, or its start, or no end
        pid = draw(st.binary(min_size=0, max_size=300))
        return b"\x37\x22" + pid + (b"\x00" if draw(st.booleans()) else b"")
    return draw(st.binary(min_size=1, max_size=40))


@st.composite
def chunk_for(draw: st.DrawFn, device: str) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return draw(noise)
    if device in ("coins", "bills"):
        return _cctalk_frame(draw)
    if device == "notes":
        return _ssp_frame(draw)
    if device == "printer":
        return _printer_bytes(draw)
    # the drawer box: a status byte, several, or a box that keeps talking
    return draw(st.binary(min_size=1, max_size=3) | st.binary(min_size=4, max_size=256))


garbage = st.fixed_dictionaries({d: st.lists(chunk_for(d), min_size=1, max_size=12)
                                 for d in DEVICES})


# -- the rig -------------------------------------------------------------------------------------

FAST = {"reconnect_min": 0.02, "reconnect_max": 0.1}


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fuzz-devices")
    printer = TcpPeer("printer")
    peers: dict[str, GarbagePeer] = {
        "printer": printer,
        "drawer": PtyPeer("drawer", tmp / "drawer0"),
        "coins": PtyPeer("coins", tmp / "coins0"),
        "bills": PtyPeer("bills", tmp / "bills0"),
        "notes": PtyPeer("notes", tmp / "notes0"),
    }
    for peer in peers.values():
        peer.start()
    journal, log = tmp / "journal.db", tmp / "register.log"
    devices = {
        "printer": {"transport": {"kind": "tcp", "host": "127.0.0.1", "port": printer.port},
                    "status_interval": 0.05, "status_timeout": 0.1, "open_timeout": 0.5,
                    **FAST},
        "drawer": {"via": "serial", "serial": {
            "path": str(tmp / "drawer0"), "poll_interval": 0.02, "reply_timeout": 0.05,
            **FAST}},
        "counters": [
            {"name": "coins", "protocol": "cctalk", "kind": "coin_acceptor",
             "path": str(tmp / "coins0"), "poll_interval": 0.02, "response_timeout": 0.05},
            {"name": "bills", "protocol": "cctalk", "kind": "bill_validator",
             "path": str(tmp / "bills0"), "poll_interval": 0.02, "response_timeout": 0.05},
            {"name": "notes", "protocol": "ssp", "kind": "note_validator",
             "path": str(tmp / "notes0"), "poll_interval": 0.02, "response_timeout": 0.05},
        ],
    }
    loop = LoopThread()
    with MosquittoBroker(tmp / "broker") as broker:
        config = write_config(tmp / "r1.toml", port=broker.port, journal=journal, consumers=[],
                              devices=devices)
        register = RegisterProcess(config, log)
        with RawPeer(broker.port) as mqtt:
            register.start()
            try:
                mqtt.wait_online()
                rig = Rig(mqtt, register, journal, log, [])
                opened = rig.command("session.open", {"starting_float": {
                    "amount": 50000, "currency": "SEK"}})
                assert opened.body["status"] == "ok", opened.body
                yield {"rig": rig, "peers": peers, "loop": loop, "tmp": tmp}
            finally:
                register.terminate()
                for peer in peers.values():
                    with contextlib.suppress(OSError):
                        peer.stop()
                loop.close()


def invented_credits(journal: Path) -> list[dict[str, Any]]:
    return [e for e in journal_events(journal)
            if e["type"] == "counter.counted" or (
                e["type"] == "counter.fault" and e["data"].get("fault") == "unexpected_credit")]


def cash_figures(rig: Rig) -> dict[str, Any]:
    """The session's figures but its drawer openings: a drawer box's status is one byte with
    no check, so any byte is a reading (open or closed) and an opening from garbage is
    counted as ``unexpected`` — a sensor fact, as on a real line. Cash never moves."""
    figures = rig.figures()
    session = dict(figures["session"])
    session.pop("drawer_openings", None)
    return {**figures, "session": session}


def test_garbage_from_every_device_then_the_devices_come_back(lines: dict[str, Any]) -> None:
    rig: Rig = lines["rig"]
    peers: dict[str, GarbagePeer] = lines["peers"]
    cash = cash_figures(rig)
    session_events = [e for e in journal_events(rig.journal) if e["type"].startswith(
        ("session.", "payment.", "cash."))]
    rss: list[int] = []
    fed = dict.fromkeys(DEVICES, 0)

    @settings(FUZZ, max_examples=60)
    @given(garbage)
    def garbled(chunks: dict[str, list[bytes]]) -> None:
        for device, items in chunks.items():
            peers[device].feed(items)
            fed[device] += len(items)
        for device in DEVICES:
            peers[device].drained()
        rig.alive()
        rss.append(rig.rss_kib())

    garbled()
    state = rig.state()  # answered, with the devices as the garbage left them
    assert set(state["devices"]) == {"printer", "drawer", "counters"}
    assert invented_credits(rig.journal) == []
    assert cash_figures(rig) == cash
    assert [e for e in journal_events(rig.journal) if e["type"].startswith(
        ("session.", "payment.", "cash."))] == session_events
    # Memory: the lowest of the last ten samples against the lowest of the first ten.
    assert len(rss) >= 30
    grew = min(rss[-10:]) - min(rss[:10])
    print(f"garbage chunks sent: {fed}; requests seen: "
          f"{ {d: p.requests for d, p in peers.items()} }; RSS {min(rss[:10])} KiB -> "
          f"{min(rss[-10:])} KiB")
    assert grew < 1024, rss
    log = rig.log.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]

    # The garbage stops; the project's simulators take the lines over.
    loop: LoopThread = lines["loop"]
    tmp: Path = lines["tmp"]
    printer_port = peers["printer"].port  # type: ignore[attr-defined]
    for peer in peers.values():
        peer.stop()
    printer = PrinterSimulator()
    drawer, coins, notes = SerialDrawerSimulator(), CcTalkSimulator(), SspSimulator()
    bills = CcTalkSimulator()  # its own bus: the bill validator at 40 answers there

    async def start() -> None:
        await printer.__aenter__()
        await printer.serve_tcp(port=printer_port)
        for sim, link in ((drawer, "drawer0"), (coins, "coins0"), (bills, "bills0"),
                          (notes, "notes0")):
            await sim.__aenter__()  # type: ignore[attr-defined]
            point(tmp / link, sim.open_pty())  # type: ignore[attr-defined]

    async def stop() -> None:
        for sim in (notes, bills, coins, drawer, printer):
            with contextlib.suppress(Exception):
                await sim.__aexit__(None, None, None)  # type: ignore[attr-defined]

    loop.run(start())
    try:
        deadline = time.monotonic() + 30
        while True:
            seen = rig.peer.states
            devices = rig.state()["devices"]
            up = {"printer": devices["printer"].get("connected") is True
                  and devices["printer"].get("online") is True,
                  "drawer": devices["drawer"].get("connected") is True,
                  "coins": devices["counters"]["coins"]["connected"] is True,
                  "bills": devices["counters"]["bills"]["connected"] is True,
                  "notes": devices["counters"]["notes"]["connected"] is True}
            if all(up.values()):
                break
            assert time.monotonic() < deadline, (up, devices)
            rig.peer.wait_state(seen, 0.5)  # a device's change publishes the state
        rig.alive()
        assert invented_credits(rig.journal) == []
        assert cash_figures(rig) == cash
    finally:
        loop.run(stop())
