"""ESC/POS encoder and the print.receipt document: exact bytes, layout, refusals, side effects."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from kassad.drivers.escpos.document import (
    BarcodeBlock,
    ColumnsBlock,
    CutBlock,
    FeedBlock,
    ImageBlock,
    QrBlock,
    ReceiptDocument,
    RuleBlock,
    TextBlock,
    gtin_check_digit,
)
from kassad.drivers.escpos.encoder import (
    MODELS,
    EncodeError,
    EscposEncoder,
    PrinterModel,
    completion_request,
    defuse_raster,
    kick,
    kick_realtime,
    two_columns,
    wrap,
)

INIT_CP858 = bytes.fromhex("1b 40 1b 74 13")  # ESC @, ESC t 19


@pytest.fixture(scope="module")
def t20() -> EscposEncoder:
    return EscposEncoder(MODELS["TM-T20II"])


def encode(encoder: EscposEncoder, *blocks) -> bytes:
    """The job minus the ESC @ / ESC t head every job starts with."""
    out = encoder.encode(ReceiptDocument(blocks=list(blocks)))
    assert out.startswith(encoder.init_sequence())
    return out[len(encoder.init_sequence()) :]


def png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def explain(a: bytes, b: bytes) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"first difference at {i}: {a[i : i + 12].hex(' ')} != {b[i : i + 12].hex(' ')}"


# --- exact bytes ---------------------------------------------------------------------------


def test_small_receipt_whole_byte_string(t20):
    doc = ReceiptDocument(
        blocks=[
            TextBlock(text="ACME €", align="center", bold=True),
            ColumnsBlock(left="Coffee", right="2.50"),
            ColumnsBlock(left="Cake", right="3.10"),
            RuleBlock(),
            ColumnsBlock(left="TOTAL", right="5.60", bold=True),
            CutBlock(),
        ]
    )
    want = (
        b"\x1b@\x1bt\x13"  # ESC @, ESC t 19 (CP858)
        + b"\x1ba\x01\x1bE\x01ACME \xd5\n"  # centre, bold, € = D5 in CP858
        + b"\x1ba\x00\x1bE\x00"  # back to left, not bold
        + b"Coffee" + b" " * 38 + b"2.50\n"  # exactly 48 columns
        + b"Cake" + b" " * 40 + b"3.10\n"
        + b"-" * 48 + b"\n"
        + b"\x1bE\x01TOTAL" + b" " * 39 + b"5.60\n"
        + b"\x1bd\x06\x1dV\x00"  # feed 6 lines, full cut
    )  # fmt: skip
    got = t20.encode(doc)
    assert got == want, explain(got, want)


def test_same_document_same_bytes(t20):
    doc = ReceiptDocument(blocks=[TextBlock(text="ü€中", double_width=True), CutBlock()])
    assert t20.encode(doc) == t20.encode(doc) == EscposEncoder(MODELS["TM-T20II"]).encode(doc)


def test_ean13_as_in_the_protocol_notes(t20):
    got = encode(t20, BarcodeBlock(symbology="EAN13", data="4006381333931"))
    assert got == bytes.fromhex("1b 61 01 1d 68 40 1d 77 02 1d 66 00 1d 48 02 1d 6b 02") + (
        b"4006381333931\x00"
    )


def test_code128_uses_code_set_b_and_escapes_braces(t20):
    got = encode(t20, BarcodeBlock(symbology="CODE128", data="12{34", hri="none", align="left"))
    assert got == bytes.fromhex("1d 68 40 1d 77 02 1d 66 00 1d 48 00 1d 6b 49 08") + b"{B12{{34"


def test_native_qr_as_in_the_protocol_notes(t20):
    got = encode(t20, QrBlock(data="AB", size=4, ec="M", align="left"))
    assert got == bytes.fromhex(
        "1d 28 6b 04 00 31 41 32 00  1d 28 6b 03 00 31 43 04  1d 28 6b 03 00 31 45 31"
        "1d 28 6b 05 00 31 50 30 41 42  1d 28 6b 03 00 31 51 30"
    )


def test_qr_module_size_shrinks_to_fit_the_paper(t20):
    data = "x" * 1000  # version 22 at ec L: 105 modules, so at most 5 dots each on 576 dots
    got = encode(t20, QrBlock(data=data, size=16, ec="L", align="left"))
    assert got[:17] == bytes.fromhex("1d 28 6b 04 00 31 41 32 00 1d 28 6b 03 00 31 43 05")


def test_qr_too_long_for_its_error_level(t20):
    with pytest.raises(EncodeError, match=r"block 0 \(qr\): QR data too long for error corr"):
        encode(t20, QrBlock(data="x" * 1500, ec="H"))


def test_cut_feed_and_kicks(t20):
    assert encode(t20, CutBlock(mode="full")) == bytes.fromhex("1b 64 06 1d 56 00")
    assert encode(t20, CutBlock(mode="partial")) == bytes.fromhex("1b 64 06 1d 56 01")
    assert encode(t20, FeedBlock(lines=3)) == bytes.fromhex("1b 64 03")
    assert kick(2, 50, 500) == bytes.fromhex("1b 70 00 19 fa")
    assert kick(5, 100, 100) == bytes.fromhex("1b 70 01 32 32")
    assert kick(2, 33, 0) == bytes.fromhex("1b 70 00 11 00")  # 2 ms units, never a DLE (0x10)
    assert kick_realtime(2, 1) == bytes.fromhex("10 14 01 00 01")
    assert kick_realtime(5, 8) == bytes.fromhex("10 14 01 01 08")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: kick(3, 100, 100), "pin"),
        (lambda: kick(2, 0, 100), "on_ms"),
        (lambda: kick(2, 512, 100), "on_ms"),
        (lambda: kick(2, 100, -1), "off_ms"),
        (lambda: kick_realtime(2, 0), "1..8"),
        (lambda: kick_realtime(2, 9), "1..8"),
    ],
)
def test_kick_limits(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_code_page_and_unencodable_characters(t20):
    # "é" composed from e + U+0301 is normalised first: one character, one byte (0x82).
    got = encode(t20, TextBlock(text="€ é e\u0301 中 😀"))
    assert got == b"\xd5 \x82 \x82 ? ?\n"


def test_styles_are_sent_only_when_they_change(t20):
    got = encode(
        t20,
        TextBlock(text="a", bold=True, underline=2, font="b", double_height=True),
        TextBlock(text="b", bold=True, underline=2, font="b", double_height=True),
        TextBlock(text="c"),
    )
    assert got == (
        b"\x1bM\x01\x1d!\x01\x1bE\x01\x1b-\x02a\n"  # font B, GS ! double height, bold, underline
        + b"b\n"
        + b"\x1bM\x00\x1d!\x00\x1bE\x00\x1b-\x00c\n"
    )


def test_completion_request_and_jobs(t20):
    assert completion_request(42) == (b"0042", bytes.fromhex("1d 28 48 06 00 30 30 30 30 34 32"))
    assert completion_request(1_230_007)[0] == b"0007"
    doc = ReceiptDocument(blocks=[FeedBlock()])
    job = t20.encode_job(doc, 42)
    assert job.process_id == b"0042"
    assert job.data == t20.encode(doc) + completion_request(42)[1]
    generic = EscposEncoder(MODELS["generic-80mm"]).encode_job(doc, 42)
    assert generic.process_id is None and generic.data == t20.encode(doc)


# --- layout --------------------------------------------------------------------------------


def test_columns_per_model_font_and_width():
    assert [EscposEncoder(MODELS[m]).columns() for m in ("TM-T20II", "TM-T88V", "POS-5890")] == [
        48,
        42,
        32,
    ]
    enc = EscposEncoder(MODELS["TM-T88V"])
    assert (enc.columns("b"), enc.columns("a", double_width=True)) == (56, 21)
    assert MODELS["TM-T20II"].dots == 576 and MODELS["TM-T88V"].dots == 512
    assert MODELS["POS-5890"].dots == 384 and not MODELS["POS-5890"].cutter


def test_two_columns_exact_widths():
    assert two_columns("Coffee", "2.50", 20) == ["Coffee          2.50"]
    item = "Chocolate chip cookie"
    assert two_columns(item, "12.00", 20) == ["Chocolate chip 12.00", "cookie"]
    assert two_columns(item, "12.00", 18) == ["Chocolate    12.00", "chip cookie"]
    assert two_columns(item, "12.00", 18, "truncate") == ["Chocolate ch 12.00"]
    assert two_columns("", "9.99", 10) == ["      9.99"]
    assert two_columns("Gift card", "", 20) == ["Gift card"]
    # The right side alone would fill the line: the left goes above it.
    assert two_columns("Item", "A very long right side", 20) == ["Item", "A very long right si"]


def test_columns_double_width_halves_the_line(t20):
    got = encode(t20, ColumnsBlock(left="TOTAL", right="5.60", double_width=True))
    assert got == b"\x1d!\x10TOTAL" + b" " * 15 + b"5.60\n"  # 24 double-width columns


def test_text_wraps_at_words_to_the_line(t20):
    assert wrap("one two three four", 9) == ["one two", "three", "four"]
    assert wrap("a\n\nb", 9) == ["a", "", "b"]
    assert wrap("  indented fits", 20) == ["  indented fits"]
    got = encode(t20, TextBlock(text="word " * 20, double_width=True))
    assert all(len(line) <= 24 for line in got.split(b"\n")[1:])


@settings(max_examples=200)
@given(
    left=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=120),
    right=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30),
    width=st.integers(min_value=8, max_value=64),
    overflow=st.sampled_from(["wrap", "truncate"]),
)
def test_two_columns_never_exceed_the_width(left, right, width, overflow):
    lines = two_columns(left, right, width, overflow)
    assert all(len(line) <= width for line in lines)
    right = unicodedata.normalize("NFC", right)
    if right:
        assert lines[-1 if len(right) > width - 2 else 0].endswith(right[:width])


# --- images --------------------------------------------------------------------------------


def test_wide_image_is_scaled_to_the_paper(t20):
    img = Image.new("1", (1152, 40), 0)  # all black, twice the paper width
    got = encode(t20, ImageBlock(png_base64=png(img)))
    # GS v 0, 72 bytes (576 dots) a row, 20 rows, all black.
    assert got == bytes.fromhex("1d 76 30 00 48 00 14 00") + b"\xff" * 72 * 20


def test_narrow_image_is_padded_to_its_alignment(t20):
    got = encode(t20, ImageBlock(png_base64=png(Image.new("1", (8, 1), 0)), align="right"))
    assert got == bytes.fromhex("1d 76 30 00 48 00 01 00") + b"\x00" * 71 + b"\xff"
    got = encode(t20, ImageBlock(png_base64=png(Image.new("1", (8, 1), 0)), align="left"))
    assert got == bytes.fromhex("1d 76 30 00 01 00 01 00 ff")


def test_raster_data_never_carries_a_real_time_command(t20):
    # Row bytes 10 04 10 14 10: a DLE EOT, a DLE DC4 (fn 0x10 here) and a DLE at the end.
    img = Image.new("1", (40, 1), 1)
    for x in (3, 13, 19, 27, 29, 35):
        img.putpixel((x, 0), 0)
    got = encode(t20, ImageBlock(png_base64=png(img), align="left"))
    assert got == bytes.fromhex("1d 76 30 00 05 00 01 00  00 04 00 14 00")
    assert defuse_raster(bytes.fromhex("1d 76 30 00 02 00 01 00 10 05")) == bytes.fromhex(
        "1d 76 30 00 02 00 01 00 00 05"
    )
    with pytest.raises(EncodeError, match="unexpected image bytes"):
        defuse_raster(b"\x1b@")


def test_image_after_centred_text_resets_the_alignment_first(t20):
    img = png(Image.new("1", (8, 1), 0))
    got = encode(t20, TextBlock(text="x", align="center"), ImageBlock(png_base64=img, align="left"))
    assert got == b"\x1ba\x01x\n\x1ba\x00" + bytes.fromhex("1d 76 30 00 01 00 01 00 ff")


def test_raster_qr_is_defused_too(monkeypatch):
    enc = EscposEncoder(MODELS["POS-5890"])
    seen = []
    monkeypatch.setattr(
        "kassad.drivers.escpos.encoder.defuse_raster", lambda data: seen.append(data) or data
    )
    encode(enc, QrBlock(data="hi"))
    assert len(seen) == 1 and seen[0].startswith(b"\x1dv0")


def test_tall_image_is_sent_in_fragments(t20):
    got = encode(t20, ImageBlock(png_base64=png(Image.new("1", (8, 300), 1)), align="left"))
    assert got == (
        bytes.fromhex("1d 76 30 00 01 00 00 01") + b"\x00" * 256
        + bytes.fromhex("1d 76 30 00 01 00 2c 00") + b"\x00" * 44
    )  # fmt: skip


def test_broken_png_is_an_encode_error(t20):
    data = base64.b64decode(png(Image.new("1", (8, 8), 1)))
    broken = data[:40] + b"\x00" * 20 + data[60:]
    with pytest.raises(EncodeError, match=r"block 0 \(image\): PNG could not be decoded"):
        encode(t20, ImageBlock(png_base64=base64.b64encode(broken).decode()))


# --- the 58 mm clone: what it lacks ---------------------------------------------------------


def test_58mm_clone_without_cutter_barcodes_or_native_qr():
    enc = EscposEncoder(MODELS["POS-5890"])
    assert encode(enc, CutBlock()) == bytes.fromhex("1b 64 06")
    qr = encode(enc, QrBlock(data="hi", size=4))
    assert qr.startswith(bytes.fromhex("1d 76 30 00 30 00"))  # raster, 48 bytes = 384 dots
    with pytest.raises(EncodeError, match=r"block 1 \(barcode\): POS-5890 cannot print barcodes"):
        encode(enc, FeedBlock(), BarcodeBlock(symbology="EAN8", data="96385074"))
    assert enc.encode_job(ReceiptDocument(blocks=[FeedBlock()]), 1).process_id is None


def test_barcode_wider_than_the_paper(t20):
    with pytest.raises(EncodeError, match="576"):
        encode(t20, BarcodeBlock(symbology="CODE128", data="A" * 40, width=6))


def test_model_table_is_checked_against_the_profile():
    with pytest.raises(ValueError, match="no CP1252 at ESC t 19"):
        EscposEncoder(PrinterModel("x", "TM-T20II", 48, 64, 576, "CP1252", 19, False))
    with pytest.raises(ValueError, match="no cutter"):
        EscposEncoder(PrinterModel("x", "POS-5890", 32, 42, 384, "CP858", 19, False))
    with pytest.raises(ValueError, match="multiple of 8"):
        PrinterModel("x", "default", 48, 64, 570, "CP858", 19, False)


# --- the document: refusals a POS developer can act on --------------------------------------


def refused(doc) -> str:
    with pytest.raises(ValidationError) as info:
        ReceiptDocument.model_validate(doc)
    return str(info.value)


def blocks(*b):
    return {"blocks": list(b)}


def test_bad_ean13_check_digit():
    msg = refused(blocks({"type": "barcode", "symbology": "EAN13", "data": "4006381333932"}))
    assert "check digit of 4006381333932 is 2 but must be 1 (did you mean 4006381333931?)" in msg
    msg = refused(blocks({"type": "barcode", "symbology": "EAN13", "data": "400638133393"}))
    assert "append 1 to get 4006381333931" in msg
    assert gtin_check_digit("9638507") == 4  # EAN8 96385074
    assert gtin_check_digit("03600029145") == 2  # UPC-A 036000291452


@pytest.mark.parametrize(
    ("barcode", "match"),
    [
        ({"symbology": "EAN8", "data": "9638507A"}, "digits only"),
        ({"symbology": "UPC-A", "data": "0360002914521"}, "exactly 12 digits"),
        ({"symbology": "CODE39", "data": "abc"}, "upper case"),
        ({"symbology": "ITF", "data": "123"}, "even number of digits"),
        ({"symbology": "CODE128", "data": "tab\there"}, "printable ASCII"),
        ({"symbology": "QR", "data": "x"}, "symbology"),
    ],
)
def test_barcode_data_per_symbology(barcode, match):
    assert match in refused(blocks({"type": "barcode", **barcode}))


def test_non_png_image():
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4)).save(jpeg, "JPEG")
    jpeg_b64 = base64.b64encode(jpeg.getvalue()).decode()
    msg = refused(blocks({"type": "image", "png_base64": jpeg_b64}))
    assert "image is not a PNG" in msg
    assert "not valid base64" in refused(blocks({"type": "image", "png_base64": "!!"}))


def test_png_bomb_refused_by_its_header():
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (60000).to_bytes(4, "big") * 2
    msg = refused(blocks({"type": "image", "png_base64": base64.b64encode(header).decode()}))
    assert "60000x60000 pixels" in msg


def test_600_blocks():
    msg = refused(blocks(*[{"type": "feed"}] * 600))
    assert "document has 600 blocks, at most 500; split it into several receipts" in msg


def test_unknown_or_missing_block_type():
    msg = refused(blocks({"type": "logo"}))
    assert "Input tag 'logo' found using 'type' does not match any of the expected tags" in msg
    assert "'text', 'columns', 'rule', 'barcode', 'qr', 'image', 'feed', 'cut'" in msg
    assert "Unable to extract tag using discriminator 'type'" in refused(blocks({"text": "hi"}))


def test_text_too_long_and_control_characters():
    assert "at most 2000 characters" in refused(blocks({"type": "text", "text": "x" * 2001}))
    msg = refused(blocks({"type": "text", "text": "open \x10\x14\x01\x00\x05"}))
    assert "control character U+0010 at index 5; the printer would run it as a command" in msg
    assert "U+0009" in refused(blocks({"type": "columns", "left": "a\tb"}))
    ReceiptDocument.model_validate(blocks({"type": "text", "text": "two\nlines"}))


def test_other_refusals():
    assert "Extra inputs are not permitted" in refused(blocks({"type": "feed", "colour": "red"}))
    assert "valid boolean" in refused(blocks({"type": "text", "text": "x", "bold": "yes"}))
    assert "less than or equal to 20" in refused(blocks({"type": "feed", "lines": 21}))
    assert "more than 2000" in refused(blocks({"type": "qr", "data": "é" * 1001}))
    assert "at least 1 item" in refused({"blocks": []})
    big = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * (512 * 1024)).decode()
    assert "at most 699052 characters" in refused(blocks({"type": "image", "png_base64": big}))


def test_document_from_json_and_its_schema():
    doc = ReceiptDocument.model_validate_json(
        json.dumps(blocks({"type": "text", "text": "hi", "underline": 1}, {"type": "cut"}))
    )
    assert doc.blocks == [TextBlock(text="hi", underline=1), CutBlock()]
    schema = ReceiptDocument.model_json_schema()
    assert schema["properties"]["blocks"]["maxItems"] == 500


# --- python-escpos side effects -------------------------------------------------------------


def test_python_escpos_is_tamed(tmp_path):
    script = textwrap.dedent("""
        import logging, os, sys
        from kassad.drivers.escpos.encoder import MODELS, EscposEncoder
        from kassad.drivers.escpos.document import ReceiptDocument, BarcodeBlock
        assert "escpos" not in sys.modules, "imported on module import"
        enc = EscposEncoder(MODELS["TM-T20II"])
        enc.encode(ReceiptDocument(blocks=[BarcodeBlock(symbology="EAN8", data="96385074")]))
        assert logging.root.handlers == [], logging.root.handlers
        assert "ESCPOS_CAPABILITIES_PICKLE_DIR" not in os.environ
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESCPOS_", "XDG_", "CACHE_"))}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # "Using hardware barcode renderer" was captured
    assert result.stderr == ""
    cache = tmp_path / ".cache" / "kassad" / "escpos"
    assert [p.name.endswith(".capabilities.pickle") for p in cache.iterdir()] == [True]
    assert cache.stat().st_mode & 0o777 == 0o700


def test_processes_starting_together_or_after_a_broken_cache_all_get_an_encoder(tmp_path):
    """python-escpos writes its pickle non-atomically; kassad writes it first, atomically."""
    script = ("from kassad.drivers.escpos.encoder import MODELS, EscposEncoder\n"
              "EscposEncoder(MODELS['TM-T20II'])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESCPOS_", "XDG_", "CACHE_"))}
    env["HOME"] = str(tmp_path)
    starts = [subprocess.Popen([sys.executable, "-c", script], env=env,
                               stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in starts]
    assert results == [(0, "")] * 8
    cache = tmp_path / ".cache" / "kassad" / "escpos"
    (pickle_file,) = cache.iterdir()
    pickle_file.write_bytes(b"\x80\x04 half a pickle")  # a crash in the middle of a write
    again = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, check=False)
    assert (again.returncode, again.stderr) == (0, "")
