"""Issue 9 on the store page, in Chromium: the safes' figures, a safe step recorded from the
page, the transfer tabs, and a manual reconciliation refused without a reason, then done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from kassad.daemon.store.cashbook import CashBook
from kassad.daemon.store.http import HttpServer, create_app
from kassad.daemon.store.storage.sqlite import SqliteStorage
from tests.integration.test_store_safes import SAFES, Till
from tests.integration.test_store_web import chromium, figures, text, until


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[str]:
    storage = SqliteStorage(tmp_path / "store.db")
    await storage.open()
    try:
        book = CashBook(storage, SAFES)
        till = Till("R1")
        till.open("s-1")
        till.out("s-1", ("safe", "SAFE1"), {"SEK": 30_000})
        await book.take_events(till.rows)
        server = HttpServer(create_app(storage, ["S1"], cashbook=book), "127.0.0.1", 0)
        task = asyncio.create_task(server.run())
        try:
            async with asyncio.timeout(10):
                await server.started.wait()
            yield f"http://127.0.0.1:{server.port}"
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await storage.close()


def record(driver: WebDriver, action: str, amount: str, register: str = "") -> None:
    Select(driver.find_element(By.ID, "safe-action")).select_by_value(action)
    for field, value in (("safe-amount", amount), ("safe-register", register),
                         ("safe-employee", "mia")):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#safe-form button[type=submit]").click()


def open_ids(driver: WebDriver) -> list[str] | None:
    """The transfer rows shown (None while the table is being redrawn)."""
    try:
        rows = driver.find_elements(By.CSS_SELECTOR,
                                    "#transfers-table tbody tr[data-transfer-id]")
        return [str(r.get_attribute("data-transfer-id")) for r in rows]
    except StaleElementReferenceException:
        return None


def safe_row(driver: WebDriver) -> list[str] | None:
    try:
        return figures(driver.find_element(By.ID, "safes-table"), "tbody tr[data-safe=SAFE1]")
    except StaleElementReferenceException:
        return None


def drive(base: str, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with chromium(tmp_path, downloads) as driver:
        driver.get(f"{base}/?store=S1&from=2024-05-01&to=2024-05-01")
        until(driver, lambda d: open_ids(d) == ["R1-T1"], "the open drop")
        assert (safe_row(driver) or [""])[0] == "Back office (no start amount)"
        record(driver, "declare_start", "1000")
        until(driver, lambda d: "Recorded: transfer SAFE1-S1 (unreconciled)." in text(
            d, "#safes-status"), "the start amount")
        # The start amount came from outside the store: an open transfer of its own.
        until(driver, lambda d: open_ids(d) == ["R1-T1", "SAFE1-S1"], "the start amount open")
        until(driver, lambda d: (safe_row(d) or [""] * 6)[5] == "1000.00 SEK",
              "the expected amount")
        # The drop received 10.00 short without naming it: a second open transfer.
        record(driver, "receipt", "290,00", "R1")
        until(driver, lambda d: open_ids(d) == ["R1-T1", "SAFE1-S1", "SAFE1-S2"], "the receipt")
        until(driver, lambda d: (safe_row(d) or [""] * 6)[5] == "1290.00 SEK", "receipts")
        for transfer_id in ("R1-T1", "SAFE1-S2"):  # the drop and its receipt
            driver.find_element(By.CSS_SELECTOR, f"#transfers-table tbody "
                                f"tr[data-transfer-id='{transfer_id}'] input").click()
        driver.find_element(By.ID, "manager").send_keys("mia")
        driver.find_element(By.CSS_SELECTOR, "#reconcile-form button[value=reconcile]").click()
        until(driver, lambda d: "reason is required" in text(d, "#safes-status"), "the refusal")
        driver.find_element(By.ID, "reason").send_keys("10.00 kept for change")
        driver.find_element(By.CSS_SELECTOR, "#reconcile-form button[value=reconcile]").click()
        until(driver, lambda d: open_ids(d) == ["SAFE1-S1"], "only the start amount open")
        start_row = figures(driver.find_element(By.ID, "transfers-table"),
                            "tbody tr[data-transfer-id='SAFE1-S1']")
        assert start_row[2] == "outside the store (start amount) → safe SAFE1"
        driver.find_element(By.ID, "tab-reconciled").click()
        until(driver, lambda d: open_ids(d) == ["R1-T1", "SAFE1-S2"], "the reconciled tab")
        row = figures(driver.find_element(By.ID, "transfers-table"),
                      "tbody tr[data-transfer-id='R1-T1']")
        assert row[1:] == ["R1-T1", "R1 → safe SAFE1", "300.00 SEK", row[4], "Reconciled",
                           "SAFE1-S2", "mia (manager)", "10.00 kept for change"]
        assert driver.find_element(By.ID, "tab-reconciled").get_attribute(
            "aria-selected") == "true"
        driver.find_element(By.CSS_SELECTOR, "#safe-ledger summary").click()
        steps = driver.find_elements(By.CSS_SELECTOR, "#ledger-table tbody tr[data-kind]")
        assert [str(r.get_attribute("data-kind")) for r in steps] == [
            "safe.declare_start", "safe.receipt"]
        assert figures(driver.find_element(By.ID, "ledger-table"),
                       "tbody tr[data-kind='safe.receipt']")[1:] == [
            "Receipt", "290.00 SEK", "mia", "register R1 · SAFE1-S2"]
        assert "status=reconciled" in str(driver.find_element(
            By.ID, "transfers-csv").get_attribute("href"))


async def test_safes_and_transfers_on_the_store_page(site: str, tmp_path: Path) -> None:
    await asyncio.to_thread(drive, site, tmp_path)
