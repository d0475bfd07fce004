"""What an SSP note validator does with each command: the simulator's state machine, no I/O.

The packet layer (sequence bit, repeats, the pty, injected faults) is in device.py; this
module only turns (command, parameters) into a reply DATA (status + payload) with the
driver's own codec (kassad.drivers.ssp.frames: one codec, two roles).

A note goes through the stages a real unit reports, one per executed POLL::

    accepted channel   READ 0 | READ ch | STACKING | CREDIT ch, STACKING | STACKED
    inhibited / bad    READ 0 | REJECTING | REJECTED      (LAST REJECT CODE then tells why)

Conditions are repeated in every POLL while they last: SAFE/UNSAFE JAM (notes in flight stay
where they are), STACKER FULL, CASHBOX REMOVED, DISABLED while not enabled. One-shot events
(SLAVE RESET after power-up, FRAUD, CASHBOX REPLACED) go out in the next POLL only.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from kassad.drivers.ssp.frames import (
    Command,
    Event,
    EventCode,
    SetupChannel,
    SetupInfo,
    Status,
)

JamKind = Literal["safe", "unsafe"]
#: LAST REJECT CODE values the simulator uses.
REJECT_NOT_RECOGNISED = 0x02
REJECT_DISABLED_BY_HOST = 0x0C

SEK = (("SEK", 20), ("SEK", 50), ("SEK", 100), ("SEK", 200), ("SEK", 500), ("SEK", 1000))
EUR = tuple(("EUR", v) for v in (5, 10, 20, 50, 100, 200, 500))


@dataclass(frozen=True, slots=True)
class _Stage:
    events: tuple[Event, ...]
    reject_code: int | None = None  # becomes LAST REJECT CODE when this stage is reported


class ValidatorUnit:
    """One note validator's firmware, as far as the host can see it."""

    def __init__(self, channels: tuple[tuple[str, int], ...] = SEK, *, serial: int = 12345678,
                 firmware: str = "0100", unit_type: int = 0x00, min_protocol: int = 6,
                 max_protocol: int = 8, default_protocol: int = 6) -> None:
        if not channels or len(channels) > 24:
            raise ValueError("a validator has 1 to 24 channels")
        self.channels = channels
        self.serial = serial
        self.firmware = firmware
        self.unit_type = unit_type
        self.min_protocol, self.max_protocol = min_protocol, max_protocol
        self.default_protocol = default_protocol
        self.protocol = default_protocol
        self.enabled = False
        self.inhibits = 0  # bit (channel - 1) set = channel accepted
        self.jammed: JamKind | None = None
        self.stacker_is_full = False
        self.cashbox_out = False
        self.last_reject_code = 0
        #: Channels the unit reported a CREDIT for, in order: the truth a host must match.
        self.credited: list[int] = []
        #: Notes refused at the bezel (unit disabled, stacker full, cashbox out).
        self.refused = 0
        self.polls = 0
        self._stages: deque[_Stage] = deque()
        self._oneshot: list[Event] = [Event(EventCode.SLAVE_RESET)]  # as after power-up

    # -- what happens to the unit -----------------------------------------------------------

    def insert_note(self, channel: int) -> bool:
        """A note of ``channel`` is inserted; False if the unit does not take it in."""
        if not 1 <= channel <= len(self.channels):
            raise ValueError(f"channel must be 1..{len(self.channels)}, got {channel}")
        if not self._takes_notes():
            self.refused += 1
            return False
        if self.inhibits >> (channel - 1) & 1:
            self._stages += [_Stage((Event(EventCode.READ, channel=0),)),
                             _Stage((Event(EventCode.READ, channel=channel),)),
                             _Stage((Event(EventCode.STACKING),)),
                             _Stage((Event(EventCode.CREDIT, channel=channel),
                                     Event(EventCode.STACKING))),
                             _Stage((Event(EventCode.STACKED),))]
        else:
            self._rejected(REJECT_DISABLED_BY_HOST)
        return True

    def reject(self, code: int = REJECT_NOT_RECOGNISED) -> bool:
        """A note the unit does not recognise (``code``: its LAST REJECT CODE)."""
        if not self._takes_notes():
            self.refused += 1
            return False
        self._rejected(code)
        return True

    def jam(self, kind: JamKind | None) -> None:
        """Jam (notes in flight stop moving) or, with None, clear it."""
        if kind not in (None, "safe", "unsafe"):
            raise ValueError(f"jam kind must be 'safe', 'unsafe' or None, not {kind!r}")
        self.jammed = kind

    def stacker_full(self, on: bool = True) -> None:
        self.stacker_is_full = on

    def fraud_attempt(self, channel: int) -> None:
        self._oneshot.append(Event(EventCode.FRAUD_ATTEMPT, channel=channel))

    def cashbox_removed(self) -> None:
        self.cashbox_out = True

    def cashbox_replaced(self) -> None:
        """Put back (emptied): stacker no longer full."""
        self.cashbox_out = self.stacker_is_full = False
        self._oneshot.append(Event(EventCode.CASHBOX_REPLACED))

    def self_disable(self) -> None:
        """The unit disables itself (its poll watchdog, an internal error)."""
        self.enabled = False

    def power_on(self) -> None:
        """Power-up or RESET: configuration gone, SLAVE RESET in the next POLL."""
        self.protocol = self.default_protocol
        self.enabled = False
        self.inhibits = 0
        self.jammed = None
        self.last_reject_code = 0
        self._stages.clear()
        self._oneshot = [Event(EventCode.SLAVE_RESET)]

    # -- commands ---------------------------------------------------------------------------

    def execute(self, command: int, params: bytes) -> bytes:
        """The reply DATA (status + payload) to one command."""
        bare = {Command.POLL, Command.SETUP_REQUEST, Command.ENABLE, Command.DISABLE,
                Command.GET_SERIAL_NUMBER, Command.LAST_REJECT_CODE, Command.DISPLAY_ON,
                Command.DISPLAY_OFF, Command.REJECT, Command.HOLD, Command.SYNC, Command.RESET}
        if command in bare and params:
            return bytes([Status.WRONG_PARAMETERS])
        ok = bytes([Status.OK])
        if command == Command.POLL:
            return ok + self._poll()
        if command == Command.HOST_PROTOCOL_VERSION:
            if len(params) != 1:
                return bytes([Status.WRONG_PARAMETERS])
            if not self.min_protocol <= params[0] <= self.max_protocol:
                return bytes([Status.FAIL])
            self.protocol = params[0]
            return ok
        if command == Command.SETUP_REQUEST:
            return ok + self.setup_info().encode()
        if command == Command.SET_INHIBITS:
            if len(params) not in (2, 3):
                return bytes([Status.WRONG_PARAMETERS])
            self.inhibits = int.from_bytes(params, "little")
            return ok
        if command in (Command.ENABLE, Command.DISABLE):
            self.enabled = command == Command.ENABLE
            return ok
        if command == Command.GET_SERIAL_NUMBER:
            return ok + self.serial.to_bytes(4, "big")
        if command == Command.LAST_REJECT_CODE:
            return ok + bytes([self.last_reject_code])
        if command in (Command.DISPLAY_ON, Command.DISPLAY_OFF, Command.REJECT, Command.HOLD,
                       Command.SYNC, Command.RESET):
            return ok  # RESET's reboot is done by the packet layer, after the reply
        return bytes([Status.UNKNOWN_COMMAND])

    def setup_info(self) -> SetupInfo:
        values = [value for _, value in self.channels]
        multiplier = math.gcd(*values)  # legacy 1-byte values: as small as they go
        return SetupInfo(
            unit_type=self.unit_type, firmware=self.firmware, country=self.channels[0][0],
            value_multiplier=multiplier,
            channels=tuple(SetupChannel(i + 1, value, currency)
                           for i, (currency, value) in enumerate(self.channels)),
            real_value_multiplier=100, protocol=self.protocol)

    # -- internals --------------------------------------------------------------------------

    def _takes_notes(self) -> bool:
        return self.enabled and not self.stacker_is_full and not self.cashbox_out

    def _rejected(self, code: int) -> None:
        self._stages += [_Stage((Event(EventCode.READ, channel=0),)),
                         _Stage((Event(EventCode.REJECTING),)),
                         _Stage((Event(EventCode.REJECTED),), reject_code=code)]

    def _poll(self) -> bytes:
        self.polls += 1
        events, self._oneshot = self._oneshot, []
        if self._stages and self.jammed is None:
            stage = self._stages.popleft()
            events = events + list(stage.events)
            if stage.reject_code is not None:
                self.last_reject_code = stage.reject_code
            self.credited += [e.channel or 0 for e in stage.events if e.code == EventCode.CREDIT]
        if self.jammed is not None:
            code = EventCode.SAFE_JAM if self.jammed == "safe" else EventCode.UNSAFE_JAM
            events.append(Event(code))
        if self.stacker_is_full:
            events.append(Event(EventCode.STACKER_FULL))
        if self.cashbox_out:
            events.append(Event(EventCode.CASHBOX_REMOVED))
        if not self.enabled:
            events.append(Event(EventCode.DISABLED))
        return b"".join(e.encode(self.protocol) for e in events)

    def snapshot(self) -> dict[str, object]:
        return {"protocol": self.protocol, "enabled": self.enabled,
                "inhibits": f"{self.inhibits:#06x}", "jammed": self.jammed,
                "stacker_full": self.stacker_is_full, "cashbox_removed": self.cashbox_out,
                "credited": list(self.credited), "refused": self.refused, "polls": self.polls,
                "stages_pending": len(self._stages)}
