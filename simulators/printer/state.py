"""What the simulated printer and its drawer are: plain state plus the status bytes it implies.

Status bytes (device-protocols.md §1.3–1.5; bit 7 is the most significant)::

    DLE EOT 1   0 w f 1 o p 1 0    p = pin 3 HIGH (0x04), o = offline (0x08)
    DLE EOT 2   0 e p 1 f c 1 0    c = cover open (0x04), p = printing stopped, paper end (0x20),
                                   e = error (0x40: autocutter or unrecoverable)
    DLE EOT 3   0 a u 1 c r 1 0    c = autocutter error (0x08), u = unrecoverable (0x20)
    DLE EOT 4   0 E E 1 N N 1 0    N = near end (0x0C), E = paper end (0x60); out sets both
    GS r 1      0 0 0 0 E E N N    N = near end (0x03), E = paper not present (0x0C)
    GS r 2      0 0 0 0 0 0 0 p    p = pin 3 HIGH
    ASB         1: 0 F c 1 o p 0 0   p = pin 3 HIGH, o = offline, c = cover open
                2: 0 a u 0 c r 0 0   c = autocutter error, u = unrecoverable
                3: 0 0 0 0 E E N N   paper sensors as GS r 1;   4: 00

Reference replies (§1.3): idle 12 12 12 12; drawer open with pin 3 high, DLE EOT 1 → 16;
paper out with pin 3 high → 1E 32 12 7E; cover open → 1E / 16; ASB idle → 10 00 00 00.

Pin 3 carries the drawer switch; which level means "open" depends on the drawer. The default
here, "high", is the polarity of the reference replies above (idle 12: closed = LOW). Epson's
ePOS SDK defaults to "low" (closed = HIGH, so an idle DLE EOT 1 answers 16): configure it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

Paper = Literal["ok", "near_end", "out"]
Level = Literal["low", "high"]
Stuck = Literal["open", "closed"]

#: GS a n category bits and, per category, the ASB bits (byte index, mask) whose change
#: triggers a message. The cover bit rides with online/offline: opening it takes the printer off.
ASB_DRAWER, ASB_ONLINE, ASB_ERROR, ASB_PAPER = 0x01, 0x02, 0x04, 0x08
_ASB_WATCH: dict[int, tuple[int, int]] = {
    ASB_DRAWER: (0, 0x04),
    ASB_ONLINE: (0, 0x28),
    ASB_ERROR: (1, 0x6D),
    ASB_PAPER: (2, 0x0F),
}


@dataclass
class PrinterState:
    #: False after go_offline(); the host-visible "offline" bit also covers cover/paper/errors.
    online: bool = True
    cover_open: bool = False
    paper: Paper = "ok"
    cutter_error: bool = False
    unrecoverable_error: bool = False
    #: The drawer as a person sees it.
    drawer_open: bool = False
    #: Pin 3 level while the drawer is open.
    drawer_open_level: Level = "high"
    #: Kick pin the drawer's solenoid is wired to (2 or 5).
    drawer_pin: int = 2
    #: Fault: the solenoid fires but the drawer does not open.
    drawer_jammed: bool = False
    #: Fault: the switch reads this regardless of the drawer.
    sensor_stuck: Stuck | None = None
    #: pretix/escpos-server observation: no replies at all while the cover is open.
    silent_when_cover_open: bool = False
    #: GS a n as last executed (0 = ASB off).
    asb_mask: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.paper not in get_args(Paper):
            raise ValueError(f"paper must be one of {get_args(Paper)}, not {self.paper!r}")
        if self.drawer_open_level not in get_args(Level):
            raise ValueError(f"drawer_open_level must be low or high, not "
                             f"{self.drawer_open_level!r}")
        if self.drawer_pin not in (2, 5):
            raise ValueError(f"drawer_pin must be 2 or 5, not {self.drawer_pin!r}")
        if self.sensor_stuck not in (None, *get_args(Stuck)):
            raise ValueError(f"sensor_stuck must be None, open or closed, not "
                             f"{self.sensor_stuck!r}")
        if not 0 <= self.asb_mask <= 255:
            raise ValueError("asb_mask is one byte")

    @property
    def sensor_reads_open(self) -> bool:
        """What the drawer switch reports (the truth unless it is stuck)."""
        if self.sensor_stuck is not None:
            return self.sensor_stuck == "open"
        return self.drawer_open

    @property
    def pin3_high(self) -> bool:
        return self.sensor_reads_open == (self.drawer_open_level == "high")

    @property
    def has_error(self) -> bool:
        return self.cutter_error or self.unrecoverable_error

    @property
    def offline(self) -> bool:
        """The printer's own offline bit: it does not print in this state."""
        return (not self.online or self.cover_open or self.paper == "out" or self.has_error)

    @property
    def can_print(self) -> bool:
        return not self.offline

    @property
    def silent(self) -> bool:
        return self.silent_when_cover_open and self.cover_open

    def dle_eot(self, n: int) -> int | None:
        """The one-byte reply to DLE EOT n (``10 04 n``), or None for an unsupported n."""
        reply = 0x12
        if n == 1:
            reply |= (0x04 if self.pin3_high else 0) | (0x08 if self.offline else 0)
        elif n == 2:
            reply |= 0x04 if self.cover_open else 0
            reply |= 0x20 if self.paper == "out" else 0
            reply |= 0x40 if self.has_error else 0
        elif n == 3:
            reply |= (0x08 if self.cutter_error else 0) | (0x20 if self.unrecoverable_error else 0)
        elif n == 4:
            # The near-end sensor sits before the end sensor: no paper at all trips both.
            reply |= 0x0C if self.paper != "ok" else 0
            reply |= 0x60 if self.paper == "out" else 0
        else:
            return None
        return reply

    def dle_eot_all(self) -> bytes:
        """DLE EOT 1..4 replies as 4 bytes (the idle printer: ``12 12 12 12``)."""
        return bytes(self.dle_eot(n) or 0 for n in (1, 2, 3, 4))

    def gs_r(self, n: int) -> int | None:
        """The reply to GS r n (``1D 72 n``): n = 1/49 paper, 2/50 drawer; else None."""
        if n in (1, 49):
            return self._paper_bits()
        if n in (2, 50):
            return 0x01 if self.pin3_high else 0x00
        return None

    def _paper_bits(self) -> int:
        return (0x03 if self.paper != "ok" else 0) | (0x0C if self.paper == "out" else 0)

    def asb(self) -> bytes:
        """The 4-byte Automatic Status Back message (idle: ``10 00 00 00``)."""
        first = 0x10 | (0x04 if self.pin3_high else 0) | (0x08 if self.offline else 0)
        first |= 0x20 if self.cover_open else 0
        second = (0x08 if self.cutter_error else 0) | (0x20 if self.unrecoverable_error else 0)
        return bytes((first, second, self._paper_bits(), 0x00))

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view: the fields plus the derived bytes, for logs and the control port."""
        out = asdict(self)
        out.update(offline=self.offline, pin3_high=self.pin3_high,
                   dle_eot=self.dle_eot_all().hex(" "), asb=self.asb().hex(" "))
        return out


def asb_changed(before: bytes, after: bytes, mask: int) -> bool:
    """True if a category selected by ``mask`` (GS a n) differs between two ASB messages."""
    return any(mask & category and (before[index] ^ after[index]) & bits
               for category, (index, bits) in _ASB_WATCH.items())
