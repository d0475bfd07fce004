"""The printer simulator as a driver sees it: over TCP, a pty and fake USB, byte for byte.

Expected bytes come from device-protocols.md §1.3–1.6 (status bits, ASB, GS ( H). Nothing
sleeps: replies are awaited on the client's stream with a timeout, simulator effects with
``sim.wait_for``; "no reply" is shown by a later reply arriving first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
import serial
import serial_asyncio_fast
import usb.core
from escpos.printer import Dummy
from PIL import Image

from kassad.simulators.printer.control import control, serve_control
from kassad.simulators.printer.device import PrinterSimulator
from kassad.simulators.printer.parser import EscPosParser, Kind
from kassad.simulators.printer.state import PrinterState
from kassad.simulators.usb_backend import FakeUsbBackend

ALL = b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04"   # DLE EOT 1..4
EOT1, EOT4 = b"\x10\x04\x01", b"\x10\x04\x04"
KICK = b"\x1bp\x00\x19\xfa"                                   # ESC p 0 25 250: 50 / 500 ms
CUT = b"\x1dV\x00"
T = 2.0


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), T)

    async def ask(self, data: bytes, n: int) -> bytes:
        await self.send(data)
        return await self.read(n)

    async def status(self) -> str:
        return (await self.ask(ALL, 4)).hex(" ")


@pytest.fixture
async def sim() -> AsyncIterator[PrinterSimulator]:
    async with PrinterSimulator() as s:
        yield s


@asynccontextmanager
async def tcp(sim: PrinterSimulator) -> AsyncIterator[Client]:
    port = sim.tcp_port or await sim.serve_tcp()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()


@asynccontextmanager
async def serial_port(path: str) -> AsyncIterator[Client]:
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=path, baudrate=19200)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()


def receipt_bytes() -> bytes:
    p = Dummy(profile="TM-T20II")
    p.hw("INIT")
    p.magic.force_encoding("CP858")  # after ESC @, which resets the code page
    p.set(bold=True, align="center", double_height=True)
    p.text("KIOSK €\n")
    p.set(bold=False, align="left", double_height=False, normal_textsize=True)
    p.text(f"{'Coffee':<42}{'3.50':>6}\n")
    p.set(underline=1)
    p.text(f"{'TOTAL €':<42}{'3.50':>6}\n")
    p.set(underline=0)
    p.barcode("4006381333931", "EAN13")
    p.qr("https://example.test/r/1", native=True, size=4)
    p.image(Image.new("1", (64, 20), 0), impl="bitImageRaster")
    p.cut()
    p.text("second\n")
    p.cut(mode="PART")
    return bytes(p.output)


async def test_idle_status_over_tcp_and_pty(sim: PrinterSimulator) -> None:
    async with tcp(sim) as client:
        assert await client.status() == "12 12 12 12"
    async with serial_port(sim.open_pty()) as client:
        assert await client.status() == "12 12 12 12"
    assert sim.state.asb() == b"\x10\x00\x00\x00"


@pytest.mark.parametrize(("verb", "fault", "cleared"), [
    ("paper_near_end", "12 12 12 1e", "paper_ok"),
    ("paper_out", "1a 32 12 7e", "paper_ok"),
    ("cover_open", "1a 16 12 12", "cover_close"),
    ("go_offline", "1a 12 12 12", "go_online"),
    ("cutter_error", "1a 52 1a 12", "cutter_error"),
    ("unrecoverable_error", "1a 52 32 12", "unrecoverable_error"),
])
async def test_faults_set_exactly_their_bits(sim: PrinterSimulator, verb: str, fault: str,
                                             cleared: str) -> None:
    async with tcp(sim) as client:
        getattr(sim, verb)()
        assert await client.status() == fault
        if cleared == verb:
            getattr(sim, verb)(False)
        else:
            getattr(sim, cleared)()
        assert await client.status() == "12 12 12 12"


async def test_reference_replies_with_pin3_high_when_closed() -> None:
    """The doc's examples with pin 3 high: paper out 1E 32 12 7E, cover open 1E / 16."""
    async with PrinterSimulator(PrinterState(drawer_open_level="low")) as sim, \
            tcp(sim) as client:
        assert await client.status() == "16 12 12 12"
        sim.paper_out()
        assert await client.status() == "1e 32 12 7e"
        sim.paper_ok()
        sim.cover_open()
        assert await client.ask(EOT1 + b"\x10\x04\x02", 2) == b"\x1e\x16"


@pytest.mark.parametrize(("level", "closed", "opened"), [("high", 0x12, 0x16),
                                                         ("low", 0x16, 0x12)])
async def test_kick_opens_drawer_and_pin3_follows(level: str, closed: int, opened: int) -> None:
    async with PrinterSimulator(PrinterState(drawer_open_level=level)) as sim, \
            tcp(sim) as client:
        assert await client.ask(EOT1, 1) == bytes([closed])
        assert await client.ask(KICK + EOT1, 1) == bytes([opened])
        (kick,) = sim.kicks
        assert (kick.pin, kick.on_ms, kick.off_ms, kick.realtime, kick.fired) == (
            2, 50, 500, False, True)
        assert kick.at <= kick.executed_at
        sim.close_drawer()
        assert await client.ask(EOT1, 1) == bytes([closed])
        await client.send(b"\x1bp\x01\x32\x32")  # pin 5: the drawer is wired to pin 2
        await sim.wait_kicks(2)
        assert not sim.kicks[1].fired and not sim.state.drawer_open


async def test_realtime_kick_works_offline_while_esc_p_waits(sim: PrinterSimulator) -> None:
    async with tcp(sim) as client:
        sim.paper_out()
        assert await client.ask(KICK + EOT1, 1) == b"\x1a"  # ESC p queued: still closed
        assert await client.ask(b"\x10\x14\x01\x00\x01" + EOT1, 1) == b"\x1e"
        assert [(k.realtime, k.on_ms, k.off_ms) for k in sim.kicks] == [(True, 100, 100)]
        sim.close_drawer()
        sim.paper_ok()  # the queued ESC p now runs
        assert await client.ask(EOT1, 1) == b"\x16"
        assert [k.realtime for k in sim.kicks] == [True, False]


async def test_jammed_drawer_stays_closed(sim: PrinterSimulator) -> None:
    sim.jam_drawer()
    async with tcp(sim) as client:
        assert await client.ask(KICK + EOT1, 1) == b"\x12"
    assert len(sim.kicks) == 1 and not sim.kicks[0].fired and not sim.state.drawer_open


async def test_stuck_sensor_and_open_by_hand(sim: PrinterSimulator) -> None:
    async with tcp(sim) as client:
        sim.stick_sensor("open")
        assert await client.ask(EOT1, 1) == b"\x16"  # closed, reads open
        sim.stick_sensor("closed")
        assert await client.ask(KICK + EOT1, 1) == b"\x12"  # opened, reads closed
        assert sim.state.drawer_open
        sim.stick_sensor(None)
        sim.close_drawer()
        sim.open_drawer_by_hand()
        assert await client.ask(EOT1, 1) == b"\x16"
    assert len(sim.kicks) == 1


async def test_kick_delay_opens_later(sim: PrinterSimulator) -> None:
    sim.kick_delay = 0.05
    async with tcp(sim) as client:
        assert await client.ask(KICK + EOT1, 1) == b"\x12"
        await sim.wait_for(lambda: sim.state.drawer_open, 1)
        assert await client.ask(EOT1, 1) == b"\x16"


async def test_asb_on_enable_and_on_change(sim: PrinterSimulator) -> None:
    async with tcp(sim) as client:
        assert await client.ask(b"\x1da\x0f", 4) == b"\x10\x00\x00\x00"
        sim.paper_near_end()
        assert await client.read(4) == b"\x10\x00\x03\x00"
        await client.send(KICK)
        assert await client.read(4) == b"\x14\x00\x03\x00"
        sim.cover_open()
        assert await client.read(4) == b"\x3c\x00\x03\x00"
        sim.cover_close()
        assert await client.read(4) == b"\x14\x00\x03\x00"
        # Only paper selected: the drawer closing sends nothing, paper out does.
        assert await client.ask(b"\x1da\x08", 4) == b"\x14\x00\x03\x00"
        sim.close_drawer()
        assert await client.ask(EOT1, 1) == b"\x12"
        sim.paper_out()
        assert await client.read(4) == b"\x18\x00\x0f\x00"
        sim.paper_ok()
        assert await client.read(4) == b"\x10\x00\x00\x00"
        assert await client.ask(b"\x1dr\x01" + b"\x1dr\x02", 2) == b"\x00\x00"  # GS r


async def test_process_id_only_after_the_receipt_printed(sim: PrinterSimulator) -> None:
    async with tcp(sim) as client:
        await client.send(b"line one\n")
        await sim.wait_for(lambda: sim.current_receipt.lines == ["line one"])
        sim.paper_out()
        await client.send(b"line two\n" + CUT + b"\x1d(H\x06\x0000AB12")
        assert await client.ask(EOT4, 1) == b"\x7e"  # answered, and nothing before it
        assert sim.receipts == [] and sim.pending == 4  # text, LF, cut, GS ( H
        sim.paper_ok()
        assert await client.read(7) == b"\x37\x22AB12\x00"
        assert sim.receipts[0].lines == ["line one", "line two"]
        assert sim.confirmed == [b"AB12"]


async def test_recovery_and_clear_buffers(sim: PrinterSimulator) -> None:
    async with tcp(sim) as client:
        sim.cutter_error()
        await client.send(b"kept\n" + CUT + b"\x1d(H\x06\x0000ID01")
        assert await client.ask(b"\x10\x05\x01", 7) == b"\x37\x22ID01\x00"  # DLE ENQ 1
        sim.go_offline()
        await client.send(b"dropped\n" + CUT + b"\x1d(H\x06\x0000ID02")
        assert await client.ask(b"\x10\x14\x08\x01\x03\x14\x01\x06\x02\x08", 3) == b"\x37\x25\x00"
        sim.go_online()
        assert await client.ask(EOT1, 1) == b"\x12"
    assert [r.lines for r in sim.receipts] == [["kept"]] and sim.confirmed == [b"ID01"]


@pytest.mark.parametrize(("switch", "replies"), [(True, b"\x1e\x12"), (False, b"\x12")])
async def test_realtime_inside_raster_data(switch: bool, replies: bytes) -> None:
    async with PrinterSimulator(realtime_in_data=switch) as sim, tcp(sim) as client:
        sim.paper_near_end()  # DLE EOT 4 -> 1E, DLE EOT 1 -> 12: tells the replies apart
        raster = b"\x1dv0\x00\x01\x00\x04\x00" + EOT4 + b"\x00"  # 8 x 4 dots holding 10 04 04
        assert await client.ask(raster + EOT1, len(replies)) == replies
        await client.send(CUT)
        (receipt,) = await sim.wait_receipts(1)
        assert receipt.lines == ["[image 8x4]"]
        assert receipt.layout[0].bitmap is not None
        assert receipt.layout[0].bitmap.rows == EOT4 + b"\x00"


async def test_receipts_rendered(sim: PrinterSimulator, tmp_path: Path) -> None:
    async with tcp(sim) as client:
        await client.send(receipt_bytes())
        first, second = await sim.wait_receipts(2)
    assert first.lines[:3] == ["KIOSK €", f"{'Coffee':<42}{'3.50':>6}", f"{'TOTAL €':<42}  3.50"]
    head = first.style_of("KIOSK")
    assert head.style.bold and head.style.double_height and head.align == "center"
    coffee = first.style_of("Coffee")
    assert not coffee.style.bold and coffee.align == "left" and not coffee.style.underline
    assert first.style_of("TOTAL").style.underline == 1
    assert "[EAN13 4006381333931]" in first.lines
    assert "[QR https://example.test/r/1]" in first.lines
    assert "[image 64x20]" in first.lines
    assert first.cut == "full"
    assert second.text == "second" and second.cut == "partial"
    assert sim.unknown == []
    first.to_png(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0


async def test_wrap_tabs_code_pages_and_unknown(sim: PrinterSimulator) -> None:
    async with tcp(sim) as client:
        await client.send(b"x" * 50 + b"\n" + b"a\tb\n" + b"\x1bt\x10\x80\x1bt\x28\xa4\n"
                          + b"\x1b\x01ok\n" + CUT)
        (receipt,) = await sim.wait_receipts(1)
    assert receipt.lines == ["x" * 48, "xx", "a       b", "€€", "ok"]
    assert [c.raw for c in sim.unknown] == [b"\x1b\x01"]


async def test_image_forms(sim: PrinterSimulator) -> None:
    """GS v 0 (fragments of a tall picture joined), GS ( L, ESC *, python-escpos's default QR."""
    p = Dummy(profile="TM-T20II")
    black = Image.new("1", (64, 20), 0)
    p.image(Image.new("1", (576, 2000), 0), impl="bitImageRaster")  # sent as 960+960+80 rows
    p.image(black, impl="graphics")
    p.text("between\n")
    p.image(black, impl="bitImageColumn")  # one 24-dot strip
    p.qr("no native")  # rasterised by python-escpos
    p.cut()
    async with tcp(sim) as client:
        await client.send(bytes(p.output))
        (receipt,) = await sim.wait_receipts(1)
    images = [line for line in receipt.lines if line.startswith("[image")]
    assert images[:3] == ["[image 576x2000]", "[image 64x20]", "[image 64x24]"]
    assert len(images) == 4 and receipt.lines[2] == "between"
    column = receipt.layout[receipt.lines.index("[image 64x24]")].bitmap
    assert column is not None and column.rows[:8] == b"\xff" * 8  # black top row, left to right


def test_parser_chunking_does_not_matter() -> None:
    data = receipt_bytes() + b"\x1d(H\x06\x0000ABCD\x10\x14\x01\x00\x01" + ALL

    def merged(commands: list) -> list:
        out: list = []
        for c in commands:  # text may arrive in pieces; everything else must be identical
            if out and c.kind is Kind.TEXT and out[-1][0] is Kind.TEXT:
                out[-1] = (Kind.TEXT, out[-1][1] + c.data)
            else:
                out.append((c.kind, c.raw, c.params, c.data) if c.kind is not Kind.TEXT
                           else (Kind.TEXT, c.data))
        return out

    whole = merged(EscPosParser().feed(data))
    assert sum(1 for c in whole if c[0] is Kind.RT_STATUS) == 4
    for size in (1, 2, 3, 5, 7, 64):
        parser = EscPosParser()
        pieces = [parser.feed(data[i:i + size]) for i in range(0, len(data), size)]
        assert merged([c for piece in pieces for c in piece]) == whole, size


async def test_parser_caps_huge_data() -> None:
    parser = EscPosParser(max_data=1024)
    out = parser.feed(b"\x1dv0\x00\x64\x00\x64\x00" + bytes(10_000) + b"ok")
    raster = out[0]
    assert raster.kind is Kind.RASTER and len(raster.data) == 1024
    assert raster.truncated == 10_000 - 1024
    assert out[1].data == b"ok"
    parser.feed(b"\x1dv0\x00\xff\xff\xff\xff" + bytes(100_000))  # declares 4 GiB
    assert parser.pending <= 1024


async def test_silent_when_cover_open(sim: PrinterSimulator) -> None:
    sim.silent_when_cover_open()
    async with tcp(sim) as client:
        sim.cover_open()
        await client.send(EOT1)  # no reply, not even later
        await sim.wait_received(3)
        sim.cover_close()
        assert await client.ask(b"\x10\x04\x02", 1) == b"\x12"


async def test_tcp_unplug_and_replug(sim: PrinterSimulator) -> None:
    port = await sim.serve_tcp()
    async with tcp(sim) as client:
        assert await client.status() == "12 12 12 12"
        await sim.unplug()
        with suppress(ConnectionResetError):  # the printer sends RST; EOF if that raced
            assert await asyncio.wait_for(client.reader.read(10), T) == b""
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await sim.replug()
    assert sim.tcp_port == port
    async with tcp(sim) as client:
        assert await client.status() == "12 12 12 12"


async def test_pty_unplug_and_replug(sim: PrinterSimulator) -> None:
    old = sim.open_pty()
    async with serial_port(old) as client:
        assert await client.ask(KICK + EOT1, 1) == b"\x16"
        await sim.unplug()
        with pytest.raises(serial.SerialException):
            await asyncio.wait_for(client.reader.read(10), T)
    new = await sim.replug()
    assert new is not None and new == sim.pty_path
    async with serial_port(new) as client:
        assert await client.ask(EOT1, 1) == b"\x16"  # the drawer is still open


async def test_usb_through_pyusb(sim: PrinterSimulator) -> None:
    backend = FakeUsbBackend()
    sim.usb_device(backend)

    def find() -> usb.core.Device:
        dev = usb.core.find(backend=backend, idVendor=0x04B8, idProduct=0x0E28)
        assert dev is not None and dev.serial_number == "KASSADSIM0001"
        if dev.is_kernel_driver_active(0):
            dev.detach_kernel_driver(0)
        return dev

    def ask(dev: usb.core.Device, data: bytes, n: int) -> bytes:
        dev.write(0x01, data, 1000)
        got = b""
        while len(got) < n:
            got += bytes(dev.read(0x82, 64, 1000))
        return got

    dev = await asyncio.to_thread(find)
    assert await asyncio.to_thread(ask, dev, ALL, 4) == b"\x12\x12\x12\x12"
    assert await asyncio.to_thread(ask, dev, b"hello usb\n" + CUT + KICK + EOT1, 1) == b"\x16"
    assert sim.receipts[0].lines == ["hello usb"]
    await sim.unplug()
    with pytest.raises(usb.core.USBError) as gone:
        await asyncio.to_thread(dev.write, 0x01, EOT1, 1000)
    assert gone.value.errno == 19  # ENODEV
    await sim.replug()
    dev = await asyncio.to_thread(find)
    assert await asyncio.to_thread(ask, dev, EOT1, 1) == b"\x16"


async def test_control_port(sim: PrinterSimulator) -> None:
    server = await serve_control(sim)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reply = await control(port, "paper_out")
        assert reply["ok"] and reply["state"]["paper"] == "out"
        assert reply["state"]["dle_eot"] == "1a 32 12 7e"
        reply = await control(port, "stick_sensor", stuck="open")
        assert reply["state"]["sensor_stuck"] == "open"
        assert (await control(port, "receipts"))["result"] == []
        bad = await control(port, "warp")
        assert not bad["ok"] and "unknown verb" in bad["error"]
        assert not (await control(port, "cutter_error", colour="red"))["ok"]
