"""ESC/POS status frames: DLE EOT bits, ASB, GS r, GS ( H, and the byte-stream demultiplexer."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kassad.drivers.errors import ProtocolError
from kassad.drivers.escpos.status import (
    ASB_ALL,
    DLE_EOT,
    GARBAGE_RUN_MAX,
    GS_R_DRAWER,
    GS_R_PAPER,
    AsbStatus,
    DleEotReply,
    ErrorCause,
    Garbage,
    GsRReply,
    OfflineCause,
    PaperSensor,
    PrinterInfo,
    PrinterStatus,
    ProcessIdResponse,
    StatusDemux,
    XonXoff,
    asb_enable,
    parse_asb,
    parse_dle_eot,
    parse_gs_r_drawer,
    parse_gs_r_paper,
    parse_process_id_response,
    process_id_request,
    status_from_dle_eot,
)

IDLE = PrinterStatus(
    online=True, drawer_pin3_high=False, cover_open=False, paper="ok", feeding=False,
    error=False, recoverable_error=False, cutter_error=False, unrecoverable_error=False,
    auto_recoverable_error=False, waiting_online_recovery=False, feed_button_pressed=False,
)  # fmt: skip


def test_query_bytes():
    assert dict(DLE_EOT) == {n: bytes((0x10, 0x04, n)) for n in (1, 2, 3, 4)}
    assert DLE_EOT[1] == b"\x10\x04\x01"
    assert GS_R_PAPER == b"\x1d\x72\x01"
    assert GS_R_DRAWER == b"\x1d\x72\x02"
    assert asb_enable(ASB_ALL) == b"\x1d\x61\x0f"
    assert asb_enable(0) == b"\x1d\x61\x00"
    with pytest.raises(ValueError, match=r"0\.\.255"):
        asb_enable(256)


# --- DLE EOT: every bit of every reply ----------------------------------------------------


def test_dle_eot_1_bits():
    assert parse_dle_eot(1, 0x12) == PrinterInfo(0x12, False, False, False, False)
    assert parse_dle_eot(1, 0x16).drawer_pin3_high
    assert parse_dle_eot(1, 0x1A).offline
    assert parse_dle_eot(1, 0x32).waiting_online_recovery
    assert parse_dle_eot(1, 0x52).feed_button_pressed


def test_dle_eot_2_bits():
    assert parse_dle_eot(2, 0x12) == OfflineCause(0x12, False, False, False, False)
    assert parse_dle_eot(2, 0x16).cover_open
    assert parse_dle_eot(2, 0x1A).feeding
    assert parse_dle_eot(2, 0x32).paper_end_stop
    assert parse_dle_eot(2, 0x52).error


def test_dle_eot_3_bits():
    assert parse_dle_eot(3, 0x12) == ErrorCause(0x12, False, False, False, False)
    assert parse_dle_eot(3, 0x16).recoverable_error
    assert parse_dle_eot(3, 0x1A).cutter_error
    assert parse_dle_eot(3, 0x32).unrecoverable_error
    assert parse_dle_eot(3, 0x52).auto_recoverable_error


@pytest.mark.parametrize(
    ("byte", "near_end", "out"),
    [(0x12, False, False), (0x16, True, False), (0x1A, True, False), (0x1E, True, False),
     (0x32, False, True), (0x52, False, True), (0x72, False, True), (0x7E, True, True)],
)  # fmt: skip
def test_dle_eot_4_bits(byte, near_end, out):
    assert parse_dle_eot(4, byte) == PaperSensor(byte, near_end, out)


@pytest.mark.parametrize("byte", [0x00, 0x10, 0x13, 0x02, 0x92, 0x93, 0xFF, 0x11, 0x03])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_dle_eot_pattern_violations(n, byte):
    with pytest.raises(ProtocolError, match="0xx1xx10"):
        parse_dle_eot(n, byte)


def test_dle_eot_bad_arguments():
    with pytest.raises(ValueError, match=r"1\.\.4"):
        parse_dle_eot(5, 0x12)
    with pytest.raises(ValueError, match="not a byte"):
        parse_dle_eot(1, 0x112)


def test_status_from_dle_eot_examples_of_the_spec():
    assert status_from_dle_eot(0x12, 0x12, 0x12, 0x12) == IDLE
    assert IDLE.can_print
    drawer = status_from_dle_eot(0x16, 0x12, 0x12, 0x12)
    assert drawer.drawer_pin3_high and drawer.can_print
    # Paper out as an Epson reports it: offline + pin 3 high, stopped at paper end + error.
    out = status_from_dle_eot(0x1E, 0x32, 0x12, 0x7E)
    assert (out.online, out.paper, out.drawer_pin3_high) == (False, "out", True)
    assert not out.can_print
    cover = status_from_dle_eot(0x1E, 0x16, 0x12, 0x12)
    assert cover.cover_open and not cover.online and not cover.can_print
    near = status_from_dle_eot(0x12, 0x12, 0x12, 0x1E)
    assert near.paper == "near_end" and near.can_print


def test_status_from_dle_eot_errors_and_paper_stop():
    cutter = status_from_dle_eot(0x1A, 0x52, 0x1A, 0x12)
    assert cutter.error and cutter.cutter_error and not cutter.unrecoverable_error
    hot = status_from_dle_eot(0x12, 0x12, 0x52, 0x12)  # error bit of DLE EOT 3 alone counts
    assert hot.error and hot.auto_recoverable_error
    assert status_from_dle_eot(0x12, 0x32, 0x12, 0x12).paper == "out"  # stopped at paper end
    assert status_from_dle_eot(0x12, 0x12, 0x12, 0x12).waiting_online_recovery is False
    assert status_from_dle_eot(0x72, 0x1A, 0x12, 0x12).feed_button_pressed
    with pytest.raises(ProtocolError):
        status_from_dle_eot(0x12, 0x12, 0x00, 0x12)


# --- ASB, GS r, GS ( H --------------------------------------------------------------------


def test_asb_idle_and_each_bit():
    assert parse_asb(b"\x10\x00\x00\x00") == IDLE
    assert parse_asb(b"\x14\x00\x00\x00").drawer_pin3_high
    assert not parse_asb(b"\x18\x00\x00\x00").online
    assert parse_asb(b"\x30\x00\x00\x00").cover_open
    assert parse_asb(b"\x50\x00\x00\x00").feeding
    assert parse_asb(b"\x10\x01\x00\x00").waiting_online_recovery
    assert parse_asb(b"\x10\x02\x00\x00").feed_button_pressed
    kinds = [
        (0x04, "recoverable_error"),
        (0x08, "cutter_error"),
        (0x20, "unrecoverable_error"),
        (0x40, "auto_recoverable_error"),
    ]
    for byte2, field in kinds:
        status = parse_asb(bytes((0x10, byte2, 0, 0)))
        assert status.error and getattr(status, field)
    # Byte 3: near end 0x03, end 0x0C - not the DLE EOT 4 positions.
    assert parse_asb(b"\x10\x00\x03\x00").paper == "near_end"
    assert parse_asb(b"\x10\x00\x0c\x00").paper == "out"
    assert parse_asb(b"\x10\x00\x0f\x00").paper == "out"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("12 00 00 00", "byte 1"),
        ("90 00 00 00", "byte 1"),
        ("11 00 00 00", "byte 1"),
        ("10 10 00 00", "byte 2"),
        ("10 00 80 00", "byte 3"),
        ("10 00 00 13", "byte 4"),
        ("10 00 00", "4 bytes"),
        ("10 00 00 00 00", "4 bytes"),
    ],
)
def test_asb_pattern_violations(data, match):
    with pytest.raises(ProtocolError, match=match):
        parse_asb(bytes.fromhex(data))


def test_gs_r_replies():
    assert parse_gs_r_paper(0x00) == parse_gs_r_paper(0x00)
    assert (parse_gs_r_paper(0x03).near_end, parse_gs_r_paper(0x03).out) == (True, False)
    assert (parse_gs_r_paper(0x0C).near_end, parse_gs_r_paper(0x0C).out) == (False, True)
    assert parse_gs_r_drawer(0x01).pin3_high
    assert not parse_gs_r_drawer(0x00).pin3_high
    for bad in (0x10, 0x80, 0x12):
        with pytest.raises(ProtocolError, match="0xx0xxxx"):
            parse_gs_r_paper(bad)
        with pytest.raises(ProtocolError, match="0xx0xxxx"):
            parse_gs_r_drawer(bad)


def test_process_id_request_and_response():
    assert process_id_request(b"0042") == bytes.fromhex("1d 28 48 06 00 30 30 30 30 34 32")
    assert parse_process_id_response(bytes.fromhex("37 22 30 30 34 32 00")) == b"0042"
    for bad in (b"004", b"00420", b"00\x1f2", b"00\x7f2"):
        with pytest.raises(ValueError, match=r"4 bytes in 0x20\.\.0x7E"):
            process_id_request(bad)
    bad_responses = ["37 22 30 30 34 32 01", "37 23 30 30 34 32 00", "37 22 30 30 34 00"]
    for bad in [*bad_responses, "37 22 30 10 34 32 00"]:
        with pytest.raises(ProtocolError):
            parse_process_id_response(bytes.fromhex(bad))


# --- the demultiplexer ----------------------------------------------------------------------

ASB_IDLE = b"\x10\x00\x00\x00"
MIXED = (
    b"\x10\x00\x13\x00\x00"  # ASB with an XOFF inside
    + b"\x12"  # DLE EOT reply
    + b"\x11"  # XON
    + b"\x37\x22" + b"0042" + b"\x00"  # process ID response
    + b"\xff\x80"  # garbage
    + b"\x16"  # DLE EOT reply (pin 3 high)
    + b"\x10\x00"  # an ASB that has not finished yet
)  # fmt: skip
MIXED_ITEMS = [
    XonXoff(0x13),
    AsbStatus(IDLE, ASB_IDLE),
    DleEotReply(0x12),
    XonXoff(0x11),
    ProcessIdResponse(b"0042"),
    Garbage(b"\xff\x80"),
    DleEotReply(0x16),
]


def test_demux_mixed_stream_in_one_feed():
    demux = StatusDemux()
    assert demux.feed(MIXED) == MIXED_ITEMS
    assert demux.pending == b"\x10\x00"
    assert demux.feed(b"\x00\x00") == [AsbStatus(IDLE, ASB_IDLE)]
    assert demux.pending == b""


def test_demux_byte_at_a_time_gives_the_same_items():
    demux = StatusDemux()
    items = [item for b in MIXED for item in demux.feed(bytes((b,)))]
    assert items == MIXED_ITEMS
    assert demux.pending == b"\x10\x00"


def test_demux_broken_frames_resync_at_the_next_byte():
    demux = StatusDemux()
    # ASB start, then a byte with bit 4 set: the 0x10 is garbage, the 0x12 a DLE EOT reply.
    assert demux.feed(b"\x10\x12") == [Garbage(b"\x10"), DleEotReply(0x12)]
    # A process-ID response cut short by an ASB: 37 22 30 are garbage, the ASB is read.
    items = demux.feed(b"\x37\x22\x30" + ASB_IDLE)
    assert items == [Garbage(b"\x37\x22\x30"), AsbStatus(IDLE, ASB_IDLE)]
    # 37 22 + 4 IDs and no 00 terminator.
    assert demux.feed(b"\x37\x22ABCD\x01\x12") == [Garbage(b"\x37\x22ABCD\x01"), DleEotReply(0x12)]


def test_demux_garbage_is_held_until_something_real_or_flushed():
    demux = StatusDemux()
    assert demux.feed(b"\x00\xfe") == []
    assert demux.pending == b"\x00\xfe"
    assert demux.flush() == [Garbage(b"\x00\xfe")]
    assert demux.pending == b""
    assert demux.flush() == []
    assert demux.feed(b"\x10\x00") == []  # half an ASB
    assert demux.flush() == [Garbage(b"\x10\x00")]


def test_demux_garbage_runs_are_capped():
    demux = StatusDemux()
    items = demux.feed(b"\x80" * (GARBAGE_RUN_MAX * 3 + 5))
    assert items == [Garbage(b"\x80" * GARBAGE_RUN_MAX)] * 3
    assert demux.pending == b"\x80" * 5


def test_demux_gs_r_only_when_expected():
    demux = StatusDemux()
    assert demux.feed(b"\x01\x12") == [Garbage(b"\x01"), DleEotReply(0x12)]
    demux.expect_gs_r()
    # Only one was announced: the second 0xx0xxxx byte is garbage.
    assert demux.feed(b"\x0c\x00\x12") == [GsRReply(0x0C), Garbage(b"\x00"), DleEotReply(0x12)]
    demux.expect_gs_r(2)
    demux.cancel_gs_r()  # the driver gave up waiting: a late byte is garbage again
    assert demux.feed(b"\x01\x12") == [Garbage(b"\x01"), DleEotReply(0x12)]
    with pytest.raises(ValueError, match=">= 1"):
        demux.expect_gs_r(0)


def test_demux_gs_r_does_not_steal_asb_bytes():
    demux = StatusDemux()
    demux.expect_gs_r()
    assert demux.feed(ASB_IDLE + b"\x01") == [AsbStatus(IDLE, ASB_IDLE), GsRReply(0x01)]


def test_demux_reset_forgets_everything():
    demux = StatusDemux()
    demux.expect_gs_r()
    demux.feed(b"\x37\x22")
    assert demux.reset() == [Garbage(b"\x37\x22")]
    assert demux.feed(b"\x01") == []  # no GS r due any more: held as garbage


def _item_bytes(items):
    return b"".join(i.raw for i in items if not isinstance(i, XonXoff))


STREAM = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from([ASB_IDLE, b"\x12", b"\x11", b"\x13", b"\x37\x220042\x00"]),
        st.just(b"\x10\x00\x13\x00\x00"),
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=300)
@given(data=STREAM, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
       gs_r=st.integers(min_value=0, max_value=3))  # fmt: skip
def test_demux_never_raises_never_loses_a_byte_and_ignores_chunking(data, cuts, gs_r):
    whole = StatusDemux()
    if gs_r:
        whole.expect_gs_r(gs_r)
    items = whole.feed(data)
    # Every byte is in exactly one item or pending; XON/XOFF come out of band, in order.
    assert _item_bytes(items) + whole.pending == bytes(b for b in data if b not in (0x11, 0x13))
    flow = [i.byte for i in items if isinstance(i, XonXoff)]
    assert flow == [b for b in data if b in (0x11, 0x13)]
    assert len(whole.pending) < GARBAGE_RUN_MAX + 7
    # Any chunking gives the same items.
    chunked = StatusDemux()
    if gs_r:
        chunked.expect_gs_r(gs_r)
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    chunk_items = [i for a, b in itertools.pairwise(bounds) for i in chunked.feed(data[a:b])]
    assert chunk_items == items
    assert chunked.pending == whole.pending


@given(st.binary(max_size=200))
def test_demux_items_are_valid_frames(data):
    for item in StatusDemux().feed(data):
        if isinstance(item, DleEotReply):
            parse_dle_eot(1, item.byte)
        elif isinstance(item, AsbStatus):
            assert parse_asb(item.raw) == item.status
        elif isinstance(item, ProcessIdResponse):
            assert parse_process_id_response(item.raw) == item.pid
        else:
            assert isinstance(item, Garbage | XonXoff)
