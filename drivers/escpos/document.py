"""The ``print.receipt`` document: what a POS may ask the printer to print (pydantic v2).

A document is a list of blocks, each a JSON object tagged by ``"type"``::

    {"blocks": [
      {"type": "text", "text": "ACME Store", "align": "center", "double_height": true},
      {"type": "columns", "left": "Coffee 2 x 2.50", "right": "5.00"},
      {"type": "rule"},
      {"type": "barcode", "symbology": "EAN13", "data": "4006381333931"},
      {"type": "qr", "data": "https://example.com/r/123", "size": 6},
      {"type": "image", "png_base64": "iVBORw0KGgo…"},
      {"type": "feed", "lines": 3},
      {"type": "cut", "mode": "partial"}
    ]}

Everything is checked here, before a byte reaches the printer: sizes are bounded (a
document can never hold more than 500 blocks or 1 MiB of images), barcode data is checked per
symbology (GTIN check digits included), images must be PNG. Text may not carry control
characters: ESC/POS printers act on DLE sequences anywhere in the stream, so a receipt line
could otherwise open the drawer. What depends on the printer model (line width, whether it
has a cutter or barcodes at all) is the encoder's business.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

MAX_BLOCKS = 500
MAX_TEXT = 2000
MAX_QR_BYTES = 2000
MAX_IMAGE_BYTES = 512 * 1024
MAX_IMAGES_TOTAL = 1024 * 1024
# Source pixels: a 512 KiB PNG can still claim 60000 x 60000 pixels (a decompression bomb).
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 16 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Align = Literal["left", "center", "right"]


def _control_chars(text: str, allowed: str = "") -> str | None:
    """Describe the first control character not in ``allowed``, or None."""
    for i, ch in enumerate(text):
        if ch not in allowed and unicodedata.category(ch) == "Cc":
            return f"control character U+{ord(ch):04X} at index {i}"
    return None


def _no_controls(text: str, field: str, allowed: str = "") -> str:
    found = _control_chars(text, allowed)
    if found:
        hint = "use a new block or \\n for a line break" if allowed else "remove it"
        raise ValueError(
            f"{field} contains a {found}; the printer would run it as a command ({hint})"
        )
    return text


class _Block(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class TextBlock(_Block):
    """Text in one style; wrapped at word boundaries to the line width, ``\\n`` breaks lines."""

    type: Literal["text"] = "text"
    text: str = Field(max_length=MAX_TEXT)
    bold: bool = False
    underline: Literal[0, 1, 2] = 0
    double_width: bool = False
    double_height: bool = False
    align: Align = "left"
    font: Literal["a", "b"] = "a"

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return _no_controls(v, "text", allowed="\n")


class ColumnsBlock(_Block):
    """An item line: ``left`` (wrapped or truncated) and ``right`` (right-aligned, e.g. a price)."""

    type: Literal["columns"] = "columns"
    left: str = Field(max_length=500)
    right: str = Field(default="", max_length=60)
    bold: bool = False
    double_width: bool = False
    overflow: Literal["wrap", "truncate"] = "wrap"

    @field_validator("left", "right")
    @classmethod
    def _one_line(cls, v: str) -> str:
        return _no_controls(v, "a columns side")


class RuleBlock(_Block):
    """A full-width line of one character."""

    type: Literal["rule"] = "rule"
    char: str = Field(default="-", min_length=1, max_length=1)

    @field_validator("char")
    @classmethod
    def _char(cls, v: str) -> str:
        return _no_controls(v, "rule char")


Symbology = Literal["EAN13", "EAN8", "UPC-A", "CODE39", "CODE128", "ITF"]
_GTIN_LENGTHS = {"EAN13": 13, "EAN8": 8, "UPC-A": 12}
_CODE39 = re.compile(r"[0-9A-Z $%+\-./]+")


def gtin_check_digit(body: str) -> int:
    """The GS1 check digit of ``body`` (all digits but the last): weights 3,1,3… from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


class BarcodeBlock(_Block):
    """A 1-D barcode drawn by the printer (``GS k``); ``data`` without start/stop characters."""

    type: Literal["barcode"] = "barcode"
    symbology: Symbology
    data: str = Field(min_length=1, max_length=250)
    height: int = Field(default=64, ge=1, le=255, description="bar height in dots")
    width: int = Field(default=2, ge=2, le=6, description="narrow module width in dots")
    hri: Literal["none", "above", "below", "both"] = "below"
    align: Align = "center"

    @model_validator(mode="after")
    def _data_fits_symbology(self) -> BarcodeBlock:
        s, d = self.symbology, self.data
        if s in _GTIN_LENGTHS:
            n = _GTIN_LENGTHS[s]
            if not d.isascii() or not d.isdigit():
                raise ValueError(f"{s} data must be digits only, got {d!r}")
            if len(d) == n - 1:
                raise ValueError(
                    f"{s} needs {n} digits including the check digit; "
                    f"append {gtin_check_digit(d)} to get {d}{gtin_check_digit(d)}"
                )
            if len(d) != n:
                raise ValueError(f"{s} needs exactly {n} digits, got {len(d)}")
            want = gtin_check_digit(d[:-1])
            if int(d[-1]) != want:
                raise ValueError(
                    f"{s} check digit of {d} is {d[-1]} but must be {want} "
                    f"(did you mean {d[:-1]}{want}?)"
                )
        elif s == "CODE39" and not _CODE39.fullmatch(d):
            raise ValueError(
                "CODE39 data may only hold 0-9, A-Z (upper case), space and $ % + - . /"
            )
        elif s == "ITF" and (not d.isascii() or not d.isdigit() or len(d) % 2):
            raise ValueError(f"ITF data must be an even number of digits, got {d!r}")
        elif s == "CODE128" and not all(0x20 <= ord(c) <= 0x7E for c in d):
            raise ValueError("CODE128 data must be printable ASCII (0x20-0x7E)")
        return self


class QrBlock(_Block):
    """A QR code (model 2) rendered by the printer where it can (``GS ( k``)."""

    type: Literal["qr"] = "qr"
    data: str = Field(min_length=1, max_length=MAX_QR_BYTES)  # chars <= UTF-8 bytes
    size: int = Field(default=4, ge=1, le=16, description="module size in dots")
    ec: Literal["L", "M", "Q", "H"] = "M"
    align: Align = "center"

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        n = len(v.encode("utf-8"))
        if n > MAX_QR_BYTES:
            raise ValueError(f"QR data is {n} bytes in UTF-8, more than {MAX_QR_BYTES}")
        return _no_controls(v, "QR data", allowed="\t\n\r")


class ImageBlock(_Block):
    """A PNG (logo, signature), printed black and white; wider than the paper → scaled down."""

    type: Literal["image"] = "image"
    png_base64: str = Field(max_length=(MAX_IMAGE_BYTES + 2) // 3 * 4)
    align: Align = "center"

    @property
    def png(self) -> bytes:
        """The decoded PNG (validated when the block was built)."""
        return base64.b64decode(self.png_base64, validate=True)

    @field_validator("png_base64")
    @classmethod
    def _png(cls, v: str) -> str:
        try:
            data = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("png_base64 is not valid base64 (standard alphabet, padded)") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise ValueError(f"image is {len(data)} bytes, more than {MAX_IMAGE_BYTES} (512 KiB)")
        if not data.startswith(PNG_SIGNATURE):
            raise ValueError("image is not a PNG (no PNG signature); convert it to PNG first")
        # IHDR is always the first chunk: length(4) "IHDR" width(4) height(4), big-endian.
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("image is a truncated or damaged PNG (no IHDR header)")
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if not (0 < w <= MAX_IMAGE_SIDE and 0 < h <= MAX_IMAGE_SIDE and w * h <= MAX_IMAGE_PIXELS):
            raise ValueError(
                f"image is {w}x{h} pixels; at most {MAX_IMAGE_SIDE} a side and "
                f"{MAX_IMAGE_PIXELS} pixels (the printer has at most a few hundred dots a line)"
            )
        return v


class FeedBlock(_Block):
    """Blank paper: ``lines`` line feeds."""

    type: Literal["feed"] = "feed"
    lines: int = Field(default=1, ge=1, le=20)


class CutBlock(_Block):
    """Feed past the cutter and cut; on printers without a cutter only the feed happens."""

    type: Literal["cut"] = "cut"
    mode: Literal["full", "partial"] = "full"


# Pydantic's own errors name the tag and list the valid ones: "Input tag 'logo' found using
# 'type' does not match any of the expected tags: 'text', 'columns', …".
# fmt: off
Block = Annotated[
    TextBlock | ColumnsBlock | RuleBlock | BarcodeBlock | QrBlock | ImageBlock | FeedBlock
    | CutBlock,
    Field(discriminator="type"),
]
# fmt: on


class ReceiptDocument(BaseModel):
    """The ``document`` parameter of ``print.receipt``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    blocks: list[Block] = Field(min_length=1, max_length=MAX_BLOCKS)

    @field_validator("blocks", mode="before")
    @classmethod
    def _not_too_many(cls, v: object) -> object:
        # Checked before the blocks are: 100000 blocks must not cost 100000 validations.
        if isinstance(v, list | tuple) and len(v) > MAX_BLOCKS:
            raise ValueError(
                f"document has {len(v)} blocks, at most {MAX_BLOCKS}; "
                "split it into several receipts"
            )
        return v

    @model_validator(mode="after")
    def _images_total(self) -> ReceiptDocument:
        # Approximate decoded size from the base64 length; exact enough for a bound.
        total = sum(len(b.png_base64) * 3 // 4 for b in self.blocks if isinstance(b, ImageBlock))
        if total > MAX_IMAGES_TOTAL:
            raise ValueError(
                f"the images of this document total about {total // 1024} KiB, "
                f"at most {MAX_IMAGES_TOTAL // 1024} KiB per receipt"
            )
        return self
