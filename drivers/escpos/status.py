"""ESC/POS status frames: pure bytes ↔ frozen dataclasses (no I/O, no asyncio).

What the host sends (all constants or pure builders here)::

    DLE EOT n          10 04 n              n = 1..4, real-time, one-byte reply each
    GS r n             1D 72 n              n = 1 paper, 2 drawer; buffered, one-byte reply
    GS a n             1D 61 n              Automatic Status Back mask (0 = off)
    GS ( H fn 48       1D 28 48 06 00 30 30 d1 d2 d3 d4   "tell me when this has printed"

What the printer sends back, byte patterns (bit 7 … bit 0, x = status bit)::

    DLE EOT reply      0xx1xx10             (b & 0x93) == 0x12
    ASB byte 1         0xx1xx00             (b & 0x93) == 0x10, then 3 bytes 0xx0xxxx
    GS r reply         0xx0xxxx             (b & 0x90) == 0x00
    process ID         37 22 d1 d2 d3 d4 00 d = 0x20..0x7E
    XON / XOFF         11 / 13              serial flow control, may sit inside an ASB

The four start patterns are disjoint, so :class:`StatusDemux` can split whatever arrives
into typed items. GS r replies look like any stray byte with bits 4 and 7 clear; the demux
reads one as a reply only while the driver has said one is due (:meth:`StatusDemux.expect_gs_r`).

DLE EOT and ASB put the same facts at different bits (paper near end is 0x0C in DLE EOT 4
but 0x03 in ASB byte 3); both end in one :class:`PrinterStatus`. Sources: Epson TM-U220A,
TM-L90, Citizen CT-S2000 "Identification of Send Status" (see docs/device-protocols.md §1.3-1.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, overload

from kassad.drivers.errors import ProtocolError

DLE_EOT: Final = MappingProxyType({n: bytes((0x10, 0x04, n)) for n in (1, 2, 3, 4)})
GS_R_PAPER: Final = b"\x1d\x72\x01"
GS_R_DRAWER: Final = b"\x1d\x72\x02"

#: ASB mask bits for :func:`asb_enable`: which category's *change* makes the printer report.
ASB_DRAWER: Final = 0x01
ASB_ONLINE: Final = 0x02
ASB_ERROR: Final = 0x04
ASB_PAPER: Final = 0x08
ASB_ALL: Final = ASB_DRAWER | ASB_ONLINE | ASB_ERROR | ASB_PAPER

XON: Final = 0x11
XOFF: Final = 0x13
_PID_HEAD: Final = b"\x37\x22"
_PID_LEN: Final = 7  # 37 22 d1 d2 d3 d4 00

PaperState = Literal["ok", "near_end", "out"]


def _bit(byte: int, mask: int) -> bool:
    return bool(byte & mask)


def _check_byte(byte: int) -> None:
    if not 0 <= byte <= 0xFF:
        raise ValueError(f"not a byte: {byte!r}")


# --- DLE EOT ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrinterInfo:
    """DLE EOT 1. Bits 5 and 6 are only defined on newer models (0 on older ones)."""

    raw: int
    drawer_pin3_high: bool
    offline: bool
    waiting_online_recovery: bool
    feed_button_pressed: bool


@dataclass(frozen=True, slots=True)
class OfflineCause:
    """DLE EOT 2."""

    raw: int
    cover_open: bool
    feeding: bool  # paper being fed by the FEED button
    paper_end_stop: bool  # printing stopped because the paper ran out
    error: bool  # an error occurred: DLE EOT 3 says which


@dataclass(frozen=True, slots=True)
class ErrorCause:
    """DLE EOT 3."""

    raw: int
    recoverable_error: bool
    cutter_error: bool
    unrecoverable_error: bool
    auto_recoverable_error: bool  # e.g. head over-temperature


@dataclass(frozen=True, slots=True)
class PaperSensor:
    """DLE EOT 4. Some models split each pair over two sensors; either bit counts."""

    raw: int
    near_end: bool  # 0x0C
    out: bool  # 0x60


DleEotStatus = PrinterInfo | OfflineCause | ErrorCause | PaperSensor


@overload
def parse_dle_eot(n: Literal[1], byte: int) -> PrinterInfo: ...
@overload
def parse_dle_eot(n: Literal[2], byte: int) -> OfflineCause: ...
@overload
def parse_dle_eot(n: Literal[3], byte: int) -> ErrorCause: ...
@overload
def parse_dle_eot(n: Literal[4], byte: int) -> PaperSensor: ...
@overload
def parse_dle_eot(n: int, byte: int) -> DleEotStatus: ...
def parse_dle_eot(n: int, byte: int) -> DleEotStatus:
    """Decode the one-byte reply to ``DLE EOT n``; ProtocolError unless it is ``0xx1xx10``."""
    if n not in DLE_EOT:
        raise ValueError(f"DLE EOT n must be 1..4, not {n}")
    _check_byte(byte)
    if (byte & 0x93) != 0x12:
        raise ProtocolError(f"DLE EOT {n} reply 0x{byte:02X} does not match 0xx1xx10")
    # n = 1..3 share the layout "bits 2, 3, 5, 6 are flags"; their meaning is per n.
    b2, b3, b5, b6 = (_bit(byte, m) for m in (0x04, 0x08, 0x20, 0x40))
    if n == 1:
        return PrinterInfo(byte, b2, b3, b5, b6)
    if n == 2:
        return OfflineCause(byte, b2, b3, b5, b6)
    if n == 3:
        return ErrorCause(byte, b2, b3, b5, b6)
    return PaperSensor(byte, _bit(byte, 0x0C), _bit(byte, 0x60))


# --- the combined status ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """One snapshot of the printer, from the four DLE EOT replies or from one ASB message.

    ``drawer_pin3_high`` is the raw level of the drawer sensor: whether that means "open"
    depends on the drawer (configured polarity), so it is not interpreted here.
    """

    online: bool
    drawer_pin3_high: bool
    cover_open: bool
    paper: PaperState
    feeding: bool  # paper being fed by the FEED button
    error: bool  # any error, whatever its kind
    recoverable_error: bool
    cutter_error: bool
    unrecoverable_error: bool
    auto_recoverable_error: bool
    waiting_online_recovery: bool
    feed_button_pressed: bool

    @property
    def can_print(self) -> bool:
        return self.online and not self.error and not self.cover_open and self.paper != "out"


def status_from_dle_eot(b1: int, b2: int, b3: int, b4: int) -> PrinterStatus:
    """Combine the replies to DLE EOT 1, 2, 3, 4 (in that order)."""
    info, cause = parse_dle_eot(1, b1), parse_dle_eot(2, b2)
    err, sensor = parse_dle_eot(3, b3), parse_dle_eot(4, b4)
    # Paper: either the sensor or "stopped at paper end" says out; a doubt is never "ok".
    paper: PaperState = (
        "out" if sensor.out or cause.paper_end_stop else "near_end" if sensor.near_end else "ok"
    )
    kinds = (err.recoverable_error, err.cutter_error, err.unrecoverable_error)
    return PrinterStatus(
        online=not info.offline,
        drawer_pin3_high=info.drawer_pin3_high,
        cover_open=cause.cover_open,
        paper=paper,
        feeding=cause.feeding,
        error=cause.error or any(kinds) or err.auto_recoverable_error,
        recoverable_error=err.recoverable_error,
        cutter_error=err.cutter_error,
        unrecoverable_error=err.unrecoverable_error,
        auto_recoverable_error=err.auto_recoverable_error,
        waiting_online_recovery=info.waiting_online_recovery,
        feed_button_pressed=info.feed_button_pressed,
    )


# --- Automatic Status Back ----------------------------------------------------------------


def asb_enable(mask: int) -> bytes:
    """``GS a n``: the printer answers at once with the current 4 bytes, then on each change."""
    if not 0 <= mask <= 0xFF:
        raise ValueError(f"ASB mask must be 0..255, not {mask}")
    return b"\x1d\x61" + bytes((mask,))


def parse_asb(data: bytes) -> PrinterStatus:
    """Decode a 4-byte ASB message (XON/XOFF already removed); ProtocolError on any mismatch."""
    if len(data) != 4:
        raise ProtocolError(f"ASB message must be 4 bytes, got {len(data)}: {data.hex(' ')}")
    b1, b2, b3, b4 = data
    if (b1 & 0x93) != 0x10:
        raise ProtocolError(f"ASB byte 1 0x{b1:02X} does not match 0xx1xx00")
    for i, b in ((2, b2), (3, b3), (4, b4)):
        if b & 0x90:
            raise ProtocolError(f"ASB byte {i} 0x{b:02X} does not match 0xx0xxxx")
    paper: PaperState = "out" if b3 & 0x0C else "near_end" if b3 & 0x03 else "ok"
    return PrinterStatus(
        online=not b1 & 0x08,
        drawer_pin3_high=_bit(b1, 0x04),
        cover_open=_bit(b1, 0x20),
        paper=paper,
        feeding=_bit(b1, 0x40),
        error=_bit(b2, 0x04 | 0x08 | 0x20 | 0x40),
        recoverable_error=_bit(b2, 0x04),
        cutter_error=_bit(b2, 0x08),
        unrecoverable_error=_bit(b2, 0x20),
        auto_recoverable_error=_bit(b2, 0x40),
        waiting_online_recovery=_bit(b2, 0x01),
        feed_button_pressed=_bit(b2, 0x02),
    )


# --- GS r ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GsRPaper:
    """Reply to GS r 1. Bit positions differ from DLE EOT 4."""

    raw: int
    near_end: bool  # 0x03
    out: bool  # 0x0C


@dataclass(frozen=True, slots=True)
class GsRDrawer:
    """Reply to GS r 2."""

    raw: int
    pin3_high: bool


def _check_gs_r(byte: int) -> None:
    _check_byte(byte)
    if byte & 0x90:
        raise ProtocolError(f"GS r reply 0x{byte:02X} does not match 0xx0xxxx")


def parse_gs_r_paper(byte: int) -> GsRPaper:
    _check_gs_r(byte)
    return GsRPaper(byte, _bit(byte, 0x03), _bit(byte, 0x0C))


def parse_gs_r_drawer(byte: int) -> GsRDrawer:
    _check_gs_r(byte)
    return GsRDrawer(byte, _bit(byte, 0x01))


# --- GS ( H fn 48: process-ID response ----------------------------------------------------


def _valid_pid(pid: bytes) -> bool:
    return len(pid) == 4 and all(0x20 <= d <= 0x7E for d in pid)


def process_id_request(pid: bytes) -> bytes:
    """``GS ( H`` fn 48: the printer answers ``37 22 pid 00`` once everything before it printed."""
    if not _valid_pid(pid):
        raise ValueError(f"process ID must be 4 bytes in 0x20..0x7E, not {pid!r}")
    return b"\x1d\x28\x48\x06\x00\x30\x30" + pid


def parse_process_id_response(data: bytes) -> bytes:
    """The 4-byte process ID out of ``37 22 d1 d2 d3 d4 00``; ProtocolError if malformed."""
    if len(data) != _PID_LEN or data[:2] != _PID_HEAD or data[6] or not _valid_pid(data[2:6]):
        raise ProtocolError(f"not a process ID response (37 22 d1..d4 00): {data.hex(' ')}")
    return data[2:6]


# --- the demultiplexer --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _OneByte:
    byte: int

    @property
    def raw(self) -> bytes:
        return bytes((self.byte,))


@dataclass(frozen=True, slots=True)
class DleEotReply(_OneByte):
    """A byte matching 0xx1xx10: the answer to the oldest DLE EOT still waiting."""


@dataclass(frozen=True, slots=True)
class GsRReply(_OneByte):
    """A 0xx0xxxx byte read while a GS r reply was due; parse it with parse_gs_r_*."""


@dataclass(frozen=True, slots=True)
class XonXoff(_OneByte):
    """XON 0x11 (resume sending) or XOFF 0x13 (stop sending)."""


@dataclass(frozen=True, slots=True)
class AsbStatus:
    status: PrinterStatus
    raw: bytes  # the 4 status bytes, without interleaved XON/XOFF


@dataclass(frozen=True, slots=True)
class ProcessIdResponse:
    pid: bytes

    @property
    def raw(self) -> bytes:
        return _PID_HEAD + self.pid + b"\x00"


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that fit no pattern: line noise, a wrong baud rate, a broken frame. Never "OK"."""

    raw: bytes


Item = DleEotReply | AsbStatus | ProcessIdResponse | GsRReply | XonXoff | Garbage

# A run of garbage is held back until a real item follows, so that the items do not depend
# on how the bytes were chunked; it is cut at this size so that a printer talking at the
# wrong baud rate can never grow our memory (Epson's own status buffer is 128 bytes).
GARBAGE_RUN_MAX: Final = 64


class StatusDemux:
    """Split the printer's byte stream into typed items (§1.5 rules; pure and stateful).

    Feed it whatever the transport read; it never raises on device bytes. Every byte ends
    up in exactly one item or in :attr:`pending` (an incomplete frame, or a garbage run
    waiting for its end). XON/XOFF are reported as they arrive, even inside an ASB message,
    because flow control cannot wait for the frame to finish. A frame that breaks its
    pattern turns its first byte into garbage and parsing resumes at the next byte. The
    items are the same however the stream is chunked.

    GS r replies cannot be told from garbage by their bits, so a byte ``0xx0xxxx`` is a
    :class:`GsRReply` only while :meth:`expect_gs_r` has announced one; the driver must call
    :meth:`cancel_gs_r` when it stops waiting (printers may not answer GS r while offline).
    """

    def __init__(self) -> None:
        # At most 6 bytes: the longest frame is the 7-byte process-ID response.
        self._frame = bytearray()
        self._garbage = bytearray()
        self._gs_r_due = 0

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet in an item, in arrival order (XON/XOFF excluded)."""
        return bytes(self._garbage + self._frame)

    def expect_gs_r(self, count: int = 1) -> None:
        """Announce that ``count`` more GS r replies are due (call before writing GS r)."""
        if count < 1:
            raise ValueError(f"count must be >= 1, not {count}")
        self._gs_r_due += count

    def cancel_gs_r(self) -> None:
        """Forget GS r replies still due: after a timeout a late byte must not pass as one."""
        self._gs_r_due = 0

    def flush(self) -> list[Item]:
        """Give up on what is pending (e.g. at a query deadline): it all becomes Garbage."""
        data = self.pending
        self._frame.clear()
        self._garbage.clear()
        return [Garbage(data)] if data else []

    def reset(self) -> list[Item]:
        """Flush and forget expected GS r replies (after a reconnect)."""
        self._gs_r_due = 0
        return self.flush()

    def feed(self, data: bytes) -> list[Item]:
        out: list[Item] = []
        # Byte by byte, so that chunking can never change the result.
        for b in data:
            if b in (XON, XOFF):
                out.append(XonXoff(b))  # never part of a frame: no status byte can be 11/13
                continue
            self._frame.append(b)
            self._parse(out)
        return out

    def _parse(self, out: list[Item]) -> None:
        while self._frame:
            verdict = self._match(self._frame)
            if verdict == "more":
                return
            if verdict is None:  # the first byte starts nothing valid
                self._garbage.append(self._frame.pop(0))
                if len(self._garbage) >= GARBAGE_RUN_MAX:
                    out.append(Garbage(bytes(self._garbage)))
                    self._garbage.clear()
                continue
            item, used = verdict
            if self._garbage:
                out.append(Garbage(bytes(self._garbage)))
                self._garbage.clear()
            out.append(item)
            del self._frame[:used]

    def _match(self, buf: bytearray) -> tuple[Item, int] | Literal["more"] | None:
        first = buf[0]
        if (first & 0x93) == 0x12:
            return DleEotReply(first), 1
        if (first & 0x93) == 0x10:
            for b in buf[1:4]:
                if b & 0x90:
                    return None
            if len(buf) < 4:
                return "more"
            raw = bytes(buf[:4])
            return AsbStatus(parse_asb(raw), raw), 4
        if first == _PID_HEAD[0]:
            return self._match_pid(buf)
        if self._gs_r_due and not first & 0x90:
            self._gs_r_due -= 1
            return GsRReply(first), 1
        return None

    @staticmethod
    def _match_pid(buf: bytearray) -> tuple[Item, int] | Literal["more"] | None:
        for i, b in enumerate(buf[1:_PID_LEN], start=1):
            ok = b == 0x22 if i == 1 else b == 0x00 if i == _PID_LEN - 1 else 0x20 <= b <= 0x7E
            if not ok:
                return None
        if len(buf) < _PID_LEN:
            return "more"
        return ProcessIdResponse(bytes(buf[2:6])), _PID_LEN
