"""ccTalk codec: the verified frames of device-protocols.md §4.1 byte for byte, round trips,
the stream reader's resync, reply payloads, ids, and the event-counter arithmetic."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kassad.drivers.cctalk.events import (
    EventTracker,
    bill_event,
    coin_error,
    hopper_faults,
    new_event_count,
)
from kassad.drivers.cctalk.frames import (
    ADDR_HOST,
    MAX_FRAME,
    Frame,
    FrameError,
    FrameReader,
    HopperStatus,
    buffered_credit_payload,
    checksum,
    coin_value_code,
    crc16_ccitt,
    decode,
    encode,
    inhibit_mask,
    is_empty_id,
    mask_channels,
    parse_bill_id,
    parse_buffered_credit,
    parse_coin_id,
    parse_hopper_status,
    parse_scaling,
    parse_serial,
)


def _diff(got: bytes, want: bytes) -> str:
    return f"got  {got.hex(' ')}\nwant {want.hex(' ')}"


# ---- the doc's verified frames ---------------------------------------------------------------

VERIFIED_CHECKSUM = [
    (Frame(2, 1, 254), [2, 0, 1, 254, 255]),                      # simple poll -> 2
    (Frame(1, 2, 0), [1, 0, 2, 0, 253]),                          # its ACK
    (Frame(2, 1, 245), [2, 0, 1, 245, 8]),                        # equipment category
    (Frame(1, 2, 0, b"Coin Acceptor"), [1, 13, 2, 0, *b"Coin Acceptor", 22]),
    (Frame(2, 1, 231, b"\xff\xff"), [2, 2, 1, 231, 255, 255, 22]),  # all 16 enabled
    (Frame(2, 1, 228, b"\x01"), [2, 1, 1, 228, 1, 23]),           # master: accept
    (Frame(2, 1, 228, b"\x00"), [2, 1, 1, 228, 0, 24]),           # master: inhibit
    (Frame(2, 1, 229), [2, 0, 1, 229, 24]),                       # read buffered credit
    (Frame(3, 1, 254), [3, 0, 1, 254, 254]),                      # simple poll -> hopper
    (Frame(3, 1, 164, b"\xa5"), list(bytes.fromhex("03 01 01 a4 a5 b2"))),  # enable hopper
    (Frame(1, 3, 0), list(bytes.fromhex("01 00 03 00 fc"))),      # its ACK
    (Frame(3, 1, 167, bytes.fromhex("df d7 0a 01")),              # dispense 1 coin by serial
     list(bytes.fromhex("03 04 01 a7 df d7 0a 01 90"))),
]


@pytest.mark.parametrize(("frame", "wire"), VERIFIED_CHECKSUM,
                         ids=[f"{f.dest}-{f.header}-{len(f.data)}" for f, _ in VERIFIED_CHECKSUM])
def test_verified_checksum_frames(frame: Frame, wire: list[int]) -> None:
    got = encode(frame)
    assert got == bytes(wire), _diff(got, bytes(wire))
    assert sum(got) % 256 == 0
    assert decode(got) == frame


def test_verified_crc_frames() -> None:
    poll = encode(Frame(40, ADDR_HOST, 254), crc=True)
    assert poll == bytes([40, 0, 182, 254, 33]), _diff(poll, bytes([40, 0, 182, 254, 33]))
    reply = encode(Frame(ADDR_HOST, 40, 0), crc=True)
    assert reply == bytes([1, 0, 48, 0, 55]), _diff(reply, bytes([1, 0, 48, 0, 55]))
    assert crc16_ccitt(bytes([40, 0, 254])) == 33 << 8 | 182
    # The source is not on the wire: the receiver supplies it.
    assert decode(reply, crc=True, src=40) == Frame(ADDR_HOST, 40, 0)
    reader = FrameReader(crc=True)
    reader.peer = 40
    assert reader.feed(poll + reply) == [Frame(40, ADDR_HOST, 254), Frame(ADDR_HOST, 40, 0)]


def test_crc_check_vector() -> None:
    assert crc16_ccitt(b"123456789") == 0x31C3  # CRC-16/XMODEM: poly 0x1021, init 0


def test_decode_rejects_bad_frames() -> None:
    good = encode(Frame(2, 1, 229))
    with pytest.raises(FrameError, match="checksum"):
        decode(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(FrameError, match="not one"):
        decode(good[:-1])
    with pytest.raises(FrameError, match="CRC"):
        decode(bytes([40, 0, 183, 254, 33]), crc=True)
    with pytest.raises(ValueError, match="255"):
        Frame(2, 1, 0, bytes(256))
    with pytest.raises(ValueError, match="dest"):
        Frame(256, 1, 0)
    with pytest.raises(FrameError):
        decode(bytes(5))  # sums to 0, but nobody sends from address 0


# ---- round trips ------------------------------------------------------------------------------

# Source 0 (broadcast) never sends: the checksum reader refuses it (see the zeros test).
frames = st.builds(Frame, st.integers(0, 255), st.integers(1, 255), st.integers(0, 255),
                   st.binary(max_size=255))


def _crc_frame(frame: Frame, peer: int) -> Frame:
    """What a CRC reader can know: the source is the peer for frames to the host, else host."""
    return Frame(frame.dest, peer if frame.dest == ADDR_HOST else ADDR_HOST, frame.header,
                 frame.data)


@given(st.lists(frames, min_size=1, max_size=5), st.booleans(), st.data())
def test_reader_round_trip_any_chunking(batch: list[Frame], crc: bool,
                                        data: st.DataObject) -> None:
    peer = 40
    wire = b"".join(encode(f, crc) for f in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    reader = FrameReader(crc=crc)
    reader.peer = peer
    got: list[Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += reader.feed(wire[start:end])
    want = [_crc_frame(f, peer) for f in batch] if crc else batch
    assert got == want
    assert reader.pending == 0 and reader.garbage == 0


def test_reader_byte_at_a_time() -> None:
    wire = encode(Frame(1, 2, 0, bytes(range(11)))) + encode(Frame(1, 2, 0))
    reader = FrameReader()
    got = [frame for byte in wire for frame in reader.feed(bytes([byte]))]
    assert got == [Frame(1, 2, 0, bytes(range(11))), Frame(1, 2, 0)]


REPLY = encode(Frame(1, 2, 0, buffered_credit_payload(7, [(1, 0), (0, 2)])))


@pytest.mark.parametrize("garbage", [
    b"\xff",
    b"\x00\x00\x00",
    bytes(range(0x10, 0x30)),
    REPLY[:-1] + bytes([REPLY[-1] ^ 0x80]),   # a whole frame with a bad checksum
    REPLY[:7],                                # a frame cut short
], ids=["one-byte", "zeros", "ramp", "bad-checksum", "truncated"])
def test_reader_resyncs_after_garbage(garbage: bytes) -> None:
    reader = FrameReader()
    got = reader.feed(garbage + REPLY)
    got += reader.expire()  # the line went quiet
    assert got == [decode(REPLY)]
    assert reader.pending == 0
    assert reader.garbage == len(garbage)


def test_zero_run_is_not_a_frame() -> None:
    reader = FrameReader()
    assert reader.feed(bytes(12) + REPLY) == [decode(REPLY)]
    assert reader.garbage == 12


def test_reader_long_length_byte_waits_for_the_gap_then_resyncs() -> None:
    # "01 c8" looks like the start of a 205-byte frame: the real reply behind it is only found
    # once the line goes quiet (the inter-byte timeout) and the stale head is dropped.
    reader = FrameReader()
    assert reader.feed(b"\x01\xc8" + REPLY) == []
    assert reader.pending == 2 + len(REPLY)
    assert reader.expire() == [decode(REPLY)]
    assert reader.garbage == 2


def test_reader_buffer_is_capped() -> None:
    reader = FrameReader()
    for _ in range(40):
        reader.feed(b"\x01\xff" + bytes(254))  # endless "255 data bytes" heads, bad checksum
        assert reader.pending < MAX_FRAME + 256
    reader.feed(bytes(10_000))
    assert reader.pending < MAX_FRAME + 256


def test_reset_drops_and_counts() -> None:
    reader = FrameReader(crc=True)
    reader.feed(b"\x01\x05\x00")
    assert reader.reset(peer=2) == 3
    assert reader.garbage == 3 and reader.pending == 0 and reader.peer == 2


# ---- payloads -----------------------------------------------------------------------------------

@given(st.integers(0, 255), st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)),
                                     max_size=5))
def test_buffered_credit_round_trip(counter: int, events: list[tuple[int, int]]) -> None:
    payload = buffered_credit_payload(counter, events)
    assert len(payload) == 11
    got_counter, pairs = parse_buffered_credit(payload)
    assert got_counter == counter
    assert pairs == events + [(0, 0)] * (5 - len(events))


def test_buffered_credit_rejects_bad_lengths() -> None:
    for bad in (b"", b"\x01", b"\x01\x02"):
        with pytest.raises(FrameError):
            parse_buffered_credit(bad)


def test_other_payloads() -> None:
    assert parse_hopper_status(bytes([4, 2, 1, 0])) == HopperStatus(4, 2, 1, 0)
    assert HopperStatus(4, 2, 1, 0).payload() == bytes([4, 2, 1, 0])
    assert parse_serial(bytes.fromhex("df d7 0a")) == 0x0AD7DF
    assert parse_scaling(bytes([100, 0, 2])) == (100, 2)
    assert parse_scaling(bytes(3)) is None
    assert inhibit_mask([1, 2, 3, 4, 16]) == bytes([0x0F, 0x80])
    assert inhibit_mask(range(1, 17)) == b"\xff\xff"
    assert mask_channels(b"\x0f\x80") == frozenset({1, 2, 3, 4, 16})
    with pytest.raises(ValueError, match=r"1\.\.16"):
        inhibit_mask([0])
    with pytest.raises(FrameError):
        parse_hopper_status(b"\x01")


@pytest.mark.parametrize(("code", "value"), [
    ("005", 5), ("100", 100), ("1K0", 1000), ("2K5", 2500), ("10K", 10_000), ("M50", 500_000),
    ("1M0", 1_000_000), ("G10", 100_000_000), (".05", None), ("5m0", None), ("ABC", None)])
def test_coin_value_codes(code: str, value: int | None) -> None:
    assert coin_value_code(code) == value


def test_coin_and_bill_ids() -> None:
    sek = parse_coin_id("SE1K0A")
    assert (sek.currency, sek.value_minor, sek.country, sek.issue) == ("SEK", 1000, "SE", "A")
    assert parse_coin_id("EU200A").value_minor == 200
    assert parse_coin_id("GB005B").value_minor == 5
    # Unknown country or form: label only, never a guessed value.
    assert parse_coin_id("HU100A").value_minor is None
    assert parse_coin_id("HU100A").currency is None
    assert parse_coin_id("weird!").label == "weird!"
    assert parse_coin_id("HU100A", {"HU": "HUF"}).value_minor == 100
    assert parse_bill_id("SE0020A", (100, 2)).value_minor == 2000
    assert parse_bill_id("EU0005A", (1, 0)).value_minor == 500
    assert parse_bill_id("SE0020A", None).value_minor is None
    assert is_empty_id("......") and is_empty_id("") and is_empty_id("   ")
    assert not is_empty_id("SE100A")


def test_event_meanings() -> None:
    assert coin_error(1).outcome == "rejected"
    assert coin_error(2).name == "inhibited_coin"
    assert coin_error(130).name == "inhibited_coin_type_3"
    assert coin_error(14).fault == "jam"
    assert coin_error(20).fault == "fraud_attempt"
    assert coin_error(254).fault == "coin_return_open"
    assert coin_error(99).name == "error_code_99"  # unknown: by number
    assert coin_error(0).outcome == "status"
    assert bill_event(14).fault == "stacker_full"
    assert bill_event(10).fault == "stacker_full" and not bill_event(10).active
    assert bill_event(1).outcome == "rejected"
    assert bill_event(77).name == "bill_event_code_77"
    assert hopper_faults(0b1010_0011) == {"max_current_exceeded", "payout_timeout",
                                          "payout_blocked", "payout_disabled"}
    assert hopper_faults(0b0100_0000) == {"status_bit_6"}


def test_checksum_makes_the_sum_zero() -> None:
    assert (sum(b"\x02\x00\x01\xfe") + checksum(b"\x02\x00\x01\xfe")) % 256 == 0


# ---- the event counter ---------------------------------------------------------------------------

@pytest.mark.parametrize(("last", "counter", "new"), [
    (5, 5, 0), (5, 6, 1), (5, 10, 5), (254, 255, 1), (255, 1, 1), (254, 2, 3), (253, 1, 3),
    (0, 1, 1), (0, 4, 4), (1, 255, 254), (7, 0, 0)])
def test_new_event_count(last: int, counter: int, new: int) -> None:
    assert new_event_count(last, counter) == new


def test_tracker_baseline_repeat_wrap_lost_reset() -> None:
    tracker = EventTracker()
    first = tracker.update(254, [(1, 0)] * 5)
    assert first.baseline and first.new == ()        # what was there before us: not counted
    assert tracker.update(254, [(1, 0)] * 5).new == ()  # the same reply again: nothing
    wrapped = tracker.update(1, [(3, 0), (2, 0), (1, 0), (0, 0), (0, 0)])  # 255, then 1
    assert wrapped.new == ((2, 0), (3, 0)) and wrapped.lost == 0  # oldest first
    lost = tracker.update(9, [(5, 0), (4, 0), (3, 0), (2, 0), (1, 0)])
    assert lost.lost == 3 and lost.new == ((1, 0), (2, 0), (3, 0), (4, 0), (5, 0))
    reset = tracker.update(0, [(0, 0)] * 5)
    assert reset.reset and reset.new == ()
    after = tracker.update(2, [(4, 0), (3, 0), (0, 0), (0, 0), (0, 0)])
    assert after.new == ((3, 0), (4, 0))  # from 0, every value is new


def test_tracker_resumes_from_a_persisted_counter() -> None:
    tracker = EventTracker(last=10)
    update = tracker.update(12, [(2, 0), (1, 0), (9, 9), (9, 9), (9, 9)])
    assert not update.baseline and update.new == ((1, 0), (2, 0))


@given(st.integers(0, 255), st.lists(st.integers(0, 7), max_size=120), st.integers(0, 2))
def test_tracker_counts_every_event_exactly_once(start: int, bursts: list[int],
                                                 repeats: int) -> None:
    """A device model with the 255 -> 1 wrap; events in bursts between polls, some polls
    repeated. Bursts of at most 5 are counted exactly; bigger ones lose exactly the excess."""
    counter, buffer = start, deque[tuple[int, int]](maxlen=5)
    serial = 0
    tracker = EventTracker()
    tracker.update(counter, list(buffer))
    happened: list[tuple[int, int]] = []
    seen: list[tuple[int, int]] = []
    lost = 0
    for burst in bursts:
        for _ in range(burst):
            serial += 1
            event = (serial % 255 + 1, serial // 255 % 256)
            counter = counter % 255 + 1
            buffer.appendleft(event)
            happened.append(event)
        results = list(buffer) + [(0, 0)] * (5 - len(buffer))
        for _ in range(1 + repeats):
            update = tracker.update(counter, results)
            seen += update.new
            lost += update.lost
    assert lost == sum(max(0, burst - 5) for burst in bursts)
    kept = [e for i, e in enumerate(happened) if i not in _lost_indices(bursts)]
    assert seen == kept


def _lost_indices(bursts: list[int]) -> set[int]:
    lost: set[int] = set()
    index = 0
    for burst in bursts:
        lost.update(range(index, index + max(0, burst - 5)))  # the oldest of a big burst
        index += burst
    return lost
