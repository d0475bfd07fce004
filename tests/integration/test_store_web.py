"""The store manager's web page in a real headless Chromium, against the real HTTP API.

Sessions are the register's own fold of ledger events (the worked case and a few more) in a
SQLite store; the app from :func:`create_app` serves the API and the page on a loopback port.
Chromium and its driver are Debian's (``chromium``, ``chromium-driver``), installed with
apt-get when missing; Selenium is given the driver's path, so it downloads nothing. Every wait
is on a DOM condition or a file, with a timeout.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from kassad.daemon.ledger.session import LedgerEvent, LedgerState, fold
from kassad.daemon.store.http import HttpServer, create_app
from kassad.daemon.store.ingest import session_row
from kassad.daemon.store.storage.base import Alarm, RegisterRow, SessionRow, Storage
from kassad.daemon.store.storage.sqlite import SqliteStorage
from kassad.daemon.store.web import STATIC_DIR

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # a missing dev dependency: the fixture says so
    webdriver = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 15.0  # seconds any one DOM condition or download may take
ZONE = "Europe/Stockholm"  # the browser's, so the store's: a day starts at 22:00 UTC in May

pytestmark = pytest.mark.timeout(600)  # the first run may install Chromium with apt-get


# -- the store's sessions: the register's own fold of ledger events ---------------------------


def money(amount: int, currency: str = "SEK") -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


class Register:
    """Folds one register's events session by session, as the aggregator's ingest does."""

    def __init__(self, store: str, name: str) -> None:
        self.store, self.name = store, name
        self.state = LedgerState()

    def session(self, sid: str, opened: str, starting_float: dict[str, int],
                events: list[tuple[str, str, dict[str, Any]]],
                closed: tuple[str, dict[str, Any]] | None = None, *,
                automatic: bool = False, training: bool = False,
                after: list[tuple[str, str, dict[str, Any]]] | None = None) -> SessionRow:
        """``after``: events that follow the close (its Z report)."""
        opening = ("session.opened", opened, {
            "number": self.state.sessions_opened + 1, "automatic": automatic,
            "starting_float": starting_float, "training": training,
            "expected_start": self.state.next_expected_start(), "note": "morning float"})
        steps = [opening, *events, *([("session.closed", *closed)] if closed else []),
                 *(after or [])]
        fold([LedgerEvent(t, sid, ts, "e17", data) for t, ts, data in steps], self.state)
        session = self.state.open_session if closed is None else self.state.last_closed
        assert session is not None and session.session_id == sid
        return session_row(self.store, self.name, session)


def cash_sale(ts: str, tendered: dict[str, Any], change: dict[str, Any],
              amount: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    return ("payment.recorded", ts, {"kind": "cash_sale", "amount": amount,
                                     "tendered": tendered, "change": change, "reference": "o1"})


def z_report(ts: str, number: int | None) -> tuple[str, str, dict[str, Any]]:
    return ("report.issued", ts, {"kind": "z", "number": number, "copy": False,
                                  "copy_number": 0})


def build_sessions() -> list[SessionRow]:
    r1, r2, r3 = Register("S1", "R1"), Register("S1", "R2"), Register("S1", "R3")
    return [
        # The worked case: float 1000.00, cash sale 149.50 paid with 200.00, card 320.00,
        # refund 20.00, safe drop 300.00; counted 828.00 of 829.50 expected: -1.50.
        r1.session("r1-1", "2024-05-01T08:00:00Z", {"SEK": 100_000}, [
            cash_sale("2024-05-01T09:00:00Z", money(20_000), money(5_050), money(14_950)),
            ("drawer.opened", "2024-05-01T09:00:01Z", {"cause": "sale"}),
            ("payment.recorded", "2024-05-01T10:00:00Z", {
                "kind": "other", "payment_type": "card", "amount": money(32_000)}),
            ("payment.recorded", "2024-05-01T11:00:00Z", {
                "kind": "cash_refund", "amount": money(2_000), "reference": "o0"}),
            ("drawer.opened", "2024-05-01T11:00:01Z", {"cause": "refund"}),
            ("session.adjusted", "2024-05-01T12:00:00Z", {
                "direction": "remove", "amount": money(30_000), "note": "safe drop"}),
        ], ("2024-05-01T16:00:00Z", {"counted": {"SEK": 82_800},
                                     "left_in_drawer": {"SEK": 50_000}, "note": "end of day"}),
            after=[z_report("2024-05-01T16:00:01Z", 1)]),
        # Opened by itself with the 500.00 left: still open. A 49.75 sale paid with 50.00 in
        # cash (SEK rounds cash to whole kronor: +0.25).
        r1.session("r1-2", "2024-05-01T16:30:00Z", {"SEK": 50_000}, [
            ("payment.recorded", "2024-05-01T16:30:00Z", {
                "kind": "cash_sale", "amount": money(5_000), "tendered": money(5_000),
                "change": money(0), "sale_amount": money(4_975), "rounding": money(25)}),
        ], automatic=True),
        # 5.00 over at close, then the next one starts 5.00 short and ends 1.00 short.
        r2.session("r2-1", "2024-05-01T07:00:00Z", {"SEK": 20_000}, [
            cash_sale("2024-05-01T07:30:00Z", money(10_000), money(2_000), money(8_000)),
        ], ("2024-05-01T12:00:00Z", {"counted": {"SEK": 28_500},
                                     "left_in_drawer": {"SEK": 20_000}})),
        r2.session("r2-2", "2024-05-01T12:30:00Z", {"SEK": 19_500}, [
            cash_sale("2024-05-01T13:00:00Z", money(5_000), money(2_000), money(3_000)),
            ("payment.recorded", "2024-05-01T13:30:00Z", {
                "kind": "cash_refund", "amount": money(1_000)}),
        ], ("2024-05-01T15:00:00Z", {"counted": {"SEK": 21_400},
                                     "left_in_drawer": {"SEK": 10_000}})),
        # Yen have no decimals: 20 short.
        r3.session("r3-1", "2024-05-01T09:00:00Z", {"JPY": 10_000}, [
            cash_sale("2024-05-01T09:30:00Z", money(2_000, "JPY"), money(500, "JPY"),
                      money(1_500, "JPY")),
        ], ("2024-05-01T15:00:00Z", {"counted": {"JPY": 11_480},
                                     "left_in_drawer": {"JPY": 10_000}})),
        # Training, 3.00 short: listed and marked, never in a total.
        Register("S1", "R4").session("t-1", "2024-05-01T10:00:00Z", {"SEK": 10_000}, [
            cash_sale("2024-05-01T10:30:00Z", money(2_000), money(0), money(2_000)),
        ], ("2024-05-01T11:00:00Z", {"counted": {"SEK": 11_700},
                                     "left_in_drawer": {"SEK": 10_000}}),
            training=True, after=[z_report("2024-05-01T11:00:01Z", None)]),
        # Closed by the register at 23:59 in Stockholm, nobody counting: no discrepancy at end.
        Register("S1", "R5").session("a-1", "2024-05-01T11:00:00Z", {"SEK": 10_000}, [], (
            "2024-05-01T21:59:00Z", {
                "counted": None, "discrepancy": None, "expected": {"SEK": 10_000},
                "left_in_drawer": {"SEK": 10_000}, "removed": {"SEK": 0}, "note": None,
                "counted_by": {}, "system": True, "reason": "auto_close",
                "due_at": "2024-05-01T21:59:00Z", "business_date": "2024-05-01"}),
            after=[z_report("2024-05-01T21:59:00Z", 1)]),
        # Another store's session never shows.
        Register("S2", "R1").session("s2-1", "2024-05-01T08:00:00Z", {"SEK": 0}, [
            cash_sale("2024-05-01T08:30:00Z", money(999_900), money(0), money(999_900))]),
    ]


# Sorted by the size of start + end discrepancy: 6.00, 5.00, 3.00 (training), 1.50, 20 yen,
# then 0 for the open one and the one nobody counted (newest first).
BY_DISCREPANCY_DESC = ["r2-2", "r2-1", "t-1", "r1-1", "r3-1", "r1-2", "a-1"]


# -- Chromium ---------------------------------------------------------------------------------


def ensure_chromium() -> None:
    """Debian's Chromium and chromedriver, installed with apt-get when missing (as root)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing and this test is not root: "
                    "install them with `apt-get install -y chromium chromium-driver`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("could not install chromium and chromium-driver with apt-get:\n"
                    + (done.stdout + done.stderr)[-3000:])


@contextmanager
def chromium(tmp_path: Path, downloads: Path) -> Iterator[WebDriver]:
    if webdriver is None:
        pytest.fail("selenium is not installed: .venv/bin/pip install selenium "
                    "(a dev dependency in pyproject.toml)")
    ensure_chromium()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False})
    # The driver's path given: Selenium Manager is skipped and nothing is downloaded.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(downloads)})
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
        yield driver
    finally:
        driver.quit()


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, WAIT).until(condition, f"waited {WAIT}s for {what}")


def text(driver: WebDriver, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def session_order(driver: WebDriver) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#sessions-table tbody tr[data-session-id]")
    return [str(r.get_attribute("data-session-id")) for r in rows]


def figures(scope: WebElement, row: str) -> list[str]:
    """The texts of a table row's cells, the row picked by a CSS selector under ``scope``."""
    cells = scope.find_elements(By.CSS_SELECTOR, f"{row} > th, {row} > td")
    return [str(c.text) for c in cells]


# -- the app ----------------------------------------------------------------------------------


def with_page(app: FastAPI) -> FastAPI:
    """The page as http.py serves it; mounted here only while http.py does not yet."""
    served = any(isinstance(r, Mount) and isinstance(r.app, StaticFiles)
                 and Path(str(r.app.directory)) == STATIC_DIR for r in app.routes)
    if not served:
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    return app


@dataclass
class Site:
    base: str
    storage: Storage


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    storage = SqliteStorage(tmp_path / "store.db")
    await storage.open()
    try:
        for row in build_sessions():
            await storage.upsert_session(row)
        await storage.upsert_register(RegisterRow(
            "S1", "R1", True, "2024-05-01T16:30:00Z", {"online": True},
            {"printer": {"configured": True, "connected": True, "paper": "out",
                         "state": "not_ready"},
             "drawer": {"configured": True, "state": "closed"}}, ["paper_out"]))
        await storage.upsert_register(RegisterRow(
            "S1", "R2", False, "2024-05-01T15:05:00Z", {"online": False},
            {"drawer": {"configured": True, "state": "open"}}, ["drawer_open"]))
        await storage.upsert_register(RegisterRow("S1", "R3", True, "2024-05-01T16:00:00Z"))
        await storage.add_alarm(Alarm("2024-05-01T15:00:01Z", "S1", "R2", "close_mismatch",
                                      {"session_id": "r2-2", "seq": 9}))
        server = HttpServer(with_page(create_app(storage, stores=["S1", "S2"])), "127.0.0.1", 0)
        task = asyncio.create_task(server.run())
        try:
            async with asyncio.timeout(10):
                await server.started.wait()
            yield Site(f"http://127.0.0.1:{server.port}", storage)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await storage.close()


# -- the page ---------------------------------------------------------------------------------


def drive(base: str, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with chromium(tmp_path, downloads) as driver:
        driver.get(f"{base}/?store=S1&from=2024-05-01&to=2024-05-01")
        until(driver, lambda d: d.find_element(
            By.CSS_SELECTOR, "#sessions-table th[data-sort=start]").get_attribute(
                "aria-sort") == "descending", "the session list, newest first")
        until(driver, lambda d: all(d.find_element(By.ID, s).get_attribute("aria-busy")
                                    == "false" for s in ("discrepancies", "cash", "registers",
                                                         "alarms")), "every summary")
        assert "Europe/Stockholm" in text(driver, "#status")
        assert not driver.find_elements(By.CSS_SELECTOR, ".section-error")

        # Newest first: opening times shown in the store's zone (08:00 UTC is 10:00 there).
        assert session_order(driver) == ["r1-2", "r2-2", "a-1", "t-1", "r3-1", "r1-1", "r2-1"]
        sessions = driver.find_element(By.ID, "sessions-table")
        assert figures(sessions, "tr[data-session-id=r1-1]") == [
            "2024-05-01 10:00", "2024-05-01 18:00", "R1 #1", "Closed", "-1.50 SEK"]
        assert figures(sessions, "tr[data-session-id=r1-2]") == [
            "2024-05-01 18:30", "—", "R1 #2", "Open", "0.00 SEK"]
        assert figures(sessions, "tr[data-session-id=r3-1]")[-1] == "-20 JPY"
        # Training: marked in the list; the auto-closed one: its end was not counted.
        training = driver.find_element(By.CSS_SELECTOR, "tr[data-session-id=t-1]")
        assert training.get_attribute("data-training") == "true"
        assert figures(sessions, "tr[data-session-id=t-1]")[2:] == [
            "R4 #1", "Closed Training", "-3.00 SEK"]
        assert not driver.find_elements(By.CSS_SELECTOR,
                                        "tr[data-session-id=r1-1][data-training]")
        assert figures(sessions, "tr[data-session-id=a-1]")[1:] == [
            "2024-05-01 23:59", "R5 #1", "Closed", "0.00 SEK\nnot counted"]
        cell = driver.find_element(By.CSS_SELECTOR,
                                   "tr[data-session-id=r1-1] td[data-figure=discrepancy]")
        assert cell.value_of_css_property("text-align") == "right"

        # Discrepancy summary: per currency in total, and per session.
        disc = driver.find_element(By.ID, "discrepancies")
        assert figures(disc, "#disc-totals tr[data-currency=SEK]") == [
            "SEK", "-5.00 SEK", "2.50 SEK", "-2.50 SEK"]
        assert figures(disc, "#disc-totals tr[data-currency=JPY]") == [
            "JPY", "0 JPY", "-20 JPY", "-20 JPY"]
        assert figures(disc, "#disc-sessions tr[data-session-id=r1-1]") == [
            "R1 #1", "2024-05-01 10:00", "0.00 SEK", "-1.50 SEK", "-1.50 SEK"]
        assert figures(disc, "#disc-sessions tr[data-session-id=r2-2]")[2:] == [
            "-5.00 SEK", "-1.00 SEK", "-6.00 SEK"]
        # The totals above leave out t-1's -3.00 and a-1's unknown end, and say so.
        assert figures(disc, "#disc-sessions tr[data-session-id=t-1]") == [
            "R4 #1 Training", "2024-05-01 12:00", "0.00 SEK", "-3.00 SEK", "-3.00 SEK"]
        assert figures(disc, "#disc-sessions tr[data-session-id=a-1]")[2:] == [
            "0.00 SEK", "not counted", "0.00 SEK"]
        assert text(driver, "#disc-note") == (
            "Not in the totals: 1 training session; the end of 1 session closed without a "
            "count.")

        # Cash payments: gross = tendered − change, refunds, net.
        cash = driver.find_element(By.ID, "cash")
        assert figures(cash, "#cash-table tr[data-currency=SEK]") == [
            "SEK", "309.50 SEK", "30.00 SEK", "279.50 SEK"]
        assert figures(cash, "#cash-table tr[data-currency=JPY]") == [
            "JPY", "1500 JPY", "0 JPY", "1500 JPY"]
        assert text(driver, "#cash-counts") == (
            "5 cash payments and 2 refunds in 6 sessions; 1 training session left out.")
        assert "999" not in cash.text  # store S2's sale

        # Registers: online status and device alarms; the store's alarms in the range.
        registers = driver.find_element(By.ID, "registers")
        r1 = figures(registers, "tr[data-register=R1]")
        assert (r1[0], r1[1], r1[4]) == ("R1", "Online", "Paper out")
        r2 = figures(registers, "tr[data-register=R2]")
        assert (r2[1], r2[2]) == ("Offline", "2024-05-01 17:05")
        assert r2[4].startswith("Drawer left open")
        assert "1 stored alarm, latest: Close figures differ from the events" in r2[4]
        assert figures(registers, "tr[data-register=R3]")[4] == "None"
        assert text(driver, "#registers-counts") == "2 online, 1 offline, 2 with device alarms."
        assert "Close figures differ from the events" in text(driver, "#alarms-list")

        # Sorting by discrepancy: largest first, then the other way round.
        header = "#sessions-table th[data-sort=discrepancy]"
        driver.find_element(By.CSS_SELECTOR, f"{header} button").click()
        until(driver, lambda d: d.find_element(By.CSS_SELECTOR, header).get_attribute(
            "aria-sort") == "descending", "the list by discrepancy, largest first")
        assert session_order(driver) == BY_DISCREPANCY_DESC
        assert driver.find_element(By.CSS_SELECTOR, "th[data-sort=start]").get_attribute(
            "aria-sort") == "none"
        driver.find_element(By.CSS_SELECTOR, f"{header} button").click()
        until(driver, lambda d: d.find_element(By.CSS_SELECTOR, header).get_attribute(
            "aria-sort") == "ascending", "the list by discrepancy, smallest first")
        assert session_order(driver) == BY_DISCREPANCY_DESC[::-1]
        assert "sort=discrepancy&order=asc" in driver.current_url

        # CSV export: what the list shows, with the same filters and order, downloaded.
        link = driver.find_element(By.ID, "export-csv")
        href = str(link.get_attribute("href"))
        assert link.get_attribute("download") is not None
        assert href.startswith(f"{base}/api/v1/stores/S1/sessions?")
        for part in ("from=2024-05-01", "to=2024-05-01", "tz=Europe%2FStockholm",
                     "sort=discrepancy", "order=asc", "format=csv"):
            assert part in href, (part, href)
        link.click()
        found = until(driver, lambda d: [p for p in downloads.iterdir()
                                         if p.suffix == ".csv"] or False, "the CSV download")
        assert len(found) == 1
        name = found[0].name
        assert name.startswith("S1-sessions-") and name.endswith("-discrepancy-asc.csv"), name
        body = found[0].read_bytes()
        with urllib.request.urlopen(href, timeout=10) as served:
            assert body == served.read()
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert [r["session_id"] for r in rows] == BY_DISCREPANCY_DESC[::-1]
        worked = next(r for r in rows if r["session_id"] == "r1-1")
        assert (worked["currency"], worked["discrepancy_minor"], worked["discrepancy"]) == (
            "SEK", "-150", "-1.50")

        # A session's detail: click its row.
        driver.find_element(By.CSS_SELECTOR,
                            "#sessions-table tr[data-session-id=r1-1] td:nth-child(3)").click()
        until(driver, lambda d: d.find_element(By.ID, "detail-body").get_attribute(
            "data-session-id") == "r1-1", "the detail of r1-1")
        dialog = driver.find_element(By.ID, "detail")
        assert dialog.get_attribute("open") is not None
        assert text(driver, "#detail-h") == "Register R1 · session 1"
        overview = {str(d.find_element(By.TAG_NAME, "dt").text):
                    str(d.find_element(By.TAG_NAME, "dd").text)
                    for d in dialog.find_element(By.CSS_SELECTOR, "dl.pairs").find_elements(
                        By.CSS_SELECTOR, ":scope > div")}
        assert overview == {
            "Status": "Closed", "Opened": "2024-05-01 10:00", "Opened by": "e17",
            "Opened automatically": "No", "Opening note": "morning float",
            "Closed": "2024-05-01 18:00", "Closed by": "e17", "Closing note": "end of day",
            "Z report": "1", "Total sales": "449.50 SEK", "Session id": "r1-1"}

        def figure(key: str) -> list[str]:
            return figures(dialog, f"tr[data-figure={key}]")

        assert figure("starting_float") == ["Starting float", "1000.00 SEK"]
        assert figure("discrepancy_at_start") == [
            "Discrepancy at start (first session of the register)", "—"]
        assert figure("cash_sales") == ["Cash payments (1)", "149.50 SEK"]
        assert figure("cash_refunds") == ["Cash refunds (1)", "20.00 SEK"]
        assert figure("adjustments_removed") == ["Cash removed (adjustments)", "300.00 SEK"]
        assert figure("expected") == ["Expected at close", "829.50 SEK"]
        assert figure("counted") == ["Counted", "828.00 SEK"]
        assert figure("discrepancy") == ["Discrepancy at close", "-1.50 SEK"]
        assert figure("left_in_drawer") == ["Left in drawer", "500.00 SEK"]
        assert figure("removed") == ["Cash removed at close", "328.00 SEK"]
        assert not dialog.find_elements(By.CSS_SELECTOR, "tr[data-figure=expected_cash]")
        assert figures(dialog, "tr[data-direction=remove]") == [
            "2024-05-01 14:00", "e17", "Removed", "300.00 SEK", "safe drop"]
        assert figures(dialog, "tr[data-payment-type=cash]") == ["Cash", "2", "129.50 SEK"]
        assert figures(dialog, "tr[data-payment-type=card]") == ["Card", "1", "320.00 SEK"]
        assert figures(dialog, "tr[data-payment-type=total]") == [
            "Total sales", "", "449.50 SEK"]
        assert figures(dialog, "tr[data-cause=sale]") == ["Sale", "1"]
        assert figures(dialog, "tr[data-cause=refund]") == ["Refund", "1"]
        # Balances per payment type and currency: opening, payments, deposits, withdrawals,
        # balance; cash's balance is the expected cash.
        assert figures(dialog, "tr[data-balance=cash][data-currency=SEK]") == [
            "Cash", "1000.00 SEK", "129.50 SEK", "0.00 SEK", "300.00 SEK", "829.50 SEK"]
        assert figures(dialog, "tr[data-balance=card][data-currency=SEK]") == [
            "Card", "0.00 SEK", "320.00 SEK", "0.00 SEK", "0.00 SEK", "320.00 SEK"]
        assert not dialog.find_elements(By.CSS_SELECTOR, "tr[data-figure=rounding]")
        driver.find_element(By.ID, "detail-close").click()
        until(driver, lambda d: d.find_element(By.ID, "detail").get_attribute("open") is None,
              "the detail to close")

        # An open session's detail: its expected cash now, no close figures.
        driver.find_element(
            By.CSS_SELECTOR, "#sessions-table tr[data-session-id=r1-2] button.open-detail").click()
        until(driver, lambda d: d.find_element(By.ID, "detail-body").get_attribute(
            "data-session-id") == "r1-2", "the detail of r1-2")
        assert figure("expected_start") == ["Left by the previous session", "500.00 SEK"]
        assert figure("expected_cash") == ["Expected cash now", "550.00 SEK"]
        assert figure("rounding") == ["Cash rounding (in the payments)", "0.25 SEK"]
        assert not dialog.find_elements(By.CSS_SELECTOR, "tr[data-figure=counted]")
        assert not dialog.find_elements(By.CSS_SELECTOR, "[data-field=z_report]")
        driver.find_element(By.ID, "detail-close").click()
        until(driver, lambda d: d.find_element(By.ID, "detail").get_attribute("open") is None,
              "the detail to close")

        # Closed by the register itself: nobody counted, so no counted cash, no discrepancy.
        driver.find_element(
            By.CSS_SELECTOR, "#sessions-table tr[data-session-id=a-1] button.open-detail").click()
        until(driver, lambda d: d.find_element(By.ID, "detail-body").get_attribute(
            "data-session-id") == "a-1", "the detail of a-1")
        assert text(driver, "[data-field=closed_by] dd") == (
            "System (automatic close, due 2024-05-01 23:59, business day 2024-05-01), "
            "not counted")
        assert text(driver, "[data-field=z_report] dd") == "1"
        assert figure("counted") == ["Counted", "not counted"]
        assert figure("discrepancy") == ["Discrepancy at close", "not counted"]
        assert figure("left_in_drawer") == ["Left in drawer", "100.00 SEK"]
        assert figures(dialog, "tr[data-balance=cash][data-currency=SEK]")[-1] == "100.00 SEK"
        driver.find_element(By.ID, "detail-close").click()
        until(driver, lambda d: d.find_element(By.ID, "detail").get_attribute("open") is None,
              "the detail to close")

        # A training session's detail: marked, no Z number.
        driver.find_element(
            By.CSS_SELECTOR, "#sessions-table tr[data-session-id=t-1] button.open-detail").click()
        until(driver, lambda d: d.find_element(By.ID, "detail-body").get_attribute(
            "data-session-id") == "t-1", "the detail of t-1")
        assert text(driver, "#detail-h") == "Register R4 · session 1 Training"
        assert text(driver, "[data-field=training] dd") == "Yes: not in any total"
        assert text(driver, "[data-field=z_report] dd") == "None (training)"
        driver.find_element(By.ID, "detail-close").click()
        until(driver, lambda d: d.find_element(By.ID, "detail").get_attribute("open") is None,
              "the detail to close")

        # A narrow window: the page itself never scrolls sideways, the tables do inside.
        driver.set_window_size(360, 800)
        until(driver, lambda d: d.execute_script(
            "return window.innerWidth") <= 400, "the narrow window")
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        worked = driver.find_element(By.CSS_SELECTOR,
                                     "tr[data-session-id=r1-1] td[data-figure=discrepancy]")
        assert worked.get_attribute("data-label") == "Discrepancy"
        assert driver.execute_script(  # the row is a card: its discrepancy is in view
            "const r = arguments[0].getBoundingClientRect();"
            "return r.left >= 0 && r.right <= window.innerWidth", worked)


async def test_the_store_page_in_chromium(site: Site, tmp_path: Path) -> None:
    await asyncio.to_thread(drive, site.base, tmp_path)
