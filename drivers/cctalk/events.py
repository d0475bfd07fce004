"""What ccTalk event codes mean, and exactly-once accounting with the event counter (pure).

Layer: codec (no I/O), used by the driver and checked by unit tests.

229 / 159 replies carry ``[event counter]`` and the last 5 ``(A, B)`` results, newest first
(device-protocols.md §4.1). The counter counts events 1, 2, … 255, 1, 2, … (it never returns
to 0 by wrapping: 0 only after power-up or reset). So between two readings ``last`` and
``counter``::

    counter == last              nothing new (a repeated or re-sent reply: count nothing)
    counter == 0, last != 0      the device was reset: its buffer is gone, resync, count nothing
    last == 0                    counter events since the reset
    otherwise                    (counter - last) mod 255 events (255 values, 0 skipped)

Only the 5 newest are in the buffer: with more, the rest are reported lost, never guessed.

Coin error codes (A = 0): the doc lists 1 reject coin, 2 inhibited coin, 3 multiple window,
128–159 inhibited coin type 1–32, 254 coin return mechanism, 255 unspecified; the others are
from the generic spec part 3 table 2 as qt-cctalk (cctalk_enums.h, the source §4.1 cites)
has them. Codes in no table are reported by number. Bill event codes (159, A = 0): spec
table 7, likewise via qt-cctalk; the doc lists 0 master inhibit, 1 returned from escrow,
14 stacker full.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from kassad.drivers.cctalk.frames import EVENT_BUFFER_DEPTH

Outcome = Literal["rejected", "fault", "status"]


@dataclass(frozen=True, slots=True)
class Meaning:
    """How the driver reports one event code: a Rejected piece, a Fault, or only a log line."""

    name: str
    outcome: Outcome
    #: Fault.fault (stable snake_case) when outcome == "fault".
    fault: str | None = None
    #: For a fault: True = the condition started, False = the device says it cleared.
    active: bool = True


def _r(name: str) -> Meaning:
    return Meaning(name, "rejected")


def _f(name: str, fault: str, active: bool = True) -> Meaning:
    return Meaning(name, "fault", fault, active)


# "rejected": the coin went back to the customer, nothing to count, nobody to call.
# "fault": a person should look: jams (a blocked sensor), fraud attempts, coins that may have
# gone in uncredited (sorter/credit timeouts, swallowed coin) and alarms.
_COIN: dict[int, Meaning] = {
    0: Meaning("null_event", "status"),
    1: _r("reject_coin"),
    2: _r("inhibited_coin"),
    3: _r("multiple_window"),
    4: _f("wake_up_timeout", "sensor_error"),
    5: _f("validation_timeout", "sensor_error"),
    6: _f("credit_sensor_timeout", "sensor_error"),
    7: _f("sorter_opto_timeout", "sensor_error"),
    8: _r("second_close_coin"),
    9: _r("accept_gate_not_ready"),
    10: _r("credit_sensor_not_ready"),
    11: _r("sorter_not_ready"),
    12: _r("reject_coin_not_cleared"),
    13: _r("validation_sensor_not_ready"),
    14: _f("credit_sensor_blocked", "jam"),
    15: _f("sorter_opto_blocked", "jam"),
    16: _f("credit_sequence_error", "fraud_attempt"),
    17: _f("coin_going_backwards", "fraud_attempt"),
    18: _f("coin_too_fast_over_credit_sensor", "fraud_attempt"),
    19: _f("coin_too_slow_over_credit_sensor", "fraud_attempt"),
    20: _f("coin_on_string_mechanism", "fraud_attempt"),
    21: _f("dce_opto_timeout", "sensor_error"),
    22: _r("dce_opto_not_seen"),
    23: _f("credit_sensor_reached_too_early", "fraud_attempt"),
    24: _r("reject_coin_repeated_sequential_trip"),
    25: _r("reject_slug"),
    26: _f("reject_sensor_blocked", "jam"),
    27: _f("games_overload", "alarm"),
    28: _f("max_coin_meter_pulses_exceeded", "alarm"),
    29: _f("accept_gate_open_not_closed", "sensor_error"),
    30: _r("accept_gate_closed_not_open"),
    31: _f("manifold_opto_timeout", "sensor_error"),
    32: _f("manifold_opto_blocked", "jam"),
    33: _r("manifold_not_ready"),
    34: _f("security_status_changed", "alarm"),
    35: _f("motor_exception", "sensor_error"),
    36: _f("swallowed_coin", "swallowed_coin"),
    37: _r("coin_too_fast_over_validation_sensor"),
    38: _r("coin_too_slow_over_validation_sensor"),
    39: _f("coin_incorrectly_sorted", "sensor_error"),
    40: _f("external_light_attack", "fraud_attempt"),
    253: Meaning("data_block_request", "status"),
    254: _f("coin_return_mechanism_activated", "coin_return_open"),
    255: _f("unspecified_alarm", "alarm"),
}
_COIN.update({code: _r(f"inhibited_coin_type_{code - 127}") for code in range(128, 160)})
_COIN.update({code: _f(f"reserved_credit_cancelling_{code - 159}", "alarm")
              for code in range(160, 192)})
COIN_ERRORS: Mapping[int, Meaning] = _COIN

BILL_EVENTS: Mapping[int, Meaning] = {
    0: Meaning("master_inhibit_active", "status"),
    1: _r("returned_from_escrow"),
    2: _r("invalid_bill_validation_fail"),
    3: _r("invalid_bill_transport_problem"),
    4: _r("inhibited_bill_on_serial"),
    5: _r("inhibited_bill_on_dip_switches"),
    6: _f("bill_jammed_in_transport_unsafe_mode", "jam"),
    7: _f("bill_jammed_in_stacker", "jam"),
    8: _f("bill_pulled_backwards", "fraud_attempt"),
    9: _f("bill_tamper", "fraud_attempt"),
    10: _f("stacker_ok", "stacker_full", active=False),
    11: _f("stacker_removed", "stacker_removed"),
    12: _f("stacker_inserted", "stacker_removed", active=False),
    13: _f("stacker_faulty", "stacker_faulty"),
    14: _f("stacker_full", "stacker_full"),
    15: _f("stacker_jammed", "jam"),
    16: _f("bill_jammed_in_transport_safe_mode", "jam"),
    17: _f("opto_fraud_detected", "fraud_attempt"),
    18: _f("string_fraud_detected", "fraud_attempt"),
    19: _f("anti_string_mechanism_faulty", "anti_string_faulty"),
    20: _r("barcode_detected"),
    # Money in the stacker that no channel accounts for: someone must count it by hand.
    21: _f("unknown_bill_type_stacked", "unknown_bill_stacked"),
}


def coin_error(code: int) -> Meaning:
    return COIN_ERRORS.get(code) or _f(f"error_code_{code}", "unknown_error")


def bill_event(code: int) -> Meaning:
    return BILL_EVENTS.get(code) or _f(f"bill_event_code_{code}", "unknown_error")


#: 163 test hopper status bits (§4.1); bit 6 is not in the doc and is reported by number.
#: Bit 7 (payout disabled) is a fault only while the driver wants the hopper enabled.
HOPPER_BITS: Mapping[int, str] = {
    0: "max_current_exceeded",
    1: "payout_timeout",
    2: "motor_reversed",
    3: "opto_fraud_path_blocked",
    4: "opto_fraud_short_circuit",
    5: "payout_blocked",
    7: "payout_disabled",
}


def hopper_faults(bits: int) -> frozenset[str]:
    """The fault names of the set bits of a 163 status byte (unknown bits by number)."""
    return frozenset(HOPPER_BITS.get(bit, f"status_bit_{bit}")
                     for bit in range(8) if bits >> bit & 1)


# -- the event counter ----------------------------------------------------------------------


def new_event_count(last: int, counter: int) -> int:
    """Events between two readings of a counter that runs 1..255 and wraps to 1 (0 = reset).

    ``counter`` 0 is the caller's to handle (a reset); from ``last`` 0 (just reset) every
    value 1..counter is new.
    """
    if not (0 <= last <= 255 and 0 <= counter <= 255):
        msg = f"event counters are bytes, got {last}, {counter}"
        raise ValueError(msg)
    if counter == 0:
        return 0
    if last == 0:
        return counter
    return (counter - last) % 255


@dataclass(frozen=True, slots=True)
class EventUpdate:
    """What one 229 / 159 reading adds."""

    counter: int
    #: New results, oldest first (the order they happened in).
    new: tuple[tuple[int, int], ...] = ()
    #: Events that happened but are no longer in the 5-deep buffer.
    lost: int = 0
    #: The counter went back to 0: the device was reset or power-cycled.
    reset: bool = False
    #: The first reading: it only sets where counting starts.
    baseline: bool = False


class EventTracker:
    """Feeds successive readings and says exactly which results are new.

    ``last`` is the counter last accounted for: None before the first reading (nothing in
    the buffer then is counted, since an earlier run may already have counted it), or a
    value the daemon persisted to resume exactly where it stopped.
    """

    def __init__(self, last: int | None = None) -> None:
        self.last = last

    def update(self, counter: int, results: Sequence[tuple[int, int]]) -> EventUpdate:
        last = self.last
        self.last = counter
        if last is None:
            return EventUpdate(counter, baseline=True)
        if counter == last:
            return EventUpdate(counter)
        if counter == 0:
            return EventUpdate(counter, reset=True)
        count = new_event_count(last, counter)
        depth = min(len(results), EVENT_BUFFER_DEPTH)
        known = min(count, depth)
        return EventUpdate(counter, tuple(reversed(results[:known])), lost=count - known)
