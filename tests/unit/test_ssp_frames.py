"""The SSP codec against the verified packets of device-protocols.md §4.2, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kassad.drivers.errors import ProtocolError
from kassad.drivers.ssp.frames import (
    MAX_BODY,
    Amount,
    Command,
    Event,
    EventCode,
    Packet,
    PacketReader,
    SetupChannel,
    SetupInfo,
    Status,
    crc16_cms,
    parse_poll,
    parse_serial,
    parse_setup_request,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def assert_wire(actual: bytes, expected: bytes) -> None:
    assert actual == expected, f"\n got  {actual.hex(' ')}\n want {expected.hex(' ')}"


# (address, seq, DATA, wire) — the table "Verified packets [V]" of §4.2.
VERIFIED = [
    pytest.param(0, True, bytes([Command.SYNC]), "7F 80 01 11 65 82", id="sync"),
    pytest.param(0, False, bytes([Command.RESET]), "7F 00 01 01 05 88", id="reset-seq0"),
    pytest.param(0, True, bytes([Command.POLL]), "7F 80 01 07 12 02", id="poll-seq1"),
    pytest.param(0, False, bytes([Command.POLL]), "7F 00 01 07 11 88", id="poll-seq0"),
    pytest.param(0, True, bytes([Command.SETUP_REQUEST]), "7F 80 01 05 1D 82", id="setup"),
    pytest.param(0, True, h("06 08"), "7F 80 02 06 08 03 94", id="host-protocol-8"),
    pytest.param(0, True, bytes([Status.OK]), "7F 80 01 F0 23 80", id="ok"),
    pytest.param(0, True, h("06 09"), "7F 80 02 06 09 06 14", id="host-protocol-9"),
    pytest.param(0, True, bytes([Status.FAIL]), "7F 80 01 F8 10 00", id="fail"),
    pytest.param(0, True, bytes([Command.ENABLE]), "7F 80 01 0A 3F 82", id="enable-seq1"),
    pytest.param(0, False, bytes([Command.DISABLE]), "7F 00 01 09 36 08", id="disable-seq0"),
    pytest.param(0, True, h("02 FF FF"), "7F 80 03 02 FF FF 25 A4", id="set-inhibits-all"),
    pytest.param(0, True, h("F0 EE 02"), "7F 80 03 F0 EE 02 C3 CC", id="poll-reply-credit-2"),
]

ITL_SETUP_EXAMPLE = h("7F 80 17 F0 00 30 31 30 30 47 42 50 00 00 01 03 05 0A 14 02 02 02 40 00 "
                      "00 05 61 81")


def test_crc_check_value() -> None:
    assert crc16_cms(b"123456789") == 0xAEE7


@pytest.mark.parametrize(("address", "seq", "data", "wire"), VERIFIED)
def test_verified_packets_encode_and_decode(address: int, seq: bool, data: bytes,
                                            wire: str) -> None:
    packet = Packet(address, seq, data)
    assert_wire(packet.encode(), h(wire))
    reader = PacketReader()
    assert reader.feed(h(wire)) == [packet]
    assert reader.bad_crc == reader.discarded == 0


def test_credit_reply_parses_to_one_credit_on_channel_2() -> None:
    (packet,) = PacketReader().feed(h("7F 80 03 F0 EE 02 C3 CC"))
    assert packet.data[0] == Status.OK
    assert parse_poll(packet.data[1:]) == [Event(EventCode.CREDIT, channel=2)]


def test_itl_setup_request_example() -> None:
    (packet,) = PacketReader().feed(ITL_SETUP_EXAMPLE)
    assert packet.seq and packet.address == 0 and packet.data[0] == Status.OK
    info = parse_setup_request(packet.data[1:])
    assert info == SetupInfo(
        unit_type=0, firmware="0100", country="GBP", value_multiplier=1,
        channels=(SetupChannel(1, 5, "GBP", 2), SetupChannel(2, 10, "GBP", 2),
                  SetupChannel(3, 20, "GBP", 2)),
        real_value_multiplier=0x400000, protocol=5)
    # And back: the simulator's encoder gives ITL's bytes.
    assert_wire(Packet(0, True, bytes([Status.OK]) + info.encode()).encode(), ITL_SETUP_EXAMPLE)


def test_setup_request_protocol_6_layout_round_trip() -> None:
    info = SetupInfo(0, "0420", "SEK", 10,
                     tuple(SetupChannel(i + 1, v, "SEK") for i, v in
                           enumerate((20, 50, 100, 200, 500, 1000))), 100, 7)
    payload = info.encode()
    n = 6
    assert len(payload) == 16 + 9 * n
    assert payload[12:12 + n] == bytes([2, 5, 10, 20, 50, 100])  # legacy: value / multiplier
    assert payload[16 + 2 * n:16 + 5 * n] == b"SEK" * n
    assert payload[16 + 5 * n:20 + 5 * n] == (20).to_bytes(4, "little")
    assert parse_setup_request(payload) == info


def test_setup_request_expanded_values_win_over_legacy_bytes() -> None:
    # A value too big for the legacy byte goes as 0; the expanded value still tells.
    info = SetupInfo(0, "0100", "EUR", 1, (SetupChannel(1, 5, "EUR"), SetupChannel(2, 500, "EUR")),
                     100, 6)
    payload = info.encode()
    assert payload[12:14] == bytes([5, 0])
    assert parse_setup_request(payload).channels[1].value == 500


@pytest.mark.parametrize("payload", [b"", h("00 30 31 30 30 47 42 50 00 00 01"),
                                     h("00 30 31 30 30 47 42 50 00 00 01 03 05")])
def test_setup_request_too_short(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_setup_request(payload)


def test_serial_number() -> None:
    assert parse_serial(h("00 BC 61 4E")) == 12345678
    with pytest.raises(ProtocolError):
        parse_serial(h("01 02 03"))


def test_poll_events_with_and_without_channels() -> None:
    payload = h("F1 E8 EF 00 EF 03 CC EE 03 CC EB ED EC EA E9 E7 E6 04 E3 E4 E1 05 E2 06")
    assert parse_poll(payload) == [
        Event(EventCode.SLAVE_RESET), Event(EventCode.DISABLED),
        Event(EventCode.READ, channel=0), Event(EventCode.READ, channel=3),
        Event(EventCode.STACKING), Event(EventCode.CREDIT, channel=3), Event(EventCode.STACKING),
        Event(EventCode.STACKED), Event(EventCode.REJECTING), Event(EventCode.REJECTED),
        Event(EventCode.SAFE_JAM), Event(EventCode.UNSAFE_JAM), Event(EventCode.STACKER_FULL),
        Event(EventCode.FRAUD_ATTEMPT, channel=4), Event(EventCode.CASHBOX_REMOVED),
        Event(EventCode.CASHBOX_REPLACED), Event(EventCode.NOTE_CLEARED_FROM_FRONT, channel=5),
        Event(EventCode.NOTE_CLEARED_INTO_CASHBOX, channel=6)]


def test_value_events_protocol_6_and_legacy() -> None:
    v6 = h("DA 02 F4 01 00 00 45 55 52 E8 03 00 00 53 45 4B  EB")
    assert parse_poll(v6, 6) == [
        Event(EventCode.DISPENSING, amounts=(Amount(500, "EUR"), Amount(1000, "SEK"))),
        Event(EventCode.STACKED)]
    legacy = h("DA F4 01 00 00 EB")
    assert parse_poll(legacy, 5) == [Event(EventCode.DISPENSING, amounts=(Amount(500),)),
                                     Event(EventCode.STACKED)]
    incomplete = h("DC 01 0A 00 00 00 14 00 00 00 45 55 52")
    (event,) = parse_poll(incomplete, 7)
    assert event.amounts == (Amount(10, "EUR", requested=20),)
    coin = h("DF 64 00 00 00 53 45 4B")
    assert parse_poll(coin, 8) == [Event(EventCode.COIN_CREDIT, amounts=(Amount(100, "SEK"),))]
    for events, protocol in ((parse_poll(v6, 6), 6), (parse_poll(legacy, 5), 5),
                             (parse_poll(incomplete, 7), 7), (parse_poll(coin, 8), 8)):
        assert b"".join(e.encode(protocol) for e in events) in (v6, legacy, incomplete, coin)


def test_unknown_event_ends_the_parse_with_the_rest_raw() -> None:
    events = parse_poll(h("EE 01 7A 01 02 EE 02"))
    assert events[0] == Event(EventCode.CREDIT, channel=1)
    assert events[1].code == 0x7A and events[1].raw == h("01 02 EE 02")
    assert events[1].name == "unknown_0x7a"


@pytest.mark.parametrize("payload", ["EE", "DA 02 F4 01 00 00 45 55 52", "DC 01 0A 00"])
def test_events_cut_short_are_protocol_errors(payload: str) -> None:
    with pytest.raises(ProtocolError):
        parse_poll(h(payload), 6)


# ---- stuffing and the reader ------------------------------------------------------------------

addresses = st.integers(0, 0x7E)
payloads = st.one_of(st.binary(min_size=1, max_size=255),
                     st.integers(1, 255).map(lambda n: b"\x7f" * n),
                     st.lists(st.sampled_from([0x7F, 0x00, 0x80, 0xFF]), min_size=1,
                              max_size=255).map(bytes))
packets = st.builds(Packet, addresses, st.booleans(), payloads)


@given(packets)
@settings(max_examples=300)
def test_stuffing_round_trip(packet: Packet) -> None:
    wire = packet.encode()
    assert wire[0] == 0x7F
    rest = wire[1:]
    assert b"\x7f" not in rest.replace(b"\x7f\x7f", b"")  # every 0x7F after the STX doubled
    assert len(rest) == len(packet.body()) + packet.body().count(0x7F)
    assert PacketReader().feed(wire) == [packet]


@given(st.lists(packets, min_size=1, max_size=5), st.integers(1, 7))
@settings(max_examples=150)
def test_reader_byte_at_a_time_and_in_chunks(items: list[Packet], chunk: int) -> None:
    wire = b"".join(p.encode() for p in items)
    reader = PacketReader()
    got = []
    for start in range(0, len(wire), chunk):
        got += reader.feed(wire[start:start + chunk])
    assert got == items
    single = PacketReader()
    assert [p for b in wire for p in single.feed(bytes([b]))] == items


@given(st.binary(max_size=300), packets, packets)
@settings(max_examples=300)
def test_reader_resyncs_after_garbage(garbage: bytes, first: Packet, second: Packet) -> None:
    got = PacketReader().feed(garbage + first.encode() + second.encode())
    assert got[-1] == second  # whatever the garbage did, the packet after is clean
    # The first survives too unless the garbage ends in an odd run of 0x7F (which pairs with
    # its STX: an ambiguity of the wire format itself).
    trailing = len(garbage) - len(garbage.rstrip(b"\x7f"))
    if trailing % 2 == 0:
        assert got[-2:] == [first, second]


def test_bad_crc_is_dropped_counted_and_the_next_packet_read() -> None:
    good = Packet(0, True, h("F0 EE 02"))
    bad = bytearray(good.encode())
    bad[-1] ^= 0x01
    reader = PacketReader()
    assert reader.feed(bytes(bad) + good.encode()) == [good]
    assert reader.bad_crc == 1


def test_a_lone_7f_abandons_the_packet_in_progress() -> None:
    good = Packet(0, False, bytes([Command.POLL]))
    reader = PacketReader()
    # A start with LEN 200, cut off by a real packet.
    assert reader.feed(h("7F 80 C8 F0 01 02") + good.encode()) == [good]
    assert reader.truncated == 1


def test_reader_buffer_is_bounded() -> None:
    reader = PacketReader()
    reader.feed(h("7F 00 FF") + bytes(range(0x80, 0xFF)) * 10)
    assert len(reader._buf) <= MAX_BODY
    assert reader.bad_crc >= 1


@pytest.mark.parametrize("address", [-1, 0x7F, 0x80])
def test_address_out_of_range(address: int) -> None:
    with pytest.raises(ValueError, match="address"):
        Packet(address, False, b"\x07")


def test_data_length_limits() -> None:
    with pytest.raises(ValueError, match="DATA"):
        Packet(0, False, b"")
    with pytest.raises(ValueError, match="DATA"):
        Packet(0, False, bytes(256))
