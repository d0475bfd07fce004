"""ITL SSP (unencrypted) packets and replies: pure bytes <-> frozen dataclasses, no I/O.

Layer: frames. The driver (host role) and the simulator (slave role) both use this module;
the POLL events live in events.py and are re-exported here (Event, EventCode, parse_poll …).
Facts from device-protocols.md §4.2 (ITL C SDK ``SSPComs.c`` / ``ssp_defines.h``).

Packet layout (9600 8N2)::

    STX 0x7F | SEQ/ID | LEN | DATA[LEN] | CRCL | CRCH
               bit 7: sequence flag, bits 0-6: slave address (0 = note validator)
    CRC-16/CMS (poly 0x8005, init 0xFFFF, MSB first, no reflection, no final XOR) over
    SEQ/ID, LEN, DATA; sent low byte first. After the leading STX every 0x7F (CRC included)
    is sent twice; the receiver collapses 7F 7F -> 7F, and a single 7F not followed by 7F
    starts a new packet.

DATA[0] is the command (host) or the generic response status (slave, 0xF0 = OK). The parse_*
functions below take the *payload*, DATA[1:] after an OK status. SETUP REQUEST payload for a
note validator (unit types other than 0x03 SMART Hopper), n = number of channels::

    0 unit type | 1-4 firmware ASCII | 5-7 country ASCII | 8-10 value multiplier (BE) | 11 n |
    12.. n channel values (1 byte, x value multiplier) | n channel security bytes |
    12+2n real value multiplier (3 bytes BE) | 15+2n protocol version |
    protocol >= 6: 16+2n.. n x 3 ASCII currency | 16+5n.. n x 4-byte LE expanded values

GET SERIAL NUMBER payload: 4 bytes, big-endian.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from kassad.drivers.errors import ProtocolError
from kassad.drivers.ssp.events import (
    REJECT_REASONS,
    Amount,
    Event,
    EventCode,
    parse_poll,
)

__all__ = [
    "MAX_BODY", "MAX_DATA", "OVERHEAD", "REJECT_REASONS", "SEQ_FLAG", "STX", "Amount",
    "Command", "Event", "EventCode", "Packet", "PacketReader", "SetupChannel", "SetupInfo",
    "Status", "crc16_cms", "frame", "parse_poll", "parse_serial", "parse_setup_request", "stuff",
]

STX = 0x7F
SEQ_FLAG = 0x80
#: SEQ/ID, LEN, CRCL, CRCH around DATA. LEN is one byte, so a packet body (unstuffed, without
#: STX) is at most 259 bytes: the reader's buffer can never grow past that.
OVERHEAD = 4
MAX_DATA = 255
MAX_BODY = MAX_DATA + OVERHEAD


class Command(IntEnum):
    RESET = 0x01
    SET_INHIBITS = 0x02
    DISPLAY_ON = 0x03
    DISPLAY_OFF = 0x04
    SETUP_REQUEST = 0x05
    HOST_PROTOCOL_VERSION = 0x06
    POLL = 0x07
    REJECT = 0x08
    DISABLE = 0x09
    ENABLE = 0x0A
    GET_SERIAL_NUMBER = 0x0C
    UNIT_DATA = 0x0D
    CHANNEL_VALUES = 0x0E
    CHANNEL_SECURITY = 0x0F
    SYNC = 0x11
    LAST_REJECT_CODE = 0x17
    HOLD = 0x18
    ENABLE_HIGHER_PROTOCOL = 0x19


class Status(IntEnum):
    """Generic responses (DATA[0] of every reply)."""

    OK = 0xF0
    UNKNOWN_COMMAND = 0xF2
    WRONG_PARAMETERS = 0xF3
    OUT_OF_RANGE = 0xF4
    CANNOT_PROCESS = 0xF5
    SOFTWARE_ERROR = 0xF6
    FAIL = 0xF8
    KEY_NOT_SET = 0xFA


def crc16_cms(data: bytes) -> int:
    """CRC-16/CMS: poly 0x8005, init 0xFFFF, MSB first; check("123456789") == 0xAEE7."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Everything after the leading STX, with every 0x7F doubled."""
    return body.replace(b"\x7f", b"\x7f\x7f")


def frame(body: bytes) -> bytes:
    """STX + stuffed ``body`` (SEQ/ID, LEN, DATA, CRCL, CRCH) as it goes on the wire."""
    return bytes([STX]) + stuff(body)


@dataclass(frozen=True, slots=True)
class Packet:
    address: int
    seq: bool
    data: bytes  # DATA: command + parameters (host), status + payload (slave)

    def __post_init__(self) -> None:
        # Address 0x7F with the flag clear would make SEQ/ID 0x7F: indistinguishable from
        # stuffing right after the STX.
        if not 0 <= self.address <= 0x7E:
            raise ValueError(f"SSP address must be 0..0x7E, got {self.address:#x}")
        if not 1 <= len(self.data) <= MAX_DATA:
            raise ValueError(f"SSP DATA must be 1..{MAX_DATA} bytes, got {len(self.data)}")

    @property
    def seq_id(self) -> int:
        return self.address | (SEQ_FLAG if self.seq else 0)

    def body(self) -> bytes:
        """SEQ/ID, LEN, DATA and the CRC (low byte first): the packet without STX, unstuffed."""
        head = bytes([self.seq_id, len(self.data)]) + self.data
        crc = crc16_cms(head)
        return head + bytes([crc & 0xFF, crc >> 8])

    def encode(self) -> bytes:
        return frame(self.body())


class PacketReader:
    """Bytes in, whole packets out: unstuffing, CRC check, resync on garbage.

    ``feed`` may get any split of the stream (byte at a time included). A single 0x7F
    followed by anything but 0x7F starts a packet, abandoning one in progress; a packet whose
    CRC fails is dropped and counted, and the reader waits for the next start.
    """

    def __init__(self) -> None:
        self._buf = bytearray()  # unstuffed body of the packet in progress; <= MAX_BODY
        self._in_packet = False
        self._escape = False  # the last byte was a 0x7F whose meaning depends on the next
        #: Packets dropped for a bad CRC.
        self.bad_crc = 0
        #: Packets abandoned half way because a new start came.
        self.truncated = 0
        #: Bytes outside any packet.
        self.discarded = 0

    def reset(self) -> None:
        self._buf.clear()
        self._in_packet = self._escape = False

    def feed(self, data: bytes) -> list[Packet]:
        packets: list[Packet] = []
        for byte in data:
            if self._escape:
                self._escape = False
                if byte == STX:  # 7F 7F: one stuffed 0x7F
                    if self._in_packet:
                        self._append(0x7F, packets)
                    else:
                        self.discarded += 2
                    continue
                if self._in_packet:  # a lone 7F: the previous packet never finished
                    self.truncated += 1
                self._buf[:] = bytes([byte])
                self._in_packet = True
            elif byte == STX:
                self._escape = True
            elif self._in_packet:
                self._append(byte, packets)
            else:
                self.discarded += 1
        return packets

    def _append(self, byte: int, packets: list[Packet]) -> None:
        buf = self._buf
        buf.append(byte)
        if len(buf) < 2 or len(buf) < buf[1] + OVERHEAD:
            return
        self._in_packet = False
        body = bytes(buf)
        buf.clear()
        crc = crc16_cms(body[:-2])
        if body[-2:] != bytes([crc & 0xFF, crc >> 8]) or body[1] == 0 or body[0] & 0x7F == 0x7F:
            self.bad_crc += 1
            return
        packets.append(Packet(body[0] & 0x7F, bool(body[0] & SEQ_FLAG), body[2:-2]))


# -- SETUP REQUEST, serial number ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupChannel:
    channel: int  # 1-based, as events and SET INHIBITS count them
    value: int  # in major units of ``currency``: expanded value, or legacy byte x multiplier
    currency: str
    security: int = 2


@dataclass(frozen=True, slots=True)
class SetupInfo:
    unit_type: int
    firmware: str  # 4 ASCII digits, "0100" = 1.00
    country: str
    value_multiplier: int
    channels: tuple[SetupChannel, ...]
    #: Documented as "x this = minor units", but ITL's own example says 0x400000 for GBP:
    #: kept for logs, not used for values.
    real_value_multiplier: int
    protocol: int

    def encode(self) -> bytes:
        """The SETUP REQUEST payload (after 0xF0) as a unit sends it."""
        n = len(self.channels)
        mult = self.value_multiplier or 1
        out = bytearray([self.unit_type]) + _fixed(self.firmware, 4) + _fixed(self.country, 3)
        out += self.value_multiplier.to_bytes(3, "big") + bytes([n])
        # A value that does not fit the legacy byte is sent as 0 (only the expanded one tells).
        out += bytes(c.value // mult if c.value % mult == 0 and c.value // mult < 256 else 0
                     for c in self.channels)
        out += bytes(c.security for c in self.channels)
        out += self.real_value_multiplier.to_bytes(3, "big") + bytes([self.protocol])
        if self.protocol >= 6:
            out += b"".join(_fixed(c.currency, 3) for c in self.channels)
            out += b"".join(c.value.to_bytes(4, "little") for c in self.channels)
        return bytes(out)


def parse_setup_request(payload: bytes) -> SetupInfo:
    """A note validator's SETUP REQUEST payload, legacy and protocol >= 6 layouts."""
    if len(payload) < 12:
        raise ProtocolError(f"SETUP REQUEST reply too short: {payload.hex(' ')}")
    if payload[0] == 0x03:
        raise ProtocolError("SETUP REQUEST: unit type 0x03 (SMART Hopper) has another layout")
    n = payload[11]
    if len(payload) < 16 + 2 * n:
        raise ProtocolError(f"SETUP REQUEST reply too short for {n} channels: {payload.hex(' ')}")
    country = _ascii(payload[5:8])
    multiplier = int.from_bytes(payload[8:11], "big")
    legacy = payload[12:12 + n]
    security = payload[12 + n:12 + 2 * n]
    real = int.from_bytes(payload[12 + 2 * n:15 + 2 * n], "big")
    protocol = payload[15 + 2 * n]
    currencies = [country] * n
    values = [byte * multiplier for byte in legacy]
    if protocol >= 6:
        start = 16 + 2 * n
        if len(payload) < start + 7 * n:
            raise ProtocolError(f"SETUP REQUEST (protocol {protocol}) reply too short for "
                                f"{n} channels: {payload.hex(' ')}")
        currencies = [_ascii(payload[start + 3 * i:start + 3 * i + 3]) for i in range(n)]
        start += 3 * n
        values = [int.from_bytes(payload[start + 4 * i:start + 4 * i + 4], "little")
                  for i in range(n)]
    channels = tuple(SetupChannel(i + 1, values[i], currencies[i], security[i]) for i in range(n))
    return SetupInfo(payload[0], _ascii(payload[1:5]), country, multiplier, channels, real,
                     protocol)


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii", errors="replace")


def _fixed(text: str, size: int) -> bytes:
    raw = text.encode("ascii")
    if len(raw) != size:
        raise ValueError(f"{text!r} must be {size} ASCII characters")
    return raw


def parse_serial(payload: bytes) -> int:
    """GET SERIAL NUMBER payload: 4 bytes, big-endian."""
    if len(payload) != 4:
        raise ProtocolError(f"serial number reply must be 4 bytes, got {payload.hex(' ')}")
    return int.from_bytes(payload, "big")
