"""What came out of the simulated printer: receipts as text lines with styles, images, and a PNG.

The Renderer applies printed (executed) commands in order, like the print head would:

* text is decoded with the ESC t code page (and ESC R national characters), laid out in columns
  of ``width_dots`` (font A 12 dots, font B 9 dots, times the GS ! width), wrapped at the edge;
  HT moves to the next tab stop (default every 8 columns, ESC D sets them);
* LF / ESC d n print the line buffer and feed; ESC J and FF only print it; ESC @ discards it;
* barcodes become ``[EAN13 4006381333931]``, QR codes ``[QR data]``, PDF417 ``[PDF417 data]``,
  images ``[image WxH]`` (dots on paper; back-to-back fragments of one picture are joined);
* a cut (GS V any form, ESC i, ESC m) ends the receipt. A printer would ignore a cut with text
  still in its line buffer; here the text is printed first (logged), so nothing goes missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from kassad.simulators.printer.parser import Command, Kind

_LOGGER = logging.getLogger(__name__)

Align = Literal["left", "center", "right"]
CutType = Literal["full", "partial"]
LineKind = Literal["text", "barcode", "qr", "pdf417", "image"]

#: ESC t n → Python codec (escpos-printer-db numbering, device-protocols.md §1.8).
CODE_PAGES: dict[int, str] = {
    0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 13: "cp857", 14: "cp737",
    15: "iso8859_7", 16: "cp1252", 17: "cp866", 18: "cp852", 19: "cp858", 21: "cp874",
    32: "cp720", 33: "cp775", 34: "cp855", 35: "cp861", 36: "cp862", 37: "cp864", 38: "cp869",
    39: "iso8859_2", 40: "iso8859_15", 44: "cp1125", 45: "cp1250", 46: "cp1251", 47: "cp1253",
    48: "cp1254", 49: "cp1255", 50: "cp1256", 51: "cp1257", 52: "cp1258", 53: "kz1048",
}
# ESC R n: replacements of 23 24 40 5B 5C 5D 5E 60 7B 7C 7D 7E (Epson international sets).
_INTL_SLOTS = "#$@[\\]^`{|}~"
_INTL: dict[int, str] = {
    1: "#$à°ç§^`éùè¨", 2: "#$§ÄÖÜ^`äöüß", 3: "£$@[\\]^`{|}~", 4: "#$@ÆØÅ^`æøå~",
    5: "#¤ÉÄÖÅÜéäöåü", 6: "#$@°\\é^ùàòèì", 7: "₧$@¡Ñ¿^`¨ñ}~", 8: "#$@[¥]^`{|}~",
    9: "#¤ÉÆØÅÜéæøåü", 10: "#$ÉÆØÅÜéæøåü",
}
_BARCODES = {0: "UPC-A", 1: "UPC-E", 2: "EAN13", 3: "EAN8", 4: "CODE39", 5: "ITF", 6: "CODABAR",
             72: "CODE93", 73: "CODE128", 74: "GS1-128", 75: "GS1-DATABAR", 76: "GS1-DATABAR",
             77: "GS1-DATABAR", 78: "GS1-DATABAR", 79: "CODE128"}
_FONT_DOTS = {"A": 12, "B": 9}
_ALIGN: dict[int, Align] = {1: "center", 49: "center", 2: "right", 50: "right"}


@dataclass(frozen=True, slots=True)
class Style:
    bold: bool = False
    underline: int = 0          # 0 none, 1 one dot, 2 two dots
    width: int = 1              # GS ! / ESC ! magnification
    height: int = 1
    font: str = "A"
    reverse: bool = False

    @property
    def double_width(self) -> bool:
        return self.width >= 2

    @property
    def double_height(self) -> bool:
        return self.height >= 2


@dataclass(frozen=True, slots=True)
class Span:
    """Characters ``start:end`` of line ``line`` were printed with ``style``."""

    line: int
    start: int
    end: int
    style: Style
    align: Align


@dataclass(frozen=True, slots=True)
class Bitmap:
    """1 bit per dot, rows of ceil(width / 8) bytes, most significant bit leftmost, 1 = black."""

    width: int
    height: int
    rows: bytes

    def stacked(self, other: Bitmap) -> Bitmap:
        return Bitmap(self.width, self.height + other.height, self.rows + other.rows)


@dataclass(slots=True)
class Line:
    text: str
    align: Align = "left"
    kind: LineKind = "text"
    runs: list[tuple[int, int, Style]] = field(default_factory=list)
    bitmap: Bitmap | None = None


@dataclass(slots=True)
class Receipt:
    layout: list[Line] = field(default_factory=list)
    #: How it was cut off; None while it is still being printed.
    cut: CutType | None = None
    width_dots: int = 576

    @property
    def lines(self) -> list[str]:
        return [line.text for line in self.layout]

    @property
    def text(self) -> str:
        """All lines, trailing blank feed lines dropped."""
        return "\n".join(self.lines).rstrip("\n ")

    @property
    def spans(self) -> list[Span]:
        return [Span(n, start, end, style, line.align)
                for n, line in enumerate(self.layout) for start, end, style in line.runs]

    def find(self, needle: str) -> int:
        """Index of the first line containing ``needle``; ValueError if none."""
        for n, line in enumerate(self.layout):
            if needle in line.text:
                return n
        raise ValueError(f"{needle!r} not on the receipt:\n{self.text}")

    def style_of(self, needle: str) -> Span:
        """The span covering the first character of ``needle`` (its style and line alignment)."""
        n = self.find(needle)
        at = self.layout[n].text.index(needle)
        return next(s for s in self.spans if s.line == n and s.start <= at < s.end)

    def to_png(self, path: str | Path) -> None:
        from kassad.simulators.printer.picture import draw_receipt  # Pillow only when asked

        draw_receipt(self, Path(path))


class Renderer:
    """Turns printed commands into receipts; ``apply`` returns a receipt when a cut ends it."""

    def __init__(self, *, width_dots: int = 576) -> None:
        self.width_dots = width_dots
        self.current = Receipt(width_dots=width_dots)
        self._init()

    def _init(self) -> None:
        self.style = Style()
        self.align: Align = "left"
        self.code_page = 0
        self.intl = 0
        self.tab_stops: list[int] = []
        self.hri = 0
        self._qr: dict[int, bytes] = {}   # cn → stored symbol data
        self._graphics: Bitmap | None = None
        self._text = ""
        self._runs: list[tuple[int, int, Style]] = []
        self._line_align: Align | None = None
        self._dots = 0
        self._join: Kind | None = None    # the last line is an image this kind may extend
        self._swallow_lf = False          # ESC * strips are printed by the LF that follows them

    def discard_line(self) -> None:
        """Forget unprinted line data (ESC @, DLE ENQ 2, DLE DC4 8 clear the print buffer)."""
        self._text, self._runs, self._dots, self._line_align = "", [], 0, None

    def apply(self, cmd: Command) -> Receipt | None:
        k, p = cmd.kind, cmd.params
        if k is not Kind.LF:
            self._swallow_lf = False
        if k not in (Kind.LF, Kind.LINE_SPACING, Kind.RASTER, Kind.COLUMN_IMAGE, Kind.GRAPHICS):
            self._join = None
        if k is Kind.TEXT:
            self._add_text(cmd.data)
        elif k is Kind.LF:
            if self._swallow_lf and not self._text:
                self._swallow_lf = False
            else:
                self._flush(force=True)
        elif k is Kind.FEED_LINES:
            printed = self._flush(force=False)
            for _ in range(p[0] - printed):
                self._flush(force=True)
        elif k in (Kind.FEED_DOTS, Kind.FF):
            self._flush(force=False)
        elif k is Kind.HT:
            self._tab()
        elif k is Kind.INIT:
            self.discard_line()
            self._init()
        elif k is Kind.CUT:
            return self._cut(cmd)
        elif k in (Kind.BARCODE, Kind.SYMBOL, Kind.RASTER, Kind.COLUMN_IMAGE, Kind.GRAPHICS,
                   Kind.NV_IMAGE):
            self._graphic(cmd)
        else:
            self._setting(k, p, cmd.data)
        return None

    def _setting(self, k: Kind, p: tuple[int, ...], data: bytes) -> None:
        s = self.style
        if k is Kind.PRINT_MODE:
            n = p[0]
            self.style = replace(s, font="B" if n & 1 else "A", bold=bool(n & 8),
                                 height=2 if n & 16 else 1, width=2 if n & 32 else 1,
                                 underline=1 if n & 128 else 0)
        elif k is Kind.BOLD:
            self.style = replace(s, bold=bool(p[0] & 1))
        elif k is Kind.UNDERLINE:
            self.style = replace(s, underline={1: 1, 49: 1, 2: 2, 50: 2}.get(p[0], 0))
        elif k is Kind.CHAR_SIZE:
            self.style = replace(s, width=(p[0] >> 4 & 7) + 1, height=(p[0] & 7) + 1)
        elif k is Kind.REVERSE:
            self.style = replace(s, reverse=bool(p[0] & 1))
        elif k is Kind.FONT:
            self.style = replace(s, font="B" if p[0] in (1, 49, 2, 50) else "A")
        elif k is Kind.ALIGN:
            self.align = _ALIGN.get(p[0], "left")
        elif k is Kind.CODE_PAGE:
            self.code_page = p[0]
        elif k is Kind.INTL_CHARSET:
            self.intl = p[0]
        elif k is Kind.TAB_STOPS:
            self.tab_stops = sorted(set(data))
        elif k is Kind.HRI_POSITION:
            self.hri = p[0] & 3

    def decode(self, data: bytes) -> str:
        text = data.decode(CODE_PAGES.get(self.code_page, "cp437"), errors="replace")
        table = _INTL.get(self.intl)
        if table:
            text = text.translate(str.maketrans(_INTL_SLOTS, table))
        return text

    def _add_text(self, data: bytes) -> None:
        for ch in self.decode(data):
            self._put(ch)

    def _put(self, ch: str) -> None:
        dots = _FONT_DOTS.get(self.style.font, 12) * self.style.width
        if self._dots + dots > self.width_dots and self._text:
            self._flush(force=True)  # the printer wraps at the right edge
        if self._line_align is None:
            self._line_align = self.align  # ESC a counts only at the beginning of a line
        start = len(self._text)
        self._text += ch
        self._dots += dots
        if self._runs and self._runs[-1][2] == self.style and self._runs[-1][1] == start:
            self._runs[-1] = (self._runs[-1][0], start + 1, self.style)
        else:
            self._runs.append((start, start + 1, self.style))

    def _tab(self) -> None:
        column = len(self._text)
        stops = self.tab_stops or range(8, 256, 8)
        target = next((stop for stop in stops if stop > column), None)
        if target is None:
            return
        for _ in range(target - column):
            self._put(" ")

    def _flush(self, *, force: bool) -> int:
        """Print the line buffer; an empty one only if ``force`` (a blank line). 1 if printed."""
        if not self._text and not force:
            return 0
        align = self._line_align or self.align
        self.current.layout.append(Line(self._text, align, "text", self._runs))
        self.discard_line()
        return 1

    def _add_line(self, line: Line) -> None:
        self._flush(force=False)
        self.current.layout.append(line)

    def _graphic(self, cmd: Command) -> None:
        k, p, data = cmd.kind, cmd.params, cmd.data
        if k is Kind.BARCODE:
            text = data.decode("latin-1")
            if p[0] in (73, 79) and text[:2] in ("{A", "{B", "{C"):
                code_c = text[:2] == "{C"
                text = "".join(f"{ord(c):02d}" for c in text[2:]) if code_c else text[2:]
            name = _BARCODES.get(p[0], _BARCODES.get(p[0] - 65, f"BARCODE{p[0]}"))
            self._add_line(Line(f"[{name} {text}]", self.align, "barcode"))
        elif k is Kind.SYMBOL:
            cn, fn = (*p, 0, 0)[:2]
            if fn == 80 and data:
                self._qr[cn] = data[1:]  # first byte is m = 0x30
            elif fn == 81 and cn in (48, 49):
                kind: LineKind = "qr" if cn == 49 else "pdf417"
                payload = _text_of(self._qr.get(cn, b""))
                self._add_line(Line(f"[{kind.upper()} {payload}]", self.align, kind))
        elif k is Kind.RASTER:
            m, width_bytes, height = p
            rows = data.ljust(width_bytes * height, b"\0")
            self._image(k, _scaled(Bitmap(width_bytes * 8, height, rows), 1 + (m & 1),
                                   1 + (m >> 1 & 1)))
        elif k is Kind.COLUMN_IMAGE:
            m, columns = p
            self._image(k, _columns_to_rows(data, columns, 24 if m >= 32 else 8))
            self._swallow_lf = True
        elif k is Kind.GRAPHICS:
            self._graphics_command(p, data)
        elif k is Kind.NV_IMAGE:
            self._add_line(Line(f"[nv image {p[0]}]", self.align, "image"))

    def _graphics_command(self, p: tuple[int, ...], data: bytes) -> None:
        fn = p[1] if len(p) > 1 else -1
        if fn == 112 and len(data) >= 8:  # store: a bx by c xL xH yL yH d…
            width, height = data[4] | data[5] << 8, data[6] | data[7] << 8
            rows = data[8:].ljust((width + 7) // 8 * height, b"\0")
            self._graphics = _scaled(Bitmap(width, height, rows), data[1], data[2])
        elif fn in (2, 50) and self._graphics is not None:  # print the stored graphics
            self._image(Kind.GRAPHICS, self._graphics)

    def _image(self, kind: Kind, bitmap: Bitmap) -> None:
        """Print a picture; python-escpos sends tall ones as fragments: join those again."""
        self._flush(force=False)
        last = self.current.layout[-1] if self.current.layout else None
        if (self._join is kind and last is not None and last.bitmap is not None
                and last.bitmap.width == bitmap.width):
            bitmap = last.bitmap.stacked(bitmap)
            self.current.layout.pop()
        self.current.layout.append(Line(f"[image {bitmap.width}x{bitmap.height}]", self.align,
                                        "image", bitmap=bitmap))
        self._join = kind

    def _cut(self, cmd: Command) -> Receipt:
        if self._text:
            _LOGGER.info("cut with unprinted text in the line buffer (a printer ignores it)")
            self._flush(force=True)
        m = cmd.params[0] if cmd.params else (0 if cmd.raw[1:2] == b"i" else 1)
        done = self.current
        done.cut = "partial" if m in (1, 49, 66, 98, 104) else "full"
        self.current = Receipt(width_dots=self.width_dots)
        return done


def _text_of(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _scaled(bitmap: Bitmap, sx: int, sy: int) -> Bitmap:
    """Magnify by 1 or 2 in each direction (GS v 0 m, GS ( L bx by)."""
    if (sx, sy) == (1, 1) or sx not in (1, 2) or sy not in (1, 2):
        return bitmap
    stride = (bitmap.width + 7) // 8
    out = bytearray()
    for y in range(bitmap.height):
        row = bitmap.rows[y * stride:(y + 1) * stride]
        if sx == 2:
            bits = int.from_bytes(row, "big")
            wide = 0
            for i in range(stride * 8):
                if bits >> i & 1:
                    wide |= 3 << (2 * i)
            row = wide.to_bytes(stride * 2, "big")
        out += row * sy
    return Bitmap(bitmap.width * sx, bitmap.height * sy, bytes(out))


def _columns_to_rows(data: bytes, columns: int, height: int) -> Bitmap:
    """ESC * data (per column, 1 or 3 bytes top to bottom) as a row-major Bitmap."""
    per_column = height // 8
    data = data.ljust(columns * per_column, b"\0")
    stride = (columns + 7) // 8
    rows = bytearray(stride * height)
    for x in range(columns):
        for b in range(per_column):
            byte = data[x * per_column + b]
            for bit in range(8):
                if byte >> (7 - bit) & 1:
                    y = b * 8 + bit
                    rows[y * stride + x // 8] |= 0x80 >> (x % 8)
    return Bitmap(columns, height, bytes(rows))
