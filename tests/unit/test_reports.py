"""X and Z reports and cash slips: the exact paper the printer simulator gets out of them.

Each document goes through the real encoder (TM-T20II, 48 columns, unless said) and the
printer simulator's parser and renderer; ``paper`` writes the receipt's lines with centred
and right-aligned ones moved where the printer puts them, so each literal below reads like
the receipt itself (bold and double height are not shown).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from kassad.daemon.register.reports import (
    MAX_LISTED_ADJUSTMENTS,
    TEXTS,
    Letterhead,
    format_amount,
    render_report,
    render_slip,
)
from kassad.drivers.escpos.document import ReceiptDocument
from kassad.drivers.escpos.encoder import MODELS, EscposEncoder
from kassad.simulators.printer.parser import EscPosParser
from kassad.simulators.printer.render import Receipt, Renderer

HEADER = Letterhead("Kvarnen Handel AB", "556677-8899", ("Storgatan 1", "753 20 Uppsala"))
HASH = "3f5a9c0e1b2d4f6a8e7d6c5b4a392817" + "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
HEAD = {"seq": 1042, "hash": HASH}
GRAND = {"sales": {"SEK": 123456700}, "returns": {"SEK": 345600}, "net": {"SEK": 123111100}}
QR = f"[QR kassad:chain?store=S1&register=R1&seq=1042&hash={HASH}]"

OPEN: dict[str, Any] = {
    "session_id": "0b7c", "number": 12, "status": "open",
    "opened_at": "2026-11-25T07:02:11.204Z", "opened_by": "anna", "automatic": False,
    "note": None, "starting_float": {"SEK": 200000}, "expected_start": {"SEK": 200000},
    "discrepancy_at_start": {}, "cash_sales": {"SEK": 123450}, "cash_sales_count": 12,
    "cash_refunds": {"SEK": 9900}, "cash_refunds_count": 1,
    "adjustments_added": {"SEK": 50000}, "adjustments_removed": {"SEK": 100000},
    "adjustments": [
        {"direction": "add", "amount": {"amount": 50000, "currency": "SEK"},
         "note": "Växelmynt från kassaskåpet", "ts": "2026-11-25T09:15:00.000Z",
         "employee": "anna"},
        {"direction": "remove", "amount": {"amount": 100000, "currency": "SEK"},
         "note": "Till kassaskåpet", "ts": "2026-11-25T13:30:00.000Z", "employee": "erik"},
    ],
    "payments_by_type": {"cash": {"SEK": 113550}, "card": {"SEK": 567850},
                         "gift_card": {"SEK": 20000}},
    "payment_counts": {"cash": 13, "card": 30, "gift_card": 1},
    "total_sales": {"SEK": 701400},
    "drawer_openings": {"sale": 12, "refund": 1, "adjustment": 2, "no_sale": 2},
    "expected_cash": {"SEK": 263550},
    "opening_counts": {}, "inventory": {}, "counter_runs": {},
    "training": False, "rounding": {"SEK": -40}, "no_sale_openings": 2,
    "balances": {
        "cash": {"opening": {"SEK": 200000}, "payments": {"SEK": 113550},
                 "deposits": {"SEK": 50000}, "withdrawals": {"SEK": 100000},
                 "balance": {"SEK": 263550}},
        "card": {"opening": {"SEK": 0}, "payments": {"SEK": 567850}, "deposits": {},
                 "withdrawals": {}, "balance": {"SEK": 567850}},
    },
    "reports": {"x_printed": 1, "z_number": None, "z_copies": 0},
}

CLOSED: dict[str, Any] = {
    **OPEN, "status": "closed", "closed_at": "2026-11-25T17:05:00.000Z", "closed_by": "erik",
    "counted": {"SEK": 263350}, "expected": {"SEK": 263550}, "discrepancy": {"SEK": -200},
    "left_in_drawer": {"SEK": 200000}, "removed": {"SEK": 63350}, "close_note": None,
    "reports": {"x_printed": 1, "z_number": 17, "z_copies": 0},
    "system_close": False, "approval": None, "recounts": 0, "corrections": [],
}


def paper(document: dict[str, Any], model: str = "TM-T20II") -> str:
    """The document as the simulated printer prints it, one string line per paper line."""
    receipts = printed(document, model)
    assert len(receipts) == 1
    return as_text(receipts[0], MODELS[model].dots)


def printed(document: dict[str, Any], model: str = "TM-T20II") -> list[Receipt]:
    data = EscposEncoder(MODELS[model]).encode(ReceiptDocument.model_validate(document))
    renderer = Renderer(width_dots=MODELS[model].dots)
    cut = [r for cmd in EscPosParser().feed(data) if (r := renderer.apply(cmd)) is not None]
    # A printer without a cutter feeds to its tear bar instead: the paper is still there.
    return cut if MODELS[model].cutter else [renderer.current]


def as_text(receipt: Receipt, dots: int) -> str:
    lines = []
    for line in receipt.layout:
        used = (sum(12 * style.width * (end - start) for start, end, style in line.runs)
                if line.runs else 12 * len(line.text))  # a QR code's caption: as if text
        shift = {"center": (dots - used) // 2, "right": dots - used}.get(line.align, 0)
        lines.append((" " * max(0, shift // 12) + line.text).rstrip())
    return "\n".join(lines).rstrip("\n")


def z(summary: dict[str, Any] = CLOSED, language: str = "sv", **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "register": "R1", "store": "S1", "language": language, "header": HEADER,
        "base_currency": "SEK", "printed_at": "2026-11-25T17:05:02.000Z",
        "timezone": "Europe/Stockholm", "z_number": 17, "grand_totals": GRAND,
        "chain_head": HEAD, **kw}
    return render_report("z", summary, **args)


def x(summary: dict[str, Any] = OPEN, language: str = "sv", **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "register": "R1", "store": "S1", "language": language, "header": HEADER,
        "base_currency": "SEK", "printed_at": "2026-11-25T14:00:30.000Z",
        "timezone": "Europe/Stockholm", "x_number": 2, "grand_totals": GRAND,
        "chain_head": HEAD, **kw}
    return render_report("x", summary, **args)


# The receipts; the QR code's caption is its data.

Z_SV = f"""\
                  Z-DAGRAPPORT
                    Z-nr 17
               Kvarnen Handel AB
               Org.nr 556677-8899
                  Storgatan 1
                 753 20 Uppsala
------------------------------------------------
Butik                                         S1
Kassaregister                                 R1
Kassapass nr                                  12
Öppnad                          2026-11-25 08:02
Stängd                          2026-11-25 18:05
Utskriven                       2026-11-25 18:05
Öppnad av                                   anna
Stängd av                                   erik
Valuta                                       SEK
X-rapporter i passet                           1
------------------------------------------------
FÖRSÄLJNING PER BETALSÄTT
Kontant (13)                            1 135,50
Kort (30)                               5 678,50
Presentkort (1)                           200,00
Totalt netto                            7 014,00
Returer kontant (1)                        99,00
Öresavrundning                             -0,40
------------------------------------------------
LÅDÖPPNINGAR
Lådöppningar utan köp                          2
  Försäljning                                 12
  Retur                                        1
  Ändring av växelkassa                        2
  Utan köp                                     2
  Totalt                                      17
------------------------------------------------
VÄXELKASSA
Ingående växelkassa                     2 000,00
Ändringar av växelkassan
  10:15 Insättning (anna)                 500,00
    Växelmynt från kassaskåpet
  14:30 Uttag (erik)                   -1 000,00
    Till kassaskåpet
Summa insättningar                        500,00
Summa uttag                            -1 000,00
Förväntat kontantbelopp                 2 635,50
Räknat                                  2 633,50
Differens                                  -2,00
Kvar i lådan                            2 000,00
Uttaget                                   633,50
------------------------------------------------
SALDO PER BETALSÄTT
Kontant
  Ingående                              2 000,00
  Betalningar                           1 135,50
  Insättningar                            500,00
  Uttag                                -1 000,00
  Saldo                                 2 635,50
Kort
  Betalningar                           5 678,50
  Saldo                                 5 678,50
------------------------------------------------
Grand total försäljning             1 234 567,00
Grand total returer                     3 456,00
Grand total netto                   1 231 111,00
------------------------------------------------
Kontrollkedja                           seq 1042
                             3f5a9c0e1b2d4f6a...
{QR}"""


Z_EN = f"""\
                    Z REPORT
                    Z no. 17
               Kvarnen Handel AB
              Org. no. 556677-8899
                  Storgatan 1
                 753 20 Uppsala
------------------------------------------------
Store                                         S1
Register                                      R1
Session no.                                   12
Opened                          2026-11-25 08:02
Closed                          2026-11-25 18:05
Printed                         2026-11-25 18:05
Opened by                                   anna
Closed by                                   erik
Currency                                     SEK
X reports this session                         1
------------------------------------------------
SALES BY PAYMENT TYPE
Cash (13)                               1,135.50
Card (30)                               5,678.50
Gift card (1)                             200.00
Total, net                              7,014.00
Cash refunds (1)                           99.00
Cash rounding                              -0.40
------------------------------------------------
DRAWER OPENINGS
No-sale openings                               2
  Sale                                        12
  Refund                                       1
  Float change                                 2
  No sale                                      2
  Total                                       17
------------------------------------------------
CHANGE FUND
Starting float                          2,000.00
Changes to the float
  10:15 Added (anna)                      500.00
    Växelmynt från kassaskåpet
  14:30 Removed (erik)                 -1,000.00
    Till kassaskåpet
Total added                               500.00
Total removed                          -1,000.00
Expected cash                           2,635.50
Counted                                 2,633.50
Discrepancy                                -2.00
Left in drawer                          2,000.00
Cash removed                              633.50
------------------------------------------------
BALANCES BY PAYMENT TYPE
Cash
  Opening                               2,000.00
  Payments                              1,135.50
  Deposits                                500.00
  Withdrawals                          -1,000.00
  Balance                               2,635.50
Card
  Payments                              5,678.50
  Balance                               5,678.50
------------------------------------------------
Grand total sales                   1,234,567.00
Grand total returns                     3,456.00
Grand total net                     1,231,111.00
------------------------------------------------
Journal chain                           seq 1042
                             3f5a9c0e1b2d4f6a...
{QR}"""


X_SV = f"""\
                  X-DAGRAPPORT
               Kvarnen Handel AB
               Org.nr 556677-8899
                  Storgatan 1
                 753 20 Uppsala
------------------------------------------------
Butik                                         S1
Kassaregister                                 R1
Kassapass nr                                  12
Öppnad                          2026-11-25 08:02
Utskriven                       2026-11-25 15:00
Öppnad av                                   anna
Valuta                                       SEK
X-rapporter i passet                           2
------------------------------------------------
FÖRSÄLJNING PER BETALSÄTT
Kontant (13)                            1 135,50
Kort (30)                               5 678,50
Presentkort (1)                           200,00
Totalt netto                            7 014,00
Returer kontant (1)                        99,00
Öresavrundning                             -0,40
------------------------------------------------
LÅDÖPPNINGAR
Lådöppningar utan köp                          2
  Försäljning                                 12
  Retur                                        1
  Ändring av växelkassa                        2
  Utan köp                                     2
  Totalt                                      17
------------------------------------------------
VÄXELKASSA
Ingående växelkassa                     2 000,00
Ändringar av växelkassan
  10:15 Insättning (anna)                 500,00
    Växelmynt från kassaskåpet
  14:30 Uttag (erik)                   -1 000,00
    Till kassaskåpet
Summa insättningar                        500,00
Summa uttag                            -1 000,00
Förväntat kontantbelopp                 2 635,50
------------------------------------------------
SALDO PER BETALSÄTT
Kontant
  Ingående                              2 000,00
  Betalningar                           1 135,50
  Insättningar                            500,00
  Uttag                                -1 000,00
  Saldo                                 2 635,50
Kort
  Betalningar                           5 678,50
  Saldo                                 5 678,50
------------------------------------------------
Grand total försäljning             1 234 567,00
Grand total returer                     3 456,00
Grand total netto                   1 231 111,00
------------------------------------------------
Kontrollkedja                           seq 1042
                             3f5a9c0e1b2d4f6a...
{QR}"""


X_EN = f"""\
                    X REPORT
               Kvarnen Handel AB
              Org. no. 556677-8899
                  Storgatan 1
                 753 20 Uppsala
------------------------------------------------
Store                                         S1
Register                                      R1
Session no.                                   12
Opened                          2026-11-25 08:02
Printed                         2026-11-25 15:00
Opened by                                   anna
Currency                                     SEK
X reports this session                         2
------------------------------------------------
SALES BY PAYMENT TYPE
Cash (13)                               1,135.50
Card (30)                               5,678.50
Gift card (1)                             200.00
Total, net                              7,014.00
Cash refunds (1)                           99.00
Cash rounding                              -0.40
------------------------------------------------
DRAWER OPENINGS
No-sale openings                               2
  Sale                                        12
  Refund                                       1
  Float change                                 2
  No sale                                      2
  Total                                       17
------------------------------------------------
CHANGE FUND
Starting float                          2,000.00
Changes to the float
  10:15 Added (anna)                      500.00
    Växelmynt från kassaskåpet
  14:30 Removed (erik)                 -1,000.00
    Till kassaskåpet
Total added                               500.00
Total removed                          -1,000.00
Expected cash                           2,635.50
------------------------------------------------
BALANCES BY PAYMENT TYPE
Cash
  Opening                               2,000.00
  Payments                              1,135.50
  Deposits                                500.00
  Withdrawals                          -1,000.00
  Balance                               2,635.50
Card
  Payments                              5,678.50
  Balance                               5,678.50
------------------------------------------------
Grand total sales                   1,234,567.00
Grand total returns                     3,456.00
Grand total net                     1,231,111.00
------------------------------------------------
Journal chain                           seq 1042
                             3f5a9c0e1b2d4f6a...
{QR}"""


def test_z_report_in_swedish():
    assert paper(z()) == Z_SV


def test_z_report_in_english():
    assert paper(z(language="en")) == Z_EN


def test_x_report_in_swedish():
    assert paper(x()) == X_SV


def test_x_report_in_english():
    assert paper(x(language="en")) == X_EN


def test_a_z_copy_says_which_copy_at_top_and_bottom():
    lines = paper(z(copy_number=2)).splitlines()
    assert lines[0].strip() == "*** KOPIA 2 ***"
    assert lines[-1].strip() == "*** KOPIA 2 ***"
    assert lines[1].strip() == "Z-DAGRAPPORT" and "Z-nr 17" in lines[2]  # the same Z
    english = paper(z(language="en", copy_number=1)).splitlines()
    assert english[0].strip() == english[-1].strip() == "*** COPY 1 ***"
    assert "KOPIA" not in paper(z()) and "COPY" not in paper(z(language="en"))


def test_a_training_z_is_marked_and_not_numbered():
    training = {**CLOSED, "training": True, "reports": {"x_printed": 0, "z_number": None}}
    text = paper(z(training, z_number=None))
    lines = text.splitlines()
    assert lines[0].strip() == lines[-1].strip() == "*** ÖVNING ***"
    assert "Z-nr" not in text and "Övningspass, ej numrerad" in text
    # The perpetual grand totals leave training out, so its paper does not print them.
    assert "Grand total försäljning" not in text
    assert "Övning ingår ej i grand total" in text
    english = paper(z(training, language="en", z_number=99))  # a number given is ignored
    assert english.splitlines()[0].strip() == "*** TRAINING ***"
    assert "Z no." not in english and "Training session, not numbered" in english


def test_a_training_x_is_marked():
    text = paper(x({**OPEN, "training": True}, language="en"))
    assert text.splitlines()[0].strip() == text.splitlines()[-1].strip() == "*** TRAINING ***"


def test_the_z_number_comes_from_the_summary_when_not_given():
    assert "Z-nr 17" in paper(z(z_number=None))  # CLOSED's reports.z_number


def test_two_currencies_every_amount_per_currency_base_first():
    two = copy.deepcopy(CLOSED)
    two["payments_by_type"]["cash"]["EUR"] = 2000
    two["total_sales"]["EUR"] = 2000
    two["counted"] = {"EUR": 2000, "SEK": 263350}
    two["expected"] = {"EUR": 2000, "SEK": 263550}
    two["discrepancy"] = {"EUR": 0, "SEK": -200}
    two["left_in_drawer"] = {"EUR": 0, "SEK": 200000}
    two["removed"] = {"EUR": 2000, "SEK": 63350}
    text = paper(z(two), "TM-T88V")
    assert "Valutor                           SEK, EUR" in text
    assert """\
Kontant (13)                  1 135,50 SEK
                                 20,00 EUR
Kort (30)                     5 678,50 SEK
""" in text
    assert """\
Förväntat kontantbelopp       2 635,50 SEK
                                 20,00 EUR
Räknat                        2 633,50 SEK
                                 20,00 EUR
Differens                        -2,00 SEK
                                  0,00 EUR
Kvar i lådan                  2 000,00 SEK
                                  0,00 EUR
Uttaget                         633,50 SEK
                                 20,00 EUR
""" in text
    # With one currency it is named once, in the head, and amounts go bare.
    assert "Grand total netto         1 231 111,00 SEK" in text
    single = [line for line in paper(z()).splitlines() if line.endswith("SEK")]
    assert single == ["Valuta                                       SEK"]


def test_the_base_currency_goes_first_even_when_it_sorts_last():
    two = copy.deepcopy(OPEN)
    two["starting_float"] = {"EUR": 5000, "SEK": 100000}
    text = paper(x(two, base_currency="SEK"))
    assert "Ingående växelkassa                 1 000,00 SEK\n" \
           "                                       50,00 EUR" in text


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_printer_model_prints_it_within_its_width(model):
    long = "Handelsbolaget Kvarnens Kaffe, Konditori och Specerier i Uppsala"
    long_note = ("Kunden betalade med en sedel som automaten inte ville ta emot, så vi tog " * 4
                 + "Donaudampfschifffahrtsgesellschaftskapitänsmütze")
    summary = copy.deepcopy(CLOSED)
    summary["adjustments"][0]["note"] = long_note
    summary["close_note"] = long_note
    summary["opened_by"] = "a-very-long-employee-id-from-some-other-system-0123456789"
    header = Letterhead(long[:48], "556677-8899", ("Storgatan 1, ingång från gården bakom",))
    document = z(summary, header=header)
    width = MODELS[model].columns_a
    text = as_text(printed(document, model)[0], MODELS[model].dots)
    for line in text.splitlines():
        if not line.startswith("[QR") and not line.startswith("[image"):
            assert len(line) <= width, line
    # Amounts stay flush right however long the label beside them.
    assert any(line.endswith("500,00") and "Insättning" in line for line in text.splitlines())
    # Every word of the note is on the paper, the unbreakable one cut to the width.
    words = " ".join(text.split())
    assert "Kunden betalade med en sedel" in words and "Donaudampf" in words
    assert "Handelsbolaget Kvarnens" in words


def test_document_is_a_valid_receipt_document():
    for document in (z(), x(), z(language="en", copy_number=3), x(language="en")):
        ReceiptDocument.model_validate(document)
        assert document["blocks"][-1] == {"type": "cut", "mode": "partial"}
        qr = [b for b in document["blocks"] if b["type"] == "qr"]
        assert len(qr) == 1 and HASH in qr[0]["data"]


def test_control_characters_from_the_journal_cannot_break_the_document():
    summary = copy.deepcopy(CLOSED)
    summary["adjustments"][0]["note"] = "rad ett\nrad två\tflik \x10\x14\x01 slut"
    summary["close_note"] = "\x1b@ reset"
    text = paper(z(summary))
    assert "    rad ett rad två flik slut" in text
    assert "Anteckning: @ reset" in text


def test_a_system_close_has_nothing_counted():
    closed = {**CLOSED, "counted": None, "discrepancy": None, "closed_by": None,
              "system_close": True}
    text = paper(z(closed))
    assert "Stängd av                   automatisk stängning" in text
    assert "Räknat                                 ej räknat" in text
    assert "Differens                                  okänd" in text
    text = paper(z(closed, language="en"))
    assert "Counted                              not counted" in text


def test_an_approval_and_recounts_are_on_the_z():
    closed = {**CLOSED, "recounts": 2, "close_note": "Kväll",
              "approval": {"employee": "maria", "role": "manager", "reason": "Fel växel"}}
    assert """\
Uttaget                                   633,50
Omräkningar                                    2
Godkänt av                          maria (chef)
  Orsak: Fel växel
Anteckning: Kväll
""" in paper(z(closed))
    assert "Approved by                      maria (manager)" in paper(z(closed, language="en"))


def test_corrections_after_the_close_are_listed():
    """``session.corrected``: a recount after the close, approved; the summary's counted,
    discrepancy and removed are already the corrected figures."""
    approval = {"employee": "maria", "role": "manager", "reason": "Påse 4471 felräknad"}
    closed = {**CLOSED, "corrections": [
        {"ts": "2026-11-26T08:00:00.000Z", "employee": "maria", "approval": approval,
         "counted_before": {"SEK": 263150}, "counted": {"SEK": 263350}},
        {"ts": "2026-11-26T08:05:00.000Z", "employee": None, "approval": None,
         "counted_before": None, "counted": {"SEK": 263550}},
    ]}
    assert """\
KORRIGERINGAR
2026-11-26 09:00 (maria)
  Räknat före                           2 631,50
  Räknat nu                             2 633,50
Godkänt av                          maria (chef)
  Orsak: Påse 4471 felräknad
2026-11-26 09:05
  Räknat före                          ej räknat
  Räknat nu                             2 635,50
""" in paper(z(closed))


def test_a_summary_without_the_new_keys_still_prints():
    """The summary as it was before issue 8: no training, rounding, balances, reports."""
    old = {k: v for k, v in CLOSED.items()
           if k not in ("training", "rounding", "no_sale_openings", "balances", "reports",
                        "system_close", "approval", "recounts", "corrections")}
    text = paper(z(old))
    assert "Öresavrundning                              0,00" in text
    assert "Lådöppningar utan köp                          2" in text  # from drawer_openings
    assert "SALDO" not in text and "X-rapporter" not in text


def test_a_session_with_many_float_changes_still_fits_one_receipt():
    summary = copy.deepcopy(OPEN)
    summary["adjustments"] = [
        {"direction": "add", "amount": {"amount": 100, "currency": "SEK"}, "note": f"n{i}",
         "ts": "2026-11-25T09:15:00.000Z", "employee": "anna"} for i in range(300)]
    document = x(summary)
    ReceiptDocument.model_validate(document)
    text = paper(document)
    assert f"n{MAX_LISTED_ADJUSTMENTS - 1}" in text and f"n{MAX_LISTED_ADJUSTMENTS}\n" not in text
    assert f"  ... och {300 - MAX_LISTED_ADJUSTMENTS} till" in text


def test_a_session_over_several_days_dates_its_float_changes():
    summary = {**OPEN, "opened_at": "2026-11-01T07:00:00.000Z"}  # monthly auto-close
    assert "  2026-11-25 10:15 Insättning (anna)" in paper(x(summary))


def test_unknown_payment_types_and_causes_are_shown_as_given():
    summary = copy.deepcopy(OPEN)
    summary["payments_by_type"]["swish"] = {"SEK": 15000}
    summary["payment_counts"]["swish"] = 3
    summary["drawer_openings"]["service"] = 1
    text = paper(x(summary))
    assert "Presentkort (1)                           200,00\nswish (3)" in text
    assert "  service                                      1" in text


def test_reports_refuse_the_wrong_session_or_a_missing_number():
    with pytest.raises(ValueError, match="closed session"):
        z(OPEN)
    with pytest.raises(ValueError, match="open session"):
        x(CLOSED)
    with pytest.raises(ValueError, match="z_number"):
        z({**CLOSED, "reports": {}}, z_number=None)
    with pytest.raises(ValueError, match="copy"):
        z(copy_number=-1)


def test_both_languages_have_every_text():
    assert set(TEXTS["sv"]) == set(TEXTS["en"])


@pytest.mark.parametrize(
    ("minor", "currency", "sv", "en"),
    [
        (14950, "SEK", "149,50", "149.50"),
        (-150, "SEK", "-1,50", "-1.50"),
        (0, "SEK", "0,00", "0.00"),
        (123456789, "SEK", "1 234 567,89", "1,234,567.89"),
        (100000, "SEK", "1 000,00", "1,000.00"),
        (-99999, "EUR", "-999,99", "-999.99"),
        (1500000, "JPY", "1 500 000", "1,500,000"),
        (1234567, "KWD", "1 234,567", "1,234.567"),
    ],
)
def test_amounts_in_each_language(minor, currency, sv, en):
    assert format_amount(minor, currency, "sv") == sv
    assert format_amount(minor, currency, "en") == en


def slip(kind: str, data: dict[str, Any], language: str = "sv", **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "language": language, "header": HEADER, "register": "R1", "store": "S1",
        "base_currency": "SEK", "session_number": 12, "employee": "erik",
        "ts": "2026-11-25T13:30:00.000Z", "timezone": "Europe/Stockholm", "chain_head": HEAD,
        **kw}
    return render_slip(kind, data, **args)


def test_float_changed_slip():
    document = slip("adjustment", {"direction": "remove", "note": "Till kassaskåpet",
                                   "amount": {"amount": 100000, "currency": "SEK"}})
    assert paper(document) == f"""\
               VÄXELKASSA ÄNDRAD
               Kvarnen Handel AB
               Org.nr 556677-8899
                  Storgatan 1
                 753 20 Uppsala
------------------------------------------------
Butik                                         S1
Kassaregister                                 R1
Kassapass nr                                  12
Tid                             2026-11-25 14:30
Anställd                                    erik
------------------------------------------------
Uttag                               1 000,00 SEK
Anteckning: Till kassaskåpet


Signatur: ____________________
------------------------------------------------
Kontrollkedja                           seq 1042
                             3f5a9c0e1b2d4f6a...
{QR}"""


def test_cash_removed_slip_in_english_with_two_currencies():
    document = slip("cash_removed", {"removed": {"SEK": 63350, "EUR": 2000},
                                     "left_in_drawer": {"EUR": 0, "SEK": 200000},
                                     "close_note": "Bag 4471"},
                    language="en", ts="2026-11-25T17:05:00.000Z", chain_head=None)
    assert paper(document, "TM-T88V") == """\
               CASH REMOVED
            Kvarnen Handel AB
           Org. no. 556677-8899
               Storgatan 1
              753 20 Uppsala
------------------------------------------
Store                                   S1
Register                                R1
Session no.                             12
Time                      2026-11-25 18:05
Employee                              erik
------------------------------------------
Cash removed                    633.50 SEK
                                 20.00 EUR
Left in drawer                2,000.00 SEK
                                  0.00 EUR
Note: Bag 4471


Signature: ____________________"""


def test_slips_refuse_what_they_cannot_print():
    with pytest.raises(ValueError, match="add or remove"):
        slip("adjustment", {"direction": "sideways", "amount": {"amount": 1, "currency": "SEK"}})
    with pytest.raises(ValueError, match="no slip"):
        slip("refund", {})
    training = paper(slip("adjustment", {"direction": "add", "amount": {"amount": 500,
                                                                        "currency": "SEK"}},
                          training=True))
    assert training.splitlines()[0].strip() == training.splitlines()[-1].strip() \
        == "*** ÖVNING ***"


def test_transfers_to_and_from_the_safe_are_listed_with_their_reconciliation():
    summary = {**OPEN, "transfers": [
        {"transfer_id": "R1-T1", "direction": "in", "party": {"kind": "safe", "id": "safe-1"},
         "amounts": {"SEK": 100_000}, "status": "reconciled"},
        {"transfer_id": "R1-T2", "direction": "out", "party": {"kind": "safe", "id": "safe-1"},
         "amounts": {"SEK": 200_000}, "status": "unreconciled"}],
        "transfers_in": {"SEK": 100_000}, "transfers_out": {"SEK": 200_000}}
    text = paper(x(summary))
    assert "Överföringar" in text
    assert re.search(r"Från kassaskåp safe-1 +1 000,00", text)
    assert re.search(r"Till kassaskåp safe-1 \(ej avstämd\) +-2 000,00", text)
    assert re.search(r"Summa överfört ut +-2 000,00", text)
    english = paper(x(summary, language="en"))
    assert "To safe safe-1 (not reconciled)" in english
