"""Receipt → PNG with Pillow: a rough picture of the paper, for people looking at the demo.

One text line is 24 dots of font plus 6 of spacing (times the GS ! height); characters sit in
fixed cells of 12 dots (font A) or 9 (font B) times the width, so columns line up like on paper.
Bold is drawn twice one dot apart, underline as a rule, reverse as white on black. Images are
pasted dot for dot; barcodes and QR codes are drawn as a framed box with their caption.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from kassad.simulators.printer.render import Bitmap, Line, Receipt

_ROW, _GAP, _MARGIN = 24, 6, 8
_CELL = {"A": 12, "B": 9}
_CODE_HEIGHT = 64


def _line_height(line: Line) -> int:
    if line.bitmap is not None:
        return line.bitmap.height
    if line.kind != "text":
        return _CODE_HEIGHT + _GAP
    tallest = max((style.height for _, _, style in line.runs), default=1)
    return _ROW * tallest + _GAP


def _offset(width: int, used: int, align: str) -> int:
    if align == "center":
        return max(0, (width - used) // 2)
    if align == "right":
        return max(0, width - used)
    return 0


def _bitmap_image(bitmap: Bitmap) -> Image.Image:
    stride = (bitmap.width + 7) // 8
    # Pillow's mode "1" raw decoder wants the same row layout, with 1 = white: invert.
    inverted = bytes(b ^ 0xFF for b in bitmap.rows[:stride * bitmap.height])
    return Image.frombytes("1", (bitmap.width, bitmap.height), inverted, "raw", "1", stride)


def draw_receipt(receipt: Receipt, path: Path) -> None:
    width = receipt.width_dots
    height = sum(_line_height(line) for line in receipt.layout) + 2 * _MARGIN
    picture = Image.new("1", (width, max(height, 2 * _MARGIN + _ROW)), 1)
    pen = ImageDraw.Draw(picture)
    fonts: dict[int, ImageFont.ImageFont | ImageFont.FreeTypeFont] = {}
    y = _MARGIN
    for line in receipt.layout:
        h = _line_height(line)
        if line.bitmap is not None:
            if line.bitmap.width and line.bitmap.height:  # GS v 0 may declare 0 × n
                x = _offset(width, line.bitmap.width, line.align)
                picture.paste(_bitmap_image(line.bitmap), (x, y))
        elif line.kind != "text":
            used = min(width, 12 * len(line.text) + 16)
            x = _offset(width, used, line.align)
            pen.rectangle((x, y, x + used - 1, y + _CODE_HEIGHT - 1), outline=0)
            pen.text((x + 8, y + _CODE_HEIGHT // 2 - 8), line.text, fill=0)
        else:
            cells = [(_CELL.get(style.font, 12) * style.width, style)
                     for start, end, style in line.runs for _ in range(start, end)]
            x = _offset(width, sum(c for c, _ in cells), line.align)
            for ch, (cell, style) in zip(line.text, cells, strict=True):
                size = 20 * style.height
                font = fonts.get(size) or fonts.setdefault(size, ImageFont.load_default(size))
                top = y + h - _GAP - _ROW * style.height
                ink = 0
                if style.reverse:
                    pen.rectangle((x, top, x + cell - 1, y + h - _GAP - 1), fill=0)
                    ink = 1
                for dx in (0, 1) if style.bold else (0,):
                    pen.text((x + dx, top), ch, fill=ink, font=font)
                if style.underline:
                    pen.rectangle((x, y + h - _GAP - style.underline, x + cell - 1,
                                   y + h - _GAP - 1), fill=ink)
                x += cell
        y += h
    picture.save(path, "PNG")
