"""Issue 9, the store's pure rules: safe figures, automatic matching, manual reconciliation."""

from __future__ import annotations

from typing import Any

import pytest

from kassad.daemon.store import safes
from kassad.daemon.store.config import StoreConfig
from kassad.daemon.store.safes import CashRuleError
from kassad.daemon.store.storage.base import CashStep, TransferRow


def transfer(tid: str, side: str, owner: str, direction: str, party: tuple[str, str],
             amounts: dict[str, int], **kw: Any) -> TransferRow:
    return TransferRow(store="S1", transfer_id=tid, side=side, owner=owner,  # type: ignore[arg-type]
                       direction=direction, party={"kind": party[0], "id": party[1]},  # type: ignore[arg-type]
                       amounts=amounts, ts="2024-05-01T10:00:00Z", **kw)


DROP = transfer("R1-T1", "register", "R1", "out", ("safe", "SAFE1"), {"SEK": 50_000})
RECEIPT = transfer("SAFE1-S1", "safe", "SAFE1", "in", ("register", "R1"), {"SEK": 50_000},
                   of_transfer="R1-T1")


def step(kind: str, **data: Any) -> CashStep:
    return CashStep("S1", "2024-05-01T10:00:00Z", kind, "SAFE1", data)


# -- automatic matching ---------------------------------------------------------------------


def test_an_in_naming_a_balanced_out_matches_it_either_way_round() -> None:
    assert safes.auto_match(RECEIPT, [DROP]) == DROP
    assert safes.auto_match(DROP, [RECEIPT]) == RECEIPT


@pytest.mark.parametrize("receipt", [
    transfer("SAFE1-S1", "safe", "SAFE1", "in", ("register", "R1"), {"SEK": 49_900},
             of_transfer="R1-T1"),  # another amount
    transfer("SAFE1-S1", "safe", "SAFE1", "in", ("register", "R1"), {"SEK": 50_000}),  # unnamed
    transfer("SAFE1-S1", "safe", "SAFE1", "in", ("register", "R2"), {"SEK": 50_000},
             of_transfer="R1-T1"),  # another sender named
    transfer("SAFE2-S1", "safe", "SAFE2", "in", ("register", "R1"), {"SEK": 50_000},
             of_transfer="R1-T1"),  # the drop went to SAFE1
    transfer("SAFE1-S1", "safe", "SAFE1", "in", ("register", "R1"), {"SEK": 50_000},
             of_transfer="R1-T1", status="reconciled"),
])
def test_no_automatic_match_unless_named_balanced_and_open(receipt: TransferRow) -> None:
    assert safes.auto_match(receipt, [DROP]) is None


def test_an_already_reconciled_out_is_not_matched_again() -> None:
    done = safes.reconciled(DROP, "X", {"role": "system", "employee": None}, None)
    assert safes.auto_match(RECEIPT, [done]) is None


def test_zero_amounts_do_not_unbalance() -> None:
    assert safes.same_amounts({"SEK": 100, "EUR": 0}, {"SEK": 100})
    assert not safes.same_amounts({"SEK": 100, "EUR": 1}, {"SEK": 100})


# -- by hand ----------------------------------------------------------------------------------


def test_a_balanced_pair_needs_no_reason() -> None:
    unnamed = transfer("SAFE1-S1", "safe", "SAFE1", "in", ("register", "R1"), {"SEK": 50_000})
    assert safes.plan_manual_reconcile([DROP, unnamed], None) == [DROP, unnamed]


def test_an_unbalanced_pair_without_a_reason_is_refused_with_the_difference() -> None:
    short = transfer("SAFE1-S1", "safe", "SAFE1", "in", ("register", "R1"), {"SEK": 49_000})
    with pytest.raises(CashRuleError) as refused:
        safes.plan_manual_reconcile([short, DROP], "  ")
    assert refused.value.status == 400
    assert "do not balance" in refused.value.message
    message = refused.value.message
    assert "{'SEK': -1000}" in message and "reason is required" in message
    assert safes.plan_manual_reconcile([short, DROP], "10.00 missing in the bag")


def test_parties_that_differ_need_a_reason_too() -> None:
    other = transfer("SAFE2-S1", "safe", "SAFE2", "in", ("register", "R1"), {"SEK": 50_000})
    with pytest.raises(CashRuleError, match="parties differ"):
        safes.plan_manual_reconcile([DROP, other], None)


def test_a_lone_transfer_needs_a_reason() -> None:
    with pytest.raises(CashRuleError) as refused:
        safes.plan_manual_reconcile([DROP], None)
    assert refused.value.status == 400
    assert safes.plan_manual_reconcile([DROP], "start amount counted into the drawer")


@pytest.mark.parametrize(("rows", "status"), [
    ([DROP, DROP], 422),
    ([DROP, transfer("R2-T1", "register", "R2", "out", ("safe", "SAFE1"), {"SEK": 1})], 422),
    ([safes.reconciled(DROP, "SAFE1-S1", {"role": "system"}, None), RECEIPT], 409),
    ([], 422),
])
def test_what_cannot_be_reconciled(rows: list[TransferRow], status: int) -> None:
    with pytest.raises(CashRuleError) as refused:
        safes.plan_manual_reconcile(rows, "a reason")
    assert refused.value.status == status


def test_unreconciled_forgets_the_counterpart_and_keeps_who_and_why() -> None:
    done = safes.reconciled(DROP, "SAFE1-S1", {"role": "system", "employee": None}, None)
    undone = safes.unreconciled(done, {"employee": "mia", "role": "manager"}, "wrong bag")
    assert (undone.status, undone.counterpart, undone.by, undone.reason) == (
        "unreconciled", None, {"employee": "mia", "role": "manager"}, "wrong bag")


# -- safes ------------------------------------------------------------------------------------


def test_safe_figures_are_start_plus_receipts_minus_floats_and_deposits() -> None:
    figures = safes.fold_safe("SAFE1", [
        step("safe.declare_start", amounts={"SEK": 500_000}),
        step("safe.float_issued", amounts={"SEK": 100_000}, transfer_id="SAFE1-S1"),
        step("safe.receipt", amounts={"SEK": 250_000, "EUR": 5_000}, transfer_id="SAFE1-S2"),
        step("safe.bank_deposit", amounts={"SEK": 400_000}),
        step("safe.count", counted={"SEK": 249_000, "EUR": 5_000},
             expected={"SEK": 250_000, "EUR": 5_000}, discrepancy={"SEK": -1_000}),
        CashStep("S1", "2024-05-01T10:00:00Z", "safe.receipt", "SAFE2",
                 {"amounts": {"SEK": 1}}),  # another safe's
    ])
    assert figures.as_dict() == {
        "safe": "SAFE1", "declared": True, "start": {"SEK": 500_000},
        "receipts": {"EUR": 5_000, "SEK": 250_000}, "floats_issued": {"SEK": 100_000},
        "bank_deposits": {"SEK": 400_000}, "expected": {"EUR": 5_000, "SEK": 250_000},
        "last_count": {"ts": "2024-05-01T10:00:00Z", "employee": None,
                       "counted": {"SEK": 249_000, "EUR": 5_000},
                       "expected": {"SEK": 250_000, "EUR": 5_000},
                       "discrepancy": {"SEK": -1_000}}}
    assert safes.safe_transfer_id("SAFE1", figures) == "SAFE1-S3"


def test_the_start_is_declared_once_and_first() -> None:
    empty = safes.fold_safe("SAFE1", [])
    assert safes.plan_safe_step(empty, "declare_start", {"SEK": 0}) == {"amounts": {"SEK": 0}}
    declared = safes.fold_safe("SAFE1", [step("safe.declare_start", amounts={"SEK": 1})])
    with pytest.raises(CashRuleError, match="already declared"):
        safes.plan_safe_step(declared, "declare_start", {"SEK": 1})
    received = safes.fold_safe("SAFE1", [step("safe.receipt", amounts={"SEK": 1})])
    with pytest.raises(CashRuleError, match="before anything else"):
        safes.plan_safe_step(received, "declare_start", {"SEK": 1})


def test_no_float_or_deposit_beyond_what_the_safe_holds() -> None:
    figures = safes.fold_safe("SAFE1", [step("safe.declare_start", amounts={"SEK": 1_000})])
    assert safes.plan_safe_step(figures, "float", {"SEK": 1_000}) == {"amounts": {"SEK": 1_000}}
    for action in ("float", "bank_deposit"):
        with pytest.raises(CashRuleError) as refused:
            safes.plan_safe_step(figures, action, {"SEK": 1_001})  # type: ignore[arg-type]
        assert refused.value.status == 409
    with pytest.raises(CashRuleError):
        safes.plan_safe_step(figures, "bank_deposit", {"EUR": 1})


def test_a_count_gives_the_discrepancy_per_currency() -> None:
    figures = safes.fold_safe("SAFE1", [step("safe.declare_start", amounts={"SEK": 1_000,
                                                                            "EUR": 200})])
    assert safes.plan_safe_step(figures, "count", {"SEK": 950, "NOK": 10}) == {
        "counted": {"SEK": 950, "NOK": 10}, "expected": {"EUR": 200, "SEK": 1_000},
        "discrepancy": {"EUR": -200, "NOK": 10, "SEK": -50}}


@pytest.mark.parametrize("amounts", [{}, {"sek": 1}, {"SEK": -1}, {"SEK": 0}, {"SEK": 1.5},
                                     {"SEK": True}])
def test_amounts_are_positive_integers_per_iso_code(amounts: dict[str, Any]) -> None:
    with pytest.raises(CashRuleError) as refused:
        safes.clean_amounts(amounts)
    assert refused.value.status == 422


def test_the_configuration_lists_each_served_stores_safes() -> None:
    config = StoreConfig(stores=["S1", "S2"], safes={"S1": [{"id": "SAFE1", "name": "Back"},
                                                            {"id": "SAFE2"}]})
    assert config.safes_by_store() == {"S1": {"SAFE1": "Back", "SAFE2": "SAFE2"}, "S2": {}}
    with pytest.raises(ValueError, match="not in stores"):
        StoreConfig(stores=["S1"], safes={"S9": [{"id": "SAFE1"}]})
    with pytest.raises(ValueError, match="listed twice"):
        StoreConfig(stores=["S1"], safes={"S1": [{"id": "SAFE1"}, {"id": "SAFE1"}]})
