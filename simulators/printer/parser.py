"""Incremental ESC/POS stream parser, sans-IO: ``feed(bytes) -> list[Command]``.

The printer simulator runs one parser per connection. Parsing never depends on printer state, so
the whole stream is parsed on receipt; the device decides when buffered commands execute.

Wire layout recognised (hex, transmission order; ``pL pH`` = little-endian 16-bit length of
what follows them)::

    text            20..FF runs                  (decoded later with the ESC t code page)
    LF CR HT FF CAN 0A 0D 09 0C 18
    ESC @ ! E G - a t R d J 2 3 M p i m …       1B xx [fixed parameters]
    ESC *           1B 2A m nL nH d…             columns × (1 | 3 for m = 32/33) bytes
    ESC D           1B 44 n… 00                  tab stops, NUL-terminated
    ESC ( x / FS ( x / GS ( x   … x pL pH d…     GS ( H fn 48, GS ( k (QR, PDF417), GS ( L
    GS 8 L          1D 38 4C p1 p2 p3 p4 m fn d… 32-bit length
    GS v 0          1D 76 30 m xL xH yL yH d…    (xL + 256 xH) × (yL + 256 yH) bytes
    GS k            1D 6B m d… 00 (m = 0..6)  |  1D 6B m n d1…dn (m = 65..79)
    GS V            1D 56 m [n]                  n present for m = 65 66 97 98 103 104

Real-time commands (executed on receipt, before buffered data)::

    DLE EOT n       10 04 n            n = 1..4, one status byte back
    DLE ENQ n       10 05 n            n = 0..2, recover from an error
    DLE DC4 fn 1    10 14 01 m t       pulse: m = 0 pin 2 / 1 pin 5, t = 1..8 (× 100 ms)
    DLE DC4 fn 2    10 14 02 01 08     power off
    DLE DC4 fn 7    10 14 07 m         transmit status of type m
    DLE DC4 fn 8    10 14 08 01 03 14 01 06 02 08   clear buffers

Real printers match real-time sequences anywhere in the byte stream, even inside another
command's data (a raster image containing ``10 04 01`` gets answered). With
``realtime_in_data=True`` (the default) an independent scanner reproduces that; with False they
are recognised only where a command may start. Either way the data bytes stay part of the
enclosing command.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

_LOGGER = logging.getLogger(__name__)

DLE, EOT, ENQ, DC4 = 0x10, 0x04, 0x05, 0x14
ESC, FS, GS = 0x1B, 0x1C, 0x1D

#: Data kept per command. A GS v 0 header may declare 65535 × 65535 bytes (4 GiB) and GS 8 L
#: up to 2**32: the parser keeps this much, skips the rest in step with the stream and reports
#: the count in Command.truncated. 1 MiB holds any real receipt image (576 dots × 14 000 rows).
DEFAULT_MAX_DATA = 1 << 20
#: NUL-terminated data (GS k function A, ESC D) longer than this is garbage, not a command.
MAX_NUL_TERMINATED = 255


class Kind(StrEnum):
    TEXT = "text"
    LF = "lf"
    CR = "cr"
    HT = "ht"
    FF = "ff"
    CAN = "can"
    INIT = "init"                      # ESC @
    PRINT_MODE = "print_mode"          # ESC ! n
    BOLD = "bold"                      # ESC E n
    DOUBLE_STRIKE = "double_strike"    # ESC G n
    UNDERLINE = "underline"            # ESC - n
    CHAR_SIZE = "char_size"            # GS ! n
    REVERSE = "reverse"                # GS B n
    FONT = "font"                      # ESC M n
    ALIGN = "align"                    # ESC a n
    CODE_PAGE = "code_page"            # ESC t n
    INTL_CHARSET = "intl_charset"      # ESC R n
    LINE_SPACING = "line_spacing"      # ESC 2 / ESC 3 n (also ESC A n, ESC + n)
    FEED_LINES = "feed_lines"          # ESC d n
    FEED_DOTS = "feed_dots"            # ESC J n
    TAB_STOPS = "tab_stops"            # ESC D n… NUL
    CUT = "cut"                        # GS V …, ESC i (full), ESC m (partial)
    KICK = "kick"                      # ESC p m t1 t2
    BARCODE = "barcode"                # GS k
    BARCODE_HEIGHT = "barcode_height"  # GS h n
    BARCODE_WIDTH = "barcode_width"    # GS w n
    HRI_POSITION = "hri_position"      # GS H n
    HRI_FONT = "hri_font"              # GS f n
    SYMBOL = "symbol"                  # GS ( k: params (cn, fn)
    RASTER = "raster"                  # GS v 0: params (m, width_bytes, height)
    COLUMN_IMAGE = "column_image"      # ESC *: params (m, columns)
    GRAPHICS = "graphics"              # GS ( L / GS 8 L: params (m, fn)
    NV_IMAGE = "nv_image"              # FS p n m
    TRANSMIT_STATUS = "transmit_status"  # GS r n (buffered, one byte back)
    ASB = "asb"                        # GS a n
    PROCESS_ID = "process_id"          # GS ( H fn 48: data d1..d4
    RT_STATUS = "rt_status"            # DLE EOT n
    RT_RECOVER = "rt_recover"          # DLE ENQ n
    RT_KICK = "rt_kick"                # DLE DC4 1 m t: params (m, t)
    RT_POWER_OFF = "rt_power_off"      # DLE DC4 2 1 8
    RT_TRANSMIT = "rt_transmit"        # DLE DC4 7 m
    RT_CLEAR = "rt_clear"              # DLE DC4 8 …
    OTHER = "other"                    # known framing, no effect in the simulator
    UNKNOWN = "unknown"                # not understood: raw holds the bytes skipped


REALTIME_KINDS = frozenset({Kind.RT_STATUS, Kind.RT_RECOVER, Kind.RT_KICK, Kind.RT_POWER_OFF,
                            Kind.RT_TRANSMIT, Kind.RT_CLEAR})


@dataclass(frozen=True, slots=True)
class Command:
    kind: Kind
    #: The command's bytes without its variable data (all of it for fixed-length commands).
    raw: bytes
    params: tuple[int, ...] = ()
    #: Variable data (text bytes, image bits, barcode/QR payload), at most max_data bytes.
    data: bytes = b""
    #: Data bytes declared by the header but dropped by the cap.
    truncated: int = 0
    #: Stream offset just past the command's last byte (orders real-time hits among the rest).
    end: int = 0

    @property
    def realtime(self) -> bool:
        return self.kind in REALTIME_KINDS


# ESC / GS / FS commands with a fixed number of parameter bytes: second byte -> (kind, count).
_ESC_FIXED: dict[int, tuple[Kind, int]] = {
    0x40: (Kind.INIT, 0), 0x21: (Kind.PRINT_MODE, 1), 0x45: (Kind.BOLD, 1),
    0x47: (Kind.DOUBLE_STRIKE, 1), 0x2D: (Kind.UNDERLINE, 1), 0x61: (Kind.ALIGN, 1),
    0x74: (Kind.CODE_PAGE, 1), 0x52: (Kind.INTL_CHARSET, 1), 0x64: (Kind.FEED_LINES, 1),
    0x4A: (Kind.FEED_DOTS, 1), 0x32: (Kind.LINE_SPACING, 0), 0x33: (Kind.LINE_SPACING, 1),
    0x41: (Kind.LINE_SPACING, 1), 0x2B: (Kind.LINE_SPACING, 1), 0x4D: (Kind.FONT, 1),
    0x70: (Kind.KICK, 3), 0x69: (Kind.CUT, 0), 0x6D: (Kind.CUT, 0),
    0x65: (Kind.OTHER, 1), 0x4B: (Kind.OTHER, 1), 0x56: (Kind.OTHER, 1), 0x7B: (Kind.OTHER, 1),
    0x20: (Kind.OTHER, 1), 0x24: (Kind.OTHER, 2), 0x5C: (Kind.OTHER, 2), 0x3D: (Kind.OTHER, 1),
    0x25: (Kind.OTHER, 1), 0x3F: (Kind.OTHER, 1), 0x55: (Kind.OTHER, 1), 0x72: (Kind.OTHER, 1),
    0x53: (Kind.OTHER, 0), 0x4C: (Kind.OTHER, 0), 0x54: (Kind.OTHER, 1), 0x57: (Kind.OTHER, 8),
    0x0C: (Kind.OTHER, 0), 0x63: (Kind.OTHER, 2), 0x75: (Kind.OTHER, 1), 0x76: (Kind.OTHER, 0),
}
_GS_FIXED: dict[int, tuple[Kind, int]] = {
    0x21: (Kind.CHAR_SIZE, 1), 0x42: (Kind.REVERSE, 1), 0x48: (Kind.HRI_POSITION, 1),
    0x66: (Kind.HRI_FONT, 1), 0x68: (Kind.BARCODE_HEIGHT, 1), 0x77: (Kind.BARCODE_WIDTH, 1),
    0x61: (Kind.ASB, 1), 0x72: (Kind.TRANSMIT_STATUS, 1),
    0x62: (Kind.OTHER, 1), 0x4C: (Kind.OTHER, 2), 0x57: (Kind.OTHER, 2), 0x49: (Kind.OTHER, 1),
    0x2F: (Kind.OTHER, 1), 0x3A: (Kind.OTHER, 0), 0x5E: (Kind.OTHER, 3), 0x50: (Kind.OTHER, 2),
    0x54: (Kind.OTHER, 1), 0x5C: (Kind.OTHER, 2), 0x24: (Kind.OTHER, 2),
}
_FS_FIXED: dict[int, tuple[Kind, int]] = {
    0x70: (Kind.NV_IMAGE, 2), 0x2E: (Kind.OTHER, 0), 0x26: (Kind.OTHER, 0),
    0x21: (Kind.OTHER, 1), 0x2D: (Kind.OTHER, 1), 0x43: (Kind.OTHER, 1), 0x53: (Kind.OTHER, 2),
    0x57: (Kind.OTHER, 1),
}
_SINGLE: dict[int, Kind] = {0x0A: Kind.LF, 0x0D: Kind.CR, 0x09: Kind.HT, 0x0C: Kind.FF,
                            0x18: Kind.CAN}
_CUT_WITH_N = frozenset({65, 66, 97, 98, 103, 104})
# Fixed tails of DLE DC4 fn 2 and fn 8 (Epson: any other bytes and the command is not executed).
_DC4_TAIL = {2: b"\x01\x08", 8: b"\x01\x03\x14\x01\x06\x02\x08"}
_NEED_MORE = -1


def match_realtime(buf: bytes | bytearray, i: int) -> int:
    """Length of the real-time command at ``buf[i]`` (a DLE); 0 if none; -1 if bytes are missing."""
    have = len(buf) - i
    if have < 3:
        if have == 2 and buf[i + 1] not in (EOT, ENQ, DC4):
            return 0
        return _NEED_MORE
    second, third = buf[i + 1], buf[i + 2]
    if second == EOT:
        return 3 if 1 <= third <= 4 else 0
    if second == ENQ:
        return 3 if third <= 2 else 0
    if second != DC4:
        return 0
    if third == 1:
        if have >= 4 and buf[i + 3] > 1:
            return 0
        if have < 5:
            return _NEED_MORE
        return 5 if 1 <= buf[i + 4] <= 8 else 0
    if third == 7:
        if have < 4:
            return _NEED_MORE
        return 4 if buf[i + 3] in (1, 2, 4, 5) else 0
    tail = _DC4_TAIL.get(third)
    if tail is None:
        return 0
    got = bytes(buf[i + 3: i + 3 + len(tail)])
    if not tail.startswith(got):
        return 0
    return 3 + len(tail) if len(got) == len(tail) else _NEED_MORE


def realtime_command(raw: bytes, end: int) -> Command:
    """The Command for a complete real-time sequence (as measured by match_realtime)."""
    if raw[1] == EOT:
        return Command(Kind.RT_STATUS, raw, (raw[2],), end=end)
    if raw[1] == ENQ:
        return Command(Kind.RT_RECOVER, raw, (raw[2],), end=end)
    kind = {1: Kind.RT_KICK, 2: Kind.RT_POWER_OFF, 7: Kind.RT_TRANSMIT}.get(raw[2], Kind.RT_CLEAR)
    return Command(kind, raw, tuple(raw[3:]), end=end)


@dataclass(slots=True)
class _Collect:
    """A data-carrying command whose header is parsed and whose data is still arriving."""

    kind: Kind
    header: bytes
    params: tuple[int, ...]
    remaining: int
    data: bytearray
    dropped: int = 0


class EscPosParser:
    """Feed bytes as they arrive; get back the commands completed by them, in stream order."""

    def __init__(self, *, realtime_in_data: bool = True, max_data: int = DEFAULT_MAX_DATA) -> None:
        self.realtime_in_data = realtime_in_data
        self.max_data = max_data
        self._buf = bytearray()   # unparsed bytes; _base = stream offset of _buf[0]
        self._base = 0
        self._collect: _Collect | None = None
        self._rt_tail = b""       # bytes from an undecided DLE on, for the anywhere-scanner
        self._rt_base = 0

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete command."""
        held = len(self._collect.data) if self._collect else 0
        return len(self._buf) + held

    def feed(self, data: bytes) -> list[Command]:
        out: list[Command] = []
        if self.realtime_in_data:
            self._scan(data, out)
        else:
            self._rt_tail, self._rt_base = b"", self._base + len(self._buf) + len(data)
        self._buf += data
        self._parse(out)
        out.sort(key=lambda c: c.end)  # stable: a real-time hit inside data precedes its command
        return out

    def _scan(self, data: bytes, out: list[Command]) -> None:
        """Find real-time sequences anywhere in the stream (also inside other commands' data)."""
        buf = self._rt_tail + data
        base = self._rt_base
        i, keep_from = 0, len(buf)
        while (j := buf.find(DLE, i)) >= 0:
            length = match_realtime(buf, j)
            if length == _NEED_MORE:
                keep_from = j
                break
            if length:
                out.append(realtime_command(bytes(buf[j:j + length]), base + j + length))
            i = j + 1
        self._rt_tail, self._rt_base = buf[keep_from:], base + keep_from

    def _parse(self, out: list[Command]) -> None:
        buf, i = self._buf, 0
        while i < len(buf):
            if self._collect is not None:
                i = self._take_data(buf, i, out)
                continue
            step = self._parse_one(buf, i, out)
            if step == _NEED_MORE:
                break
            i = step
        del buf[:i]
        self._base += i

    def _take_data(self, buf: bytearray, i: int, out: list[Command]) -> int:
        c = self._collect
        assert c is not None
        n = min(c.remaining, len(buf) - i)
        room = max(0, self.max_data - len(c.data))
        c.data += buf[i:i + min(n, room)]
        c.dropped += max(0, n - room)
        c.remaining -= n
        i += n
        if c.remaining == 0:
            self._collect = None
            if c.dropped:
                _LOGGER.warning("ESC/POS %s data capped at %d bytes, %d dropped", c.kind,
                                self.max_data, c.dropped)
            out.append(_finish(c, self._base + i))
        return i

    def _start_data(self, kind: Kind, header: bytes, params: tuple[int, ...], length: int,
                    i: int, out: list[Command]) -> int:
        self._collect = _Collect(kind, header, params, length, bytearray())
        if length == 0:
            return self._take_data(self._buf, i, out)
        return i

    def _parse_one(self, buf: bytearray, i: int, out: list[Command]) -> int:
        """Parse the command at buf[i]; return the index after it, or -1 if it is incomplete."""
        b = buf[i]
        if b >= 0x20:
            j = i + 1
            while j < len(buf) and buf[j] >= 0x20:
                j += 1
            out.append(Command(Kind.TEXT, b"", data=bytes(buf[i:j]), end=self._base + j))
            return j
        if b in _SINGLE:
            out.append(Command(_SINGLE[b], bytes([b]), end=self._base + i + 1))
            return i + 1
        if b == DLE:
            length = match_realtime(buf, i)
            if length == _NEED_MORE:
                return _NEED_MORE
            if length == 0:
                return self._emit(Kind.UNKNOWN, buf, i, 1, out)
            if not self.realtime_in_data:  # else the scanner already reported it
                out.append(realtime_command(bytes(buf[i:i + length]), self._base + i + length))
            return i + length
        if b not in (ESC, GS, FS):
            return self._emit(Kind.UNKNOWN, buf, i, 1, out)
        if len(buf) - i < 2:
            return _NEED_MORE
        return self._parse_prefixed(buf, i, out)

    def _emit(self, kind: Kind, buf: bytearray, i: int, size: int, out: list[Command],
              params: tuple[int, ...] = ()) -> int:
        if len(buf) - i < size:
            return _NEED_MORE
        raw = bytes(buf[i:i + size])
        out.append(Command(kind, raw, params, end=self._base + i + size))
        if kind is Kind.UNKNOWN:
            _LOGGER.debug("unknown ESC/POS bytes %s", raw.hex(" "))
        return i + size

    def _parse_prefixed(self, buf: bytearray, i: int, out: list[Command]) -> int:
        b, c = buf[i], buf[i + 1]
        table = {ESC: _ESC_FIXED, GS: _GS_FIXED, FS: _FS_FIXED}[b]
        if c in table:
            kind, count = table[c]
            if len(buf) - i < 2 + count:
                return _NEED_MORE
            params = tuple(buf[i + 2:i + 2 + count])
            return self._emit(kind, buf, i, 2 + count, out, params)
        if c == 0x28:  # ESC ( x / GS ( x / FS ( x  pL pH data
            if len(buf) - i < 5:
                return _NEED_MORE
            x = buf[i + 2]
            kind = {(GS, 0x48): Kind.PROCESS_ID, (GS, 0x6B): Kind.SYMBOL,
                    (GS, 0x4C): Kind.GRAPHICS}.get((b, x), Kind.OTHER)
            length = buf[i + 3] | buf[i + 4] << 8
            return self._start_data(kind, bytes(buf[i:i + 5]), (x,), length, i + 5, out)
        if b == GS and c == 0x56:  # GS V m [n]
            if len(buf) - i < 3:
                return _NEED_MORE
            size = 4 if buf[i + 2] in _CUT_WITH_N else 3
            params = tuple(buf[i + 2:i + size])
            return self._emit(Kind.CUT, buf, i, size, out, params)
        if b == GS and c == 0x76:  # GS v 0 m xL xH yL yH
            if len(buf) - i < 8:
                return _NEED_MORE
            if buf[i + 2] != 0x30:
                return self._emit(Kind.UNKNOWN, buf, i, 2, out)
            wb, h = buf[i + 4] | buf[i + 5] << 8, buf[i + 6] | buf[i + 7] << 8
            return self._start_data(Kind.RASTER, bytes(buf[i:i + 8]), (buf[i + 3], wb, h),
                                    wb * h, i + 8, out)
        if b == GS and c == 0x38:  # GS 8 L p1 p2 p3 p4 data
            if len(buf) - i < 7:
                return _NEED_MORE
            if buf[i + 2] != 0x4C:
                return self._emit(Kind.UNKNOWN, buf, i, 2, out)
            length = int.from_bytes(buf[i + 3:i + 7], "little")
            return self._start_data(Kind.GRAPHICS, bytes(buf[i:i + 7]), (0x4C,), length, i + 7,
                                    out)
        if b == GS and c == 0x2A:  # GS * x y d… (define downloaded bit image)
            if len(buf) - i < 4:
                return _NEED_MORE
            size = buf[i + 2] * buf[i + 3] * 8
            return self._start_data(Kind.OTHER, bytes(buf[i:i + 4]), (), size, i + 4, out)
        if b == GS and c == 0x6B:
            return self._barcode(buf, i, out)
        if b == ESC and c == 0x2A:  # ESC * m nL nH d…
            if len(buf) - i < 5:
                return _NEED_MORE
            m, cols = buf[i + 2], buf[i + 3] | buf[i + 4] << 8
            if m not in (0, 1, 32, 33):
                return self._emit(Kind.UNKNOWN, buf, i, 3, out)
            size = cols * (3 if m >= 32 else 1)
            return self._start_data(Kind.COLUMN_IMAGE, bytes(buf[i:i + 5]), (m, cols), size,
                                    i + 5, out)
        if b == ESC and c == 0x44:  # ESC D n1 … nk NUL
            return self._nul_terminated(Kind.TAB_STOPS, buf, i, 2, (), out)
        return self._emit(Kind.UNKNOWN, buf, i, 2, out)

    def _barcode(self, buf: bytearray, i: int, out: list[Command]) -> int:
        if len(buf) - i < 3:
            return _NEED_MORE
        m = buf[i + 2]
        if m <= 6:  # function A: NUL-terminated
            return self._nul_terminated(Kind.BARCODE, buf, i, 3, (m,), out)
        if 65 <= m <= 79:  # function B: count byte
            if len(buf) - i < 4:
                return _NEED_MORE
            return self._start_data(Kind.BARCODE, bytes(buf[i:i + 4]), (m,), buf[i + 3], i + 4,
                                    out)
        return self._emit(Kind.UNKNOWN, buf, i, 3, out)

    def _nul_terminated(self, kind: Kind, buf: bytearray, i: int, head: int,
                        params: tuple[int, ...], out: list[Command]) -> int:
        start = i + head
        end = buf.find(0, start, start + MAX_NUL_TERMINATED + 1)
        if end < 0:
            if len(buf) - start <= MAX_NUL_TERMINATED:
                return _NEED_MORE
            # No terminator where one must be: skip the header only, re-read the rest as text.
            return self._emit(Kind.UNKNOWN, buf, i, head, out)
        out.append(Command(kind, bytes(buf[i:start]), params, bytes(buf[start:end]),
                           end=self._base + end + 1))
        return end + 1


def _finish(c: _Collect, end: int) -> Command:
    data = bytes(c.data)
    if c.kind in (Kind.SYMBOL, Kind.GRAPHICS, Kind.PROCESS_ID):
        # GS ( k: cn fn …; GS ( L / GS 8 L: m fn …; GS ( H: fn m d1..d4 — split off the selector.
        params, data = tuple(data[:2]), data[2:]
        if c.kind is Kind.PROCESS_ID and params[:1] != (48,):
            return Command(Kind.OTHER, c.header, (0x48, *params), data, c.dropped, end)
        return Command(c.kind, c.header, params, data, c.dropped, end)
    return Command(c.kind, c.header, c.params, data, c.dropped, end)
