"""SSP POLL events: the codes, their parameters, and the POLL reply payload both ways.

Layer: frames (pure, no I/O); re-exported by kassad.drivers.ssp.frames. Facts from
device-protocols.md §4.2 (ITL ``ssp_defines.h``).

POLL reply payload (after the 0xF0 status): events back to back, ``code [data]``::

    read 0xEF, credit 0xEE, fraud 0xE6,       1 byte channel (read: 0 while still reading)
    cleared from front 0xE1 / into cashbox 0xE2
    value-carrying (payout) events            protocol >= 6: [n] n x (4-byte LE value +
                                              3 ASCII currency); before 6: one 4-byte value
    incomplete payout 0xDC / float 0xDD       the same with 4-byte dispensed + 4-byte requested
    coin credit 0xDF                          4-byte value (+ 3 ASCII currency from 6 on)
    everything else                           no data

An unknown code ends the parse: its data length is unknown, so nothing after it can be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from kassad.drivers.errors import ProtocolError


class EventCode(IntEnum):
    SLAVE_RESET = 0xF1
    READ = 0xEF
    CREDIT = 0xEE
    REJECTING = 0xED
    REJECTED = 0xEC
    STACKED = 0xEB
    SAFE_JAM = 0xEA
    UNSAFE_JAM = 0xE9
    DISABLED = 0xE8
    STACKER_FULL = 0xE7
    FRAUD_ATTEMPT = 0xE6
    BARCODE_VALIDATED = 0xE5
    CASHBOX_REPLACED = 0xE4
    CASHBOX_REMOVED = 0xE3
    NOTE_CLEARED_INTO_CASHBOX = 0xE2
    NOTE_CLEARED_FROM_FRONT = 0xE1
    NOTE_PATH_OPEN = 0xE0
    COIN_CREDIT = 0xDF
    CASHBOX_PAID = 0xDE
    INCOMPLETE_FLOAT = 0xDD
    INCOMPLETE_PAYOUT = 0xDC
    NOTE_STORED = 0xDB
    DISPENSING = 0xDA
    TIMEOUT = 0xD9
    FLOATED = 0xD8
    FLOATING = 0xD7
    HALTED = 0xD6
    PAYOUT_JAMMED = 0xD5
    COINS_EMPTY = 0xD4
    COINS_LOW = 0xD3
    DISPENSED = 0xD2
    BARCODE_ACK = 0xD1
    STACKING = 0xCC
    EMPTY = 0xC3
    EMPTYING = 0xC2
    INITIALISING = 0xB6
    CHANNEL_DISABLE = 0xB5
    SMART_EMPTIED = 0xB4
    SMART_EMPTYING = 0xB3


_CHANNEL_EVENTS = frozenset({EventCode.READ, EventCode.CREDIT, EventCode.FRAUD_ATTEMPT,
                             EventCode.NOTE_CLEARED_FROM_FRONT,
                             EventCode.NOTE_CLEARED_INTO_CASHBOX})
_VALUE_EVENTS = frozenset({EventCode.DISPENSING, EventCode.DISPENSED, EventCode.PAYOUT_JAMMED,
                           EventCode.HALTED, EventCode.FLOATING, EventCode.FLOATED,
                           EventCode.TIMEOUT, EventCode.CASHBOX_PAID, EventCode.SMART_EMPTYING,
                           EventCode.SMART_EMPTIED})
_INCOMPLETE_EVENTS = frozenset({EventCode.INCOMPLETE_PAYOUT, EventCode.INCOMPLETE_FLOAT})
_BARE_EVENTS = frozenset(EventCode) - _CHANNEL_EVENTS - _VALUE_EVENTS - _INCOMPLETE_EVENTS \
    - {EventCode.COIN_CREDIT}


@dataclass(frozen=True, slots=True)
class Amount:
    """A value in the device's units for ``currency``; ``requested`` for incomplete payouts."""

    value: int
    currency: str = ""
    requested: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    code: int
    channel: int | None = None  # read (0 = still reading), credit, fraud, cleared notes
    amounts: tuple[Amount, ...] = ()
    #: An event this codec does not know: its code and every byte after it, unparsed.
    raw: bytes = b""

    @property
    def name(self) -> str:
        try:
            return EventCode(self.code).name.lower()
        except ValueError:
            return f"unknown_{self.code:#04x}"

    def encode(self, protocol: int) -> bytes:
        out = bytearray([self.code])
        if self.raw:
            return bytes(out + self.raw)
        if self.code in _CHANNEL_EVENTS:
            out.append(self.channel or 0)
        elif self.code in _VALUE_EVENTS or self.code in _INCOMPLETE_EVENTS \
                or self.code == EventCode.COIN_CREDIT:
            incomplete = self.code in _INCOMPLETE_EVENTS
            many = protocol >= 6 and self.code != EventCode.COIN_CREDIT
            if many:
                out.append(len(self.amounts))
            for amount in self.amounts if many else self.amounts[:1]:
                out += amount.value.to_bytes(4, "little")
                if incomplete:
                    out += (amount.requested or 0).to_bytes(4, "little")
                if protocol >= 6:
                    out += amount.currency.encode("ascii")
        return bytes(out)


def parse_poll(payload: bytes, protocol: int = 6) -> list[Event]:
    """The events of a POLL reply's payload, in order. An unknown code ends the parse (its
    data length is unknown): it comes back as one Event with the rest in ``raw``."""
    events: list[Event] = []
    pos = 0
    while pos < len(payload):
        code = payload[pos]
        pos += 1
        if code in _CHANNEL_EVENTS:
            _need(payload, pos, 1, code)
            events.append(Event(code, channel=payload[pos]))
            pos += 1
        elif code in _BARE_EVENTS:
            events.append(Event(code))
        elif code in _VALUE_EVENTS or code in _INCOMPLETE_EVENTS or code == EventCode.COIN_CREDIT:
            amounts, pos = _amounts(payload, pos, code, protocol)
            events.append(Event(code, amounts=amounts))
        else:
            events.append(Event(code, raw=payload[pos:]))
            break
    return events


def _amounts(payload: bytes, pos: int, code: int, protocol: int) -> tuple[tuple[Amount, ...], int]:
    incomplete = code in _INCOMPLETE_EVENTS
    size = 4 + (4 if incomplete else 0) + (3 if protocol >= 6 else 0)
    count = 1
    if protocol >= 6 and code != EventCode.COIN_CREDIT:
        _need(payload, pos, 1, code)
        count, pos = payload[pos], pos + 1
    _need(payload, pos, count * size, code)
    amounts = []
    for _ in range(count):
        value = int.from_bytes(payload[pos:pos + 4], "little")
        requested = int.from_bytes(payload[pos + 4:pos + 8], "little") if incomplete else None
        end = pos + size
        currency = _ascii(payload[end - 3:end]) if protocol >= 6 else ""
        amounts.append(Amount(value, currency, requested))
        pos = end
    return tuple(amounts), pos


def _need(payload: bytes, pos: int, count: int, code: int) -> None:
    if pos + count > len(payload):
        msg = (f"SSP event {code:#04x} cut short: needs {count} byte(s) at {pos} of "
               f"{payload.hex(' ')}")
        raise ProtocolError(msg)


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii", errors="replace")


#: LAST REJECT CODE (0x17) reply byte -> stable snake_case reason (ITL reject code table).
REJECT_REASONS: dict[int, str] = {
    0x00: "note_accepted", 0x01: "length_fail", 0x02: "not_recognised",
    0x03: "not_recognised", 0x04: "not_recognised", 0x05: "not_recognised",
    0x06: "channel_inhibited", 0x07: "second_note_inserted", 0x08: "rejected_by_host",
    0x09: "cross_channel", 0x0A: "rear_sensor_error", 0x0B: "note_too_long",
    0x0C: "disabled_by_host", 0x0D: "slow_mechanism", 0x0E: "strimming_attempt",
    0x0F: "fraud_channel", 0x10: "no_notes_detected", 0x11: "not_recognised",
    0x12: "twisted_note", 0x13: "escrow_timeout", 0x14: "bar_code_scan_fail",
    0x15: "no_cam_activate", 0x16: "slot_fail", 0x17: "slot_fail", 0x18: "lens_oversample",
    0x19: "width_detection_fail", 0x1A: "short_note", 0x1B: "payout_note",
    0x1C: "double_note", 0x1D: "unable_to_stack",
}
