"""ccTalk frames: bytes <-> :class:`Frame`, the stream reader, the reply payloads (pure, no I/O).

Layer: codec, shared by the driver (host role) and the simulator (device role).
device-protocols.md §4.1. Every frame, request or reply, has the same layout::

    8-bit checksum   [dest] [N] [src]     [header] [data 0..N-1] [checksum]
                     checksum makes the sum of all N+5 bytes ≡ 0 (mod 256)
    CRC-16           [dest] [N] [CRC LSB] [header] [data 0..N-1] [CRC MSB]
                     CRC-CCITT, poly 0x1021, init 0, over dest, N, header, data;
                     the source byte is not sent: a frame to the host comes from the
                     device just addressed, any other frame comes from the host.

    N = 0..255, so a frame is 5..260 bytes. Replies use header 0 (ACK, with data),
    5 = NAK, 6 = BUSY.

Payloads parsed here (all multi-byte numbers are LSB first)::

    229 / 159 reply  [event counter] 5 x [result A][result B], newest first
    166 reply        [event counter][coins remaining][last payout paid][last payout unpaid]
    163 reply        [status bits] (a further byte on some hoppers is ignored)
    242 reply        [serial LSB][serial][serial MSB]
    156 reply        [scaling factor LSB][scaling factor MSB][decimal places]
    184 reply        6 ASCII "CCVVVI": country, 3-char value code, issue letter ("SE100A")
    157 reply        7 ASCII "CCVVVVI": country, value in major units, issue ("SE0020A")
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from kassad.drivers.errors import ProtocolError

# Addresses (§4.1): 0 broadcast, 1 host; the default address of each device category.
ADDR_BROADCAST = 0
ADDR_HOST = 1
ADDR_COIN_ACCEPTOR = 2
ADDR_HOPPER = 3
ADDR_BILL_VALIDATOR = 40

MAX_DATA = 255
MAX_FRAME = MAX_DATA + 5  # 260 bytes
MIN_FRAME = 5


class Header(IntEnum):
    """The ccTalk headers kassad sends or answers (device-protocols.md §4.1)."""

    REPLY = 0  # ACK, with or without data
    RESET_DEVICE = 1
    COMMS_REVISION = 4
    NAK = 5
    BUSY = 6
    ROUTE_BILL = 154
    COUNTRY_SCALING = 156
    BILL_ID = 157
    READ_BILL_EVENTS = 159
    TEST_HOPPER = 163
    ENABLE_HOPPER = 164
    HOPPER_STATUS = 166
    DISPENSE_HOPPER_COINS = 167
    COIN_ID = 184
    MODIFY_MASTER_INHIBIT = 228
    READ_BUFFERED_CREDIT = 229
    MODIFY_INHIBIT_STATUS = 231
    SOFTWARE_REVISION = 241
    SERIAL_NUMBER = 242
    PRODUCT_CODE = 244
    EQUIPMENT_CATEGORY = 245
    MANUFACTURER = 246
    SIMPLE_POLL = 254


def header_name(header: int) -> str:
    """``"229 READ_BUFFERED_CREDIT"`` for logs and error messages; the number alone if unknown."""
    try:
        return f"{header} {Header(header).name}"
    except ValueError:
        return str(header)


class FrameError(ProtocolError):
    """Bytes or a reply payload that do not have the ccTalk layout they should."""


@dataclass(frozen=True, slots=True)
class Frame:
    dest: int
    src: int
    header: int
    data: bytes = b""

    def __post_init__(self) -> None:
        for name in ("dest", "src", "header"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                msg = f"{name} must be 0..255, got {value}"
                raise ValueError(msg)
        if len(self.data) > MAX_DATA:
            msg = f"at most {MAX_DATA} data bytes in a frame, got {len(self.data)}"
            raise ValueError(msg)


def checksum(body: bytes) -> int:
    """The byte that makes ``sum(body + checksum)`` ≡ 0 (mod 256)."""
    return -sum(body) & 0xFF


def crc16_ccitt(data: bytes, crc: int = 0x0000) -> int:
    """CRC-CCITT (poly 0x1021, init 0, no reflection, no final XOR), as ccTalk uses it."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def encode(frame: Frame, crc: bool = False) -> bytes:
    n = len(frame.data)
    if crc:
        value = crc16_ccitt(bytes((frame.dest, n, frame.header)) + frame.data)
        return (bytes((frame.dest, n, value & 0xFF, frame.header)) + frame.data
                + bytes((value >> 8,)))
    body = bytes((frame.dest, n, frame.src, frame.header)) + frame.data
    return body + bytes((checksum(body),))


def _check(raw: bytes, crc: bool, src: int) -> Frame | None:
    """The frame in ``raw`` (exactly one whole frame's bytes), or None if its check fails."""
    if crc:
        value = crc16_ccitt(raw[0:2] + raw[3:-1])
        if value != raw[2] | raw[-1] << 8:
            return None
        return Frame(raw[0], src, raw[3], bytes(raw[4:-1]))
    # Source 0 is the broadcast address, never a sender. Without this rule five zero bytes
    # (a line held low reads as a run of 0x00) would pass as a frame.
    if sum(raw) & 0xFF or raw[2] == 0:
        return None
    return Frame(raw[0], raw[2], raw[3], bytes(raw[4:-1]))


def decode(raw: bytes, *, crc: bool = False, src: int = ADDR_HOST) -> Frame:
    """Exactly one frame; ``src`` is the implicit source in CRC mode. FrameError otherwise."""
    if len(raw) < MIN_FRAME or len(raw) != raw[1] + 5:
        msg = f"not one ccTalk frame: {raw.hex(' ')}"
        raise FrameError(msg)
    frame = _check(raw, crc, src)
    if frame is None:
        msg = f"bad {'CRC' if crc else 'checksum'}: {raw.hex(' ')}"
        raise FrameError(msg)
    return frame


class FrameReader:
    """Frames out of a byte stream that may hold garbage, split frames or several frames.

    A candidate frame starts at the head of the buffer and is N+5 bytes long; when its check
    fails the head byte cannot start a frame, so exactly one byte is dropped and the scan goes
    on (resync). A head announcing a long frame that never completes waits until the owner
    says the line went quiet (:meth:`expire`, after ccTalk's inter-byte gap), then it is
    dropped the same way. An 8-bit checksum lets about 1 in 256 garbage runs pass as a frame
    (source 0 is refused, which rules out runs of zeros): the protocol layer therefore also
    checks the addresses of what it takes as a reply.
    """

    # Data is taken at most a frame's worth at a time and every whole candidate is decided
    # before more is taken, so the buffer stays below MAX_FRAME + _CHUNK bytes however much
    # a misbehaving line sends in one read.
    _CHUNK = 256

    def __init__(self, *, crc: bool = False, host: int = ADDR_HOST) -> None:
        self.crc = crc
        self.host = host
        #: CRC mode: the implicit source of frames addressed to the host (the device asked).
        self.peer = ADDR_BROADCAST
        #: Bytes dropped so far because no valid frame started with them.
        self.garbage = 0
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held for a frame that has not completed yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        for start in range(0, len(data), self._CHUNK):
            self._buf += data[start:start + self._CHUNK]
            frames += self._extract(final=False)
        return frames

    def expire(self) -> list[Frame]:
        """The line went quiet: nothing buffered will be completed. Frames found in what is
        buffered are returned; every other byte is dropped as garbage."""
        return self._extract(final=True)

    def reset(self, peer: int | None = None) -> int:
        """Drop everything buffered (counted as garbage); returns how many bytes."""
        dropped = len(self._buf)
        self.garbage += dropped
        self._buf.clear()
        if peer is not None:
            self.peer = peer
        return dropped

    def _extract(self, *, final: bool) -> list[Frame]:
        frames: list[Frame] = []
        buf = self._buf
        skipped = 0  # head bytes found not to start a frame
        while (avail := len(buf) - skipped) > 0:
            total = buf[skipped + 1] + 5 if avail >= 2 else MAX_FRAME + 1
            if avail < total:
                if not final:
                    break  # wait for the rest of this candidate
                skipped += 1  # nothing more will come: this head byte is garbage
                continue
            raw = bytes(buf[skipped:skipped + total])
            src = self.peer if raw[0] == self.host else self.host
            frame = _check(raw, self.crc, src)
            if frame is None:
                skipped += 1
                continue
            frames.append(frame)
            self.garbage += skipped
            del buf[:skipped + total]
            skipped = 0
        self.garbage += skipped
        del buf[:skipped]
        return frames


# -- reply payloads -----------------------------------------------------------------------

#: Result pairs in a 229 / 159 reply (device-protocols.md §4.1).
EVENT_BUFFER_DEPTH = 5


def parse_buffered_credit(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """229 (coins) and 159 (bills): ``(event counter, [(A, B), …] newest first)``."""
    if len(data) < 3 or len(data) % 2 != 1:
        msg = f"buffered events: expected [counter] + (A, B) pairs, got {data.hex(' ')!r}"
        raise FrameError(msg)
    return data[0], [(data[i], data[i + 1]) for i in range(1, len(data), 2)]


def buffered_credit_payload(counter: int, events: Iterable[tuple[int, int]]) -> bytes:
    """The device's side of :func:`parse_buffered_credit` (newest first, padded with 0, 0)."""
    pairs = list(events)[:EVENT_BUFFER_DEPTH]
    pairs += [(0, 0)] * (EVENT_BUFFER_DEPTH - len(pairs))
    return bytes([counter, *(byte for pair in pairs for byte in pair)])


@dataclass(frozen=True, slots=True)
class HopperStatus:
    """166 reply: the payout in progress or the last one."""

    counter: int
    remaining: int
    paid: int
    unpaid: int

    def payload(self) -> bytes:
        return bytes((self.counter, self.remaining, self.paid, self.unpaid))


def parse_hopper_status(data: bytes) -> HopperStatus:
    if len(data) != 4:
        msg = f"hopper status: expected 4 bytes, got {data.hex(' ')!r}"
        raise FrameError(msg)
    return HopperStatus(data[0], data[1], data[2], data[3])


def parse_hopper_test(data: bytes) -> int:
    """163 reply: the first status byte (bit meanings in :mod:`.events`)."""
    if not data:
        msg = "test hopper: empty reply"
        raise FrameError(msg)
    return data[0]


def parse_ascii(data: bytes) -> str:
    """Category, manufacturer, product code, software revision: ASCII, padded at will."""
    return data.decode("ascii", errors="replace").strip(" \x00")


def parse_serial(data: bytes) -> int:
    if len(data) != 3:
        msg = f"serial number: expected 3 bytes, got {data.hex(' ')!r}"
        raise FrameError(msg)
    return int.from_bytes(data, "little")


def parse_scaling(data: bytes) -> tuple[int, int] | None:
    """156 reply: ``(scaling factor, decimal places)``; None when the country is unsupported
    (all zero)."""
    if len(data) != 3:
        msg = f"country scaling: expected 3 bytes, got {data.hex(' ')!r}"
        raise FrameError(msg)
    factor = data[0] | data[1] << 8
    return None if factor == 0 and data[2] == 0 else (factor, data[2])


def inhibit_mask(channels: Iterable[int], width: int = 16) -> bytes:
    """231 payload: bit (channel - 1) set = channel enabled; LSB byte (channels 1–8) first."""
    value = 0
    for channel in channels:
        if not 1 <= channel <= width:
            msg = f"channel must be 1..{width}, got {channel}"
            raise ValueError(msg)
        value |= 1 << (channel - 1)
    return value.to_bytes(width // 8, "little")


def mask_channels(mask: bytes) -> frozenset[int]:
    """The channels a 231 payload enables (the simulator's side of :func:`inhibit_mask`)."""
    value = int.from_bytes(mask, "little")
    return frozenset(bit + 1 for bit in range(len(mask) * 8) if value >> bit & 1)


# -- coin and bill ids ----------------------------------------------------------------------

#: Country code -> ISO 4217 currency, for ids whose value is in that currency's minor unit
#: (coins: "EU200A" = 200 cent, "GB100A" = 100 pence, "SE100A" = 100 öre = 1 krona; bills
#: after 156 scaling). Countries not listed get currency and value None: better unknown than
#: wrong; the daemon's configuration can name them.
DEFAULT_CURRENCIES: Mapping[str, str] = {"EU": "EUR", "GB": "GBP", "SE": "SEK"}
#: ISO 4217 minor-unit exponent of the currencies above.
MINOR_EXPONENT: Mapping[str, int] = {"EUR": 2, "GBP": 2, "SEK": 2}

# ccTalk spec Appendix 3 coin value codes (as in qt-cctalk, cited in §4.1): digits "005" =
# 5, a multiplier letter as the decimal point "1K0" = 1 000, "2K5" = 2 500, "10K" = 10 000,
# "M50" = 500 000, "1M0" = 1 000 000, "G10" = 100 000 000. Fractional codes (".05", "5m0")
# are left unparsed: they belong to currencies not in the table above.
_MULTIPLIER = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}
_COIN_ID = re.compile(r"([A-Z]{2})([0-9A-Za-z.]{3})([A-Z])")
_BILL_ID = re.compile(r"([A-Z]{2})([0-9]{4})([A-Z])")


def coin_value_code(code: str) -> int | None:
    """Integer value of a 3-character coin value code, None if it is not a whole number."""
    if code.isdigit():
        return int(code)
    for index, char in enumerate(code):
        if char in _MULTIPLIER:
            head, tail = code[:index], code[index + 1:]
            if not (head + tail).isdigit():
                return None
            # The letter stands for the decimal point: "2K5" = 2.5 K, "M50" = 0.50 M.
            return int(head or "0") * _MULTIPLIER[char] + (
                int(tail) * _MULTIPLIER[char] // 10 ** len(tail) if tail else 0)
    return None


@dataclass(frozen=True, slots=True)
class CoinId:
    """A coin (184) or bill (157) id: ``label`` as sent, value in minor units where known."""

    label: str
    country: str | None = None
    issue: str | None = None
    currency: str | None = None
    value_minor: int | None = None


def is_empty_id(text: str) -> bool:
    """Unprogrammed positions answer blanks, dots or nothing."""
    return not text.strip(" .\x00")


def parse_coin_id(text: str, currencies: Mapping[str, str] = DEFAULT_CURRENCIES) -> CoinId:
    match = _COIN_ID.fullmatch(text)
    if match is None:
        return CoinId(text)
    country, code, issue = match.groups()
    currency = currencies.get(country)
    value = coin_value_code(code) if currency is not None else None
    return CoinId(text, country, issue, currency if value is not None else None, value)


def parse_bill_id(text: str, scaling: tuple[int, int] | None,
                  currencies: Mapping[str, str] = DEFAULT_CURRENCIES) -> CoinId:
    """Bill value = value code x scaling factor, in units of 10^-decimal places of the
    currency (156). Without scaling data, or with a currency of unknown exponent, no value."""
    match = _BILL_ID.fullmatch(text)
    if match is None:
        return CoinId(text)
    country, code, issue = match.groups()
    currency = currencies.get(country)
    exponent = MINOR_EXPONENT.get(currency or "")
    if currency is None or exponent is None or scaling is None or scaling[1] > exponent:
        return CoinId(text, country, issue)
    factor, decimals = scaling
    return CoinId(text, country, issue, currency,
                  int(code) * factor * 10 ** (exponent - decimals))
