"""ESC/POS encoder: a :class:`ReceiptDocument` → the bytes of one print job (pure, no I/O).

python-escpos 3.1 is used only to generate bytes (its ``Dummy`` printer), with a fixed
capability profile and a fixed code page per model. Layout of one job::

    1B 40              ESC @    reset: whatever the printer went through, modes are known
    1B 74 n            ESC t n  the model's code page (CP858 = 19 on Epson), never switched
    per block, only the style commands that change (ESC a, ESC M, GS !, ESC E, ESC -), then
      text / columns / rule   code-page bytes, each line ended by LF (0A)
      barcode                 GS h, GS w, GS f, GS H, GS k m d… 00 (CODE128: GS k 49 n {B d…)
      qr                      GS ( k … model 2, module size, error level, store, print
      image                   GS v 0 m xL xH yL yH d…, in fragments of 256 rows
      feed                    ESC d n
      cut                     ESC d 6, GS V 0 (full) / GS V 1 (partial)
    [1D 28 48 06 00 30 30 d1..d4]   GS ( H fn 48, when a completion report is wanted

Text is NFC-normalised, laid out here (word-wrapped, two-column lines padded to the exact
width), and each character becomes one byte of the code page; a character the page lacks
becomes ``?`` (python-escpos's fallback with its code-page switching turned off), so the
layout never shifts and the same document gives the same bytes, always.

Printers act on real-time commands (DLE EOT, DLE ENQ, DLE DC4 - which can kick the drawer
or power the printer off) wherever the bytes appear, even inside image data. Text cannot
carry control characters (the document refuses them); in raster data a DLE (0x10) before
04/05/14 is cleared to 0x00, which costs one dot.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import json
import logging
import os
import pickle
import platform
import re
import tempfile
import textwrap
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, Final, Literal

import qrcode  # type: ignore[import-untyped]
from PIL import Image
from qrcode.exceptions import DataOverflowError  # type: ignore[import-untyped]

from kassad.drivers.errors import DriverError
from kassad.drivers.escpos.document import (
    BarcodeBlock,
    Block,
    ColumnsBlock,
    CutBlock,
    FeedBlock,
    ImageBlock,
    QrBlock,
    ReceiptDocument,
    RuleBlock,
    TextBlock,
)
from kassad.drivers.escpos.status import process_id_request

_LOGGER = logging.getLogger(__name__)

FRAGMENT_ROWS: Final = 256  # small GS v 0 pieces: cheap clones and slow links choke on big ones
MAX_IMAGE_ROWS: Final = 4000  # about 50 cm of paper at 203 dpi
_PICKLE_ENV: Final = "ESCPOS_CAPABILITIES_PICKLE_DIR"
_DANGEROUS_DLE: Final = re.compile(rb"\x10(?=[\x04\x05\x14]|\Z)")
_QR_EC: Final = {"L": 0, "M": 1, "Q": 2, "H": 3}  # python-escpos QR_ECLEVEL_*
_HRI: Final = {"none": "OFF", "above": "ABOVE", "below": "BELOW", "both": "BOTH"}


class EncodeError(DriverError, ValueError):
    """A valid document this printer model cannot print (no barcodes, too wide, …)."""


@dataclass(frozen=True, slots=True)
class PrinterModel:
    """What the encoder must know of a printer; ``profile`` names a python-escpos profile."""

    name: str
    profile: str
    columns_a: int  # characters per line, font A
    columns_b: int
    dots: int  # printable width in dots
    encoding: str  # code page as escpos-printer-db names it, e.g. "CP858"
    code_page: int  # its ESC t number on this model
    supports_completion: bool  # GS ( H fn 48 process-ID response
    cutter: bool = True
    hw_barcodes: bool = True  # GS k
    native_qr: bool = True  # GS ( k; otherwise the QR is sent as a raster image

    def __post_init__(self) -> None:
        if not (8 <= self.columns_a <= 128 and 8 <= self.columns_b <= 128):
            raise ValueError(f"{self.name}: columns must be 8..128")
        if not 0 < self.dots <= 2048 or self.dots % 8:
            raise ValueError(f"{self.name}: dots must be a multiple of 8 in 8..2048")
        if not 0 <= self.code_page <= 255:
            raise ValueError(f"{self.name}: code_page is an ESC t byte, 0..255")


# fmt: off
MODELS: Final = MappingProxyType({m.name: m for m in (
    PrinterModel("TM-T20II", "TM-T20II", 48, 64, 576, "CP858", 19, True),
    PrinterModel("TM-T88V", "TM-T88V", 42, 56, 512, "CP858", 19, True),
    # 58 mm clones: tear bar, and escpos-printer-db lists neither GS k nor GS ( k for them.
    PrinterModel("POS-5890", "POS-5890", 32, 42, 384, "CP858", 19, False,
                 cutter=False, hw_barcodes=False, native_qr=False),
    # Unbranded 80 mm (Xprinter & co.): Epson-like, but no GS ( H.
    PrinterModel("generic-80mm", "default", 48, 64, 576, "CP858", 19, False),
)})
# fmt: on


# --- python-escpos, tamed -----------------------------------------------------------------


def _capabilities_cache_dir() -> str:
    """A private, stable directory for python-escpos's capabilities pickle.

    python-escpos ``pickle.load``s that file at import, so it must be ours alone: a
    directory anyone else can write to would let them run code inside kassad.
    """
    systemd = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]  # CacheDirectory=
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = os.path.join(systemd, "escpos") if systemd else os.path.join(xdg, "kassad", "escpos")
    try:
        if not os.path.isabs(path):  # no HOME: "~" stayed as it was
            raise OSError(f"not an absolute path: {path}")
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
        if st.st_uid == os.getuid() and not st.st_mode & 0o022:
            return path
        _LOGGER.warning("%s is not private to this user; using a temporary directory", path)
    except OSError as exc:
        _LOGGER.warning("no escpos cache directory (%s); using a temporary one", exc)
    return tempfile.mkdtemp(prefix="kassad-escpos-")


def _prepare_capabilities(directory: str) -> None:
    """Write python-escpos's capabilities pickle into ``directory`` ourselves, atomically.

    Its own write is a plain ``open(…, "wb")``: two processes importing it at once (two
    registers starting on one machine, the demo) can read the other's half-written file and
    fail with ``EOFError``, and a crash mid-write would leave a broken file for every later
    start. The database is JSON, so ``json`` reads what its YAML loader reads.
    """
    source = importlib.resources.files("escpos") / "capabilities.json"
    target = os.path.join(directory, f"{platform.python_version()}.capabilities.pickle")
    with importlib.resources.as_file(source) as path:
        try:
            if os.path.getmtime(target) >= os.path.getmtime(path):
                with open(target, "rb") as f:
                    pickle.load(f)  # noqa: S301 - our own file, in our private directory
                return
        except (OSError, EOFError, pickle.UnpicklingError):
            pass  # absent, older than the database, or broken: write it again
        with open(path, encoding="utf-8") as f:
            capabilities = json.load(f)
    fd, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(capabilities, f)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@cache
def _escpos() -> tuple[Any, type[Exception]]:
    """Import python-escpos once, undoing what its import does to the process.

    3.1's ``escpos.capabilities`` runs ``logging.basicConfig()`` (a stderr handler on the
    root logger, so every log line would print twice under the daemon's own handler) and
    pickles its capability database into ``$ESCPOS_CAPABILITIES_PICKLE_DIR`` or a new
    ``mkdtemp()`` on every start. So: point the variable at our cache directory for the
    import only, and remove any root handler the import added.
    """
    had_env = _PICKLE_ENV in os.environ
    if not had_env:
        os.environ[_PICKLE_ENV] = _capabilities_cache_dir()
        _prepare_capabilities(os.environ[_PICKLE_ENV])
    before = list(logging.root.handlers)
    try:
        # Deferred to the first encoder: importing this module must not run any of that.
        from escpos.exceptions import Error
        from escpos.printer import Dummy
    finally:
        for handler in logging.root.handlers[:]:
            if handler not in before:
                logging.root.removeHandler(handler)
        if not had_env:
            del os.environ[_PICKLE_ENV]
    return Dummy, Error


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """python-escpos ``print()``s ("Using hardware barcode renderer", width warnings).

    stdout may be the daemon's log or protocol channel, so capture and log at DEBUG.
    ``redirect_stdout`` swaps ``sys.stdout`` process-wide for the duration: a ``print()``
    from another thread meanwhile lands here too (logging handlers keep their own stream).
    """
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        if buf.getvalue():
            _LOGGER.debug("python-escpos said: %s", buf.getvalue().strip())


# --- pure layout ---------------------------------------------------------------------------


def wrap(text: str, width: int) -> list[str]:
    """Split at ``\\n``, word-wrap each line to ``width`` (a line that fits is kept as is)."""
    lines: list[str] = []
    for para in unicodedata.normalize("NFC", text).split("\n"):
        if len(para) <= width:
            lines.append(para)
        else:
            lines.extend(textwrap.wrap(para, width, break_on_hyphens=False) or [""])
    return lines


def two_columns(left: str, right: str, width: int, overflow: str = "wrap") -> list[str]:
    """``left`` and ``right`` on lines of exactly ``width`` characters, right flush right.

    The right side shares the first line and is never cut, unless it alone would not leave
    two characters for the left: then the left goes above it, and it is cut to the width.
    """
    left, right = (unicodedata.normalize("NFC", s) for s in (left, right))
    if len(right) > width - 2:
        lefts = (wrap(left, width) if overflow == "wrap" else [left[:width]]) if left else []
        return [*lefts, right[:width].rjust(width)]
    room = width - len(right) - 1 if right else width
    parts = wrap(left, room) if overflow == "wrap" else [left[:room]]
    first = parts[0]
    head = first + " " * (width - len(first) - len(right)) + right if right else first
    return [head, *parts[1:]]


def _barcode_modules(symbology: str, data: str) -> int:
    """Width in narrow modules; CODE39 and ITF estimated at the widest 3:1 ratio."""
    fixed = {"EAN13": 95, "UPC-A": 95, "EAN8": 67}
    if symbology in fixed:
        return fixed[symbology]
    if symbology == "CODE128":  # code set B: start + data + check (11 each) + stop (13)
        return 11 * len(data) + 35
    if symbology == "CODE39":  # start/stop "*" + data, 3 wide + 6 narrow + gap each
        return 16 * (len(data) + 2)
    return 9 * len(data) + 9  # ITF: 2 wide + 3 narrow per digit, start, stop


def defuse_raster(stream: bytes) -> bytes:
    """Clear DLE bytes that would form a real-time command inside GS v 0 raster data.

    The headers need no care: xH and yH are at most 1 (2048 dots, 256-row fragments).
    """
    out = bytearray()
    i = 0
    while i < len(stream):
        if stream[i : i + 3] != b"\x1dv0" or len(stream) < i + 8:
            raise EncodeError(f"unexpected image bytes at {i}: {stream[i : i + 8].hex(' ')}")
        width_bytes = stream[i + 4] | stream[i + 5] << 8
        rows = stream[i + 6] | stream[i + 7] << 8
        end = i + 8 + width_bytes * rows
        out += stream[i : i + 8] + _DANGEROUS_DLE.sub(b"\x00", stream[i + 8 : end])
        i = end
    return bytes(out)


# --- drawer kick and completion ------------------------------------------------------------


def _pulse_units(ms: int, what: str, low: int) -> int:
    if not low <= ms <= 510:
        raise ValueError(f"{what} must be {low}..510 ms, not {ms}")
    # 16 (0x10) would put a DLE into the stream, read as DLE EOT/DC4 with what follows.
    return 17 if ms // 2 == 0x10 else ms // 2


def kick(pin: Literal[2, 5], on_ms: int, off_ms: int) -> bytes:
    """``ESC p m t1 t2``: buffered drawer pulse, 2 ms units (rounded down; 32 ms → 34 ms)."""
    if pin not in (2, 5):
        raise ValueError(f"drawer pin must be 2 or 5, not {pin}")
    t1, t2 = _pulse_units(on_ms, "on_ms", 2), _pulse_units(off_ms, "off_ms", 0)
    return bytes((0x1B, 0x70, 0 if pin == 2 else 1, t1, t2))


def kick_realtime(pin: Literal[2, 5], pulse_100ms: int) -> bytes:
    """``DLE DC4 1 m t``: pulse at once, even while the printer is busy or offline."""
    if pin not in (2, 5):
        raise ValueError(f"drawer pin must be 2 or 5, not {pin}")
    if not 1 <= pulse_100ms <= 8:
        raise ValueError(f"pulse_100ms must be 1..8 (100-800 ms), not {pulse_100ms}")
    return bytes((0x10, 0x14, 0x01, 0 if pin == 2 else 1, pulse_100ms))


def completion_request(job_no: int) -> tuple[bytes, bytes]:
    """(process ID, ``GS ( H`` fn 48 bytes) for job ``job_no``.

    The ID is the job number's last four decimal digits ("0042"): readable in a byte trace,
    and the printer only ever reports the latest one, so 10000 apart cannot be confused.
    """
    if job_no < 0:
        raise ValueError(f"job_no must be >= 0, not {job_no}")
    pid = b"%04d" % (job_no % 10_000)
    return pid, process_id_request(pid)


# --- the encoder ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedJob:
    data: bytes
    process_id: bytes | None  # echoed as 37 22 pid 00 once printed; None: model cannot


@dataclass(slots=True)
class _Job:
    """One job being encoded: python-escpos's Dummy, the text modes the bytes so far have
    left the printer in (ESC @ defaults at first), and the finished parts."""

    p: Any
    parts: list[bytes]
    align: str = "left"
    font: str = "a"
    size: tuple[int, int] = (1, 1)
    bold: bool = False
    underline: int = 0

    def take(self, raster: bool = False) -> None:
        data = self.p.output
        self.p.clear()
        self.parts.append(defuse_raster(data) if raster else data)


class EscposEncoder:
    """Turns documents into print jobs for one :class:`PrinterModel`; stateless between jobs."""

    def __init__(self, model: PrinterModel) -> None:
        self.model = model
        profile = self._dummy().profile
        if profile.codePages.get(str(model.code_page)) != model.encoding:
            raise ValueError(
                f"{model.name}: profile {model.profile} has no {model.encoding} at ESC t "
                f"{model.code_page}"
            )
        pixels = profile.profile_data["media"]["width"]["pixels"]
        if isinstance(pixels, int) and model.dots > pixels:
            raise ValueError(f"{model.name}: {model.dots} dots, profile says {pixels}")
        if model.cutter and not (
            profile.supports("paperFullCut") or profile.supports("paperPartCut")
        ):
            raise ValueError(f"{model.name}: profile {model.profile} has no cutter")

    def _dummy(self) -> Any:
        # A fresh Dummy per job: MagicEncode keeps state; "disabled" = never switch pages.
        dummy_cls, _ = _escpos()
        args = {"encoding": self.model.encoding, "disabled": True}
        return dummy_cls(profile=self.model.profile, magic_encode_args=args)

    def init_sequence(self) -> bytes:
        """``ESC @`` + ``ESC t n``: put at the head of every job (and after any reconnect)."""
        return b"\x1b\x40\x1b\x74" + bytes((self.model.code_page,))

    def columns(self, font: Literal["a", "b"] = "a", double_width: bool = False) -> int:
        cols = self.model.columns_a if font == "a" else self.model.columns_b
        return cols // 2 if double_width else cols

    def encode(self, document: ReceiptDocument) -> bytes:
        """The whole job; raises EncodeError before producing anything the model cannot print."""
        job = _Job(self._dummy(), [self.init_sequence()])
        escpos_error = _escpos()[1]
        with _quiet_stdout():
            for index, block in enumerate(document.blocks):
                try:
                    self._block(job, block)
                except (ValueError, escpos_error) as exc:  # EncodeError is a ValueError
                    raise EncodeError(f"block {index} ({block.type}): {exc}") from exc
                job.take()
        return b"".join(job.parts)

    def encode_job(self, document: ReceiptDocument, job_no: int) -> EncodedJob:
        """:meth:`encode` plus a completion request when the model supports GS ( H."""
        data = self.encode(document)
        if not self.model.supports_completion:
            return EncodedJob(data, None)
        pid, request = completion_request(job_no)
        return EncodedJob(data + request, pid)

    # --- blocks ---------------------------------------------------------------------------

    @staticmethod
    def _style(job: _Job, **want: Any) -> None:
        """Emit only the modes that change, in a fixed order (GS ! leaves the others alone)."""
        for key in ("align", "font", "size", "bold", "underline"):
            if key in want and want[key] != getattr(job, key):
                value = want[key]
                if key == "size":
                    job.p.set(custom_size=True, width=value[0], height=value[1])
                else:
                    job.p.set(**{key: value})
                setattr(job, key, value)

    def _plain(self, job: _Job, bold: bool = False, double_width: bool = False) -> None:
        size = (2 if double_width else 1, 1)
        self._style(job, align="left", font="a", size=size, bold=bold, underline=0)

    def _block(self, job: _Job, block: Block) -> None:
        if isinstance(block, TextBlock):
            size = (2 if block.double_width else 1, 2 if block.double_height else 1)
            self._style(job, align=block.align, font=block.font, size=size, bold=block.bold,
                        underline=block.underline)  # fmt: skip
            for line in wrap(block.text, self.columns(block.font, block.double_width)):
                job.p.text(line + "\n")
        elif isinstance(block, ColumnsBlock):
            self._plain(job, block.bold, block.double_width)
            width = self.columns("a", block.double_width)
            for line in two_columns(block.left, block.right, width, block.overflow):
                job.p.text(line + "\n")
        elif isinstance(block, RuleBlock):
            self._plain(job)
            job.p.text(block.char * self.model.columns_a + "\n")
        elif isinstance(block, BarcodeBlock):
            self._barcode(job, block)
        elif isinstance(block, QrBlock):
            self._qr(job, block)
        elif isinstance(block, ImageBlock):
            self._image(job, _open_png(block.png), block.align)
        elif isinstance(block, FeedBlock):
            job.p.print_and_feed(block.lines)
        elif isinstance(block, CutBlock):
            if self.model.cutter:
                job.p.cut("FULL" if block.mode == "full" else "PART")
            else:
                job.p.print_and_feed(6)  # up to the tear bar

    def _barcode(self, job: _Job, block: BarcodeBlock) -> None:
        if not self.model.hw_barcodes:
            raise EncodeError(f"{self.model.name} cannot print barcodes (no GS k)")
        dots = _barcode_modules(block.symbology, block.data) * block.width
        if dots > self.model.dots:
            raise EncodeError(
                f"{block.symbology} {block.data!r} is about {dots} dots wide at width "
                f"{block.width}, the paper has {self.model.dots}; use a smaller width or less data"
            )
        code, function = block.data, "A"
        if block.symbology == "CODE128":  # function B, code set B; a literal "{" is "{{"
            code, function = "{B" + block.data.replace("{", "{{"), "B"
            if len(code) > 255:
                raise EncodeError("CODE128 data too long for GS k (255 bytes with escapes)")
        self._style(job, align=block.align)
        job.p.barcode(
            code, block.symbology, height=block.height, width=block.width, pos=_HRI[block.hri],
            font="A", align_ct=False, function_type=function,
        )  # fmt: skip

    def _qr(self, job: _Job, block: QrBlock) -> None:
        ec = getattr(qrcode.constants, f"ERROR_CORRECT_{block.ec}")
        qr = qrcode.QRCode(error_correction=ec, border=2)
        # One byte-mode segment, as GS ( k stores it: the version is never underestimated.
        qr.add_data(block.data.encode("utf-8"), optimize=0)
        try:
            qr.make(fit=True)
        except (DataOverflowError, ValueError):  # qrcode 8 says "Invalid version (was 41 …)"
            raise EncodeError(
                f"QR data too long for error correction {block.ec}; use L or M, or less data"
            ) from None
        modules = 17 + 4 * qr.version
        size = min(block.size, self.model.dots // modules)  # shrink rather than print nothing
        if size < 1:
            raise EncodeError(f"QR code of {modules} modules is wider than {self.model.dots} dots")
        if self.model.native_qr:
            self._style(job, align=block.align)
            job.p.qr(block.data, ec=_QR_EC[block.ec], size=size, model=2, native=True)
            return
        side = len(qr.get_matrix())
        img = Image.new("1", (side, side), 1)
        img.putdata([0 if dark else 1 for row in qr.get_matrix() for dark in row])
        self._image(job, img.resize((side * size,) * 2, Image.Resampling.NEAREST), block.align)

    def _image(self, job: _Job, img: Image.Image, align: str) -> None:
        img = img.convert("RGBA")
        dots = self.model.dots
        if img.width > dots:
            height = max(1, round(img.height * dots / img.width))
            img = img.resize((dots, height), Image.Resampling.LANCZOS)
        if img.height > MAX_IMAGE_ROWS:
            raise EncodeError(
                f"image is {img.height} dots tall as printed, at most {MAX_IMAGE_ROWS}"
            )
        if align != "left" and img.width < dots:
            # Padding instead of ESC a: not every printer aligns raster images.
            canvas = Image.new("RGBA", (dots, img.height), (255, 255, 255, 255))
            canvas.paste(img, ((dots - img.width) // (2 if align == "center" else 1), 0))
            img = canvas
        self._style(job, align="left")
        job.take()  # the style bytes; the raster goes through defuse_raster on its own
        job.p.image(img, impl="bitImageRaster", fragment_height=FRAGMENT_ROWS, center=False)
        job.take(raster=True)


def _open_png(data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data), formats=["PNG"])
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise EncodeError(f"PNG could not be decoded: {exc}") from None
    return img
