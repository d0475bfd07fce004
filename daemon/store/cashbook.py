"""The store's cash book (issue 9): safes' ledgers and the transfer ledger, kept by the
aggregator in its storage, with the rules of :mod:`.safes`.

Registers' ``cash.transferred_out`` / ``cash.transferred_in`` events come from the ingest
(:meth:`CashBook.take_events`, after their sessions are stored; a replay at start-up finds them
already recorded). Safe operations and manual (un)reconciliations come from the store view.
Every change is one storage transaction of the transfer rows and the steps that say who and
why; then each register involved is told with the ``cash.reconciliation`` command (``notify``).
One lock serialises the book within this process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..contract.events import utc_timestamp
from . import safes
from .safes import CashRuleError, SafeAction
from .storage.base import CashStep, EventRow, Storage, TransferRow

_LOGGER = logging.getLogger(__name__)

TRANSFER_EVENTS = frozenset({"cash.transferred_out", "cash.transferred_in"})
#: store, register, the ``cash.reconciliation`` command's params
Notify = Callable[[str, str, dict[str, Any]], Awaitable[None]]
SYSTEM = {"employee": None, "role": "system"}


def transfer_from_event(row: EventRow) -> TransferRow:
    event = json.loads(row.body)
    data = event.get("data") or {}
    outgoing = row.type == "cash.transferred_out"
    party: dict[str, Any] = data["to"] if outgoing else data["from"]
    return TransferRow(
        store=row.store, transfer_id=str(data["transfer_id"]), side="register",
        owner=row.register, direction="out" if outgoing else "in",
        party={"kind": str(party["kind"]), "id": str(party["id"])},
        amounts={str(c): int(v) for c, v in data["amounts"].items()}, ts=row.ts,
        of_transfer=data.get("of_transfer"), session_id=row.session_id,
        employee=(event.get("actor") or {}).get("employee"), bag=data.get("bag"),
        seal=data.get("seal"), note=data.get("note"))


def _transfer_dict(row: TransferRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in TransferRow.__dataclass_fields__}


class CashBook:
    def __init__(self, storage: Storage, safes_by_store: Mapping[str, Mapping[str, str]],
                 notify: Notify | None = None,
                 clock: Callable[[], str] = utc_timestamp,
                 managers: Mapping[str, Iterable[str]] | None = None) -> None:
        """``safes_by_store``: store → {safe id: name}; ``managers``: store → the employees
        with the manager role (a store not listed takes the role a request claims)."""
        self.storage = storage
        self.safes = safes_by_store
        self.managers = {store: frozenset(ids) for store, ids in (managers or {}).items()}
        self._notify = notify
        self._clock = clock
        self._lock = asyncio.Lock()

    # -- helpers ----------------------------------------------------------------------------------

    def _safe(self, store: str, safe: str) -> str:
        if safe not in self.safes.get(store, {}):
            raise CashRuleError(404, f"store {store} has no safe {safe!r}")
        return safe

    async def _told(self, rows: Iterable[TransferRow]) -> None:
        """Tell each register whose transfer changed (after the commit)."""
        if self._notify is None:
            return
        for row in rows:
            if row.side != "register":
                continue
            try:
                await self._notify(row.store, row.owner, self.notice(row))
            except Exception:  # the book is stored; the register is told again on request
                _LOGGER.exception("cannot tell %s/%s about %s", row.store, row.owner,
                                  row.transfer_id)

    @staticmethod
    def notice(row: TransferRow) -> dict[str, Any]:
        """The ``cash.reconciliation`` params that tell a register this row's status."""
        return {"transfer_id": row.transfer_id, "status": row.status,
                "counterpart": row.counterpart, "by": row.by or SYSTEM, "reason": row.reason}

    async def untold(self, store: str) -> list[tuple[str, dict[str, Any]]]:
        """(register, params) for each transfer of an open register session whose status in
        the register's own events (the session's summary) differs from the book's: a notice
        lost with a crash, or sent while the register was away. Sent again by the service."""
        out: list[tuple[str, dict[str, Any]]] = []
        for session in await self.storage.sessions([store], datetime.now(UTC), None):
            if session.status != "open":
                continue
            for seen in session.summary.get("transfers") or []:
                row = await self.storage.transfer(store, str(seen.get("transfer_id")))
                if row is None or row.side != "register" or row.owner != session.register:
                    continue
                if (seen.get("status"), seen.get("counterpart")) != (row.status,
                                                                       row.counterpart):
                    out.append((row.owner, self.notice(row)))
        return out

    @staticmethod
    def _step(row: TransferRow, kind: str, ts: str, data: dict[str, Any] | None = None
              ) -> CashStep:
        by = row.by or {}
        return CashStep(store=row.store, ts=ts, kind=kind, subject=row.transfer_id,
                        data=data if data is not None else {"counterpart": row.counterpart},
                        employee=by.get("employee"), role=by.get("role"), reason=row.reason)

    async def _auto(self, new: TransferRow, ts: str) -> list[TransferRow]:
        """``new`` (not yet stored) and the transfer it reconciles with by itself, if any."""
        if new.direction == "in":
            named = (None if new.of_transfer is None
                     else await self.storage.transfer(new.store, new.of_transfer))
            candidates = [] if named is None else [named]
        else:
            candidates = await self.storage.transfers(new.store, of_transfer=new.transfer_id)
        other = safes.auto_match(new, candidates)
        if other is None:
            return [new]
        return [safes.reconciled(new, other.transfer_id, SYSTEM, None),
                safes.reconciled(other, new.transfer_id, SYSTEM, None)]

    async def _record(self, new: TransferRow, extra: list[CashStep]) -> list[TransferRow] | None:
        """Store a new transfer (reconciled with its counterpart if they match); None: it is
        stored already (by another aggregator on the same database)."""
        for _ in range(5):
            ts = self._clock()
            rows = await self._auto(new, ts)
            steps = [*extra, self._step(new, "transfer.recorded", ts, _transfer_dict(new))]
            expect = None
            if len(rows) == 2:
                steps += [self._step(r, "transfer.reconciled", ts) for r in rows]
                expect = {rows[1].transfer_id: "unreconciled"}
            if await self.storage.save_cash(rows, steps, new=new.transfer_id, expect=expect):
                return rows
            if await self.storage.transfer(new.store, new.transfer_id) is not None:
                return None
            # The counterpart changed meanwhile (another aggregator): match again.
        raise CashRuleError(409, f"transfer {new.transfer_id}: the book keeps changing; "
                                 "try again")

    # -- from the registers -----------------------------------------------------------------------

    async def take_events(self, rows: list[EventRow]) -> None:
        """The ingest's hook: registers' transfer events, in stream order."""
        changed: list[TransferRow] = []
        async with self._lock:
            for row in rows:
                if row.type not in TRANSFER_EVENTS:
                    continue
                try:
                    new = transfer_from_event(row)
                except (KeyError, TypeError, ValueError) as e:
                    _LOGGER.warning("%s/%s seq %s: not a transfer: %s", row.store, row.register,
                                    row.seq, e)
                    continue
                if await self.storage.transfer(new.store, new.transfer_id) is not None:
                    continue  # seen before (a replay at start-up)
                try:
                    rows_saved = await self._record(new, [])
                except CashRuleError as e:  # recorded at the next start-up's replay
                    _LOGGER.error("%s/%s seq %s: %s", row.store, row.register, row.seq, e)
                    continue
                if rows_saved is not None and len(rows_saved) == 2:
                    changed += rows_saved
        await self._told(changed)

    # -- safes ------------------------------------------------------------------------------------

    async def safe_figures(self, store: str, safe: str) -> tuple[safes.SafeFigures,
                                                                 list[CashStep]]:
        self._safe(store, safe)
        steps = await self.storage.cash_steps(store, safe)
        return safes.fold_safe(safe, steps), steps

    async def safe_action(self, store: str, safe: str, action: SafeAction,
                          amounts: Mapping[str, Any], *, employee: str | None,
                          register: str | None = None, of_transfer: str | None = None,
                          bag: str | None = None, seal: str | None = None,
                          note: str | None = None) -> dict[str, Any]:
        """One step of a safe's ledger; a receipt or a float is a transfer too (returned)."""
        changed: list[TransferRow] = []
        async with self._lock:
            figures, _ = await self.safe_figures(store, safe)
            data = safes.plan_safe_step(figures, action, amounts)
            ts = self._clock()
            kind = "safe.float_issued" if action == "float" else f"safe.{action}"
            extra = {k: v for k, v in (("bag", bag), ("seal", seal), ("note", note)) if v}
            result: dict[str, Any] = {}
            if action == "declare_start" and any(data["amounts"].values()):
                # Cash from outside the store (the bank): one-sided, so it waits for a
                # manager to reconcile it by hand, with a reason (the seed's day).
                transfer = TransferRow(
                    store=store, transfer_id=safes.safe_transfer_id(safe, figures),
                    side="safe", owner=safe, direction="in",
                    party={"kind": "external", "id": "start_amount"},
                    amounts=safes.nonzero(data["amounts"]), ts=ts, employee=employee,
                    bag=bag, seal=seal, note=note)
                data = {**data, "transfer_id": transfer.transfer_id}
                step = CashStep(store, ts, kind, safe, {**data, **extra}, employee=employee)
                if await self._record(transfer, [step]) is None:
                    raise CashRuleError(409, f"safe {safe} changed meanwhile: try again")
                result["transfer"] = _transfer_dict(transfer)
            elif action in ("receipt", "float"):
                if not register:
                    raise CashRuleError(422, f"{action}: the register the cash "
                                             f"{'comes from' if action == 'receipt' else 'goes to'}"
                                             " is required")
                transfer = TransferRow(
                    store=store, transfer_id=safes.safe_transfer_id(safe, figures), side="safe",
                    owner=safe, direction="in" if action == "receipt" else "out",
                    party={"kind": "register", "id": register}, amounts=data["amounts"], ts=ts,
                    of_transfer=of_transfer if action == "receipt" else None,
                    employee=employee, bag=bag, seal=seal, note=note)
                # A receipt may name a register's transfer the store has not seen yet (the
                # register offline): it reconciles when that transfer arrives.
                data = {**data, "transfer_id": transfer.transfer_id,
                        "register": register, "of_transfer": transfer.of_transfer}
                step = CashStep(store, ts, kind, safe, {**data, **extra}, employee=employee)
                rows = await self._record(transfer, [step])
                if rows is None:  # another aggregator numbered a transfer of this safe
                    raise CashRuleError(409, f"safe {safe} changed meanwhile: try again")
                result["transfer"] = _transfer_dict(rows[0])
                if len(rows) == 2:
                    changed = rows
            else:
                await self.storage.save_cash([], [CashStep(store, ts, kind, safe,
                                                           {**data, **extra},
                                                           employee=employee)])
            figures, _ = await self.safe_figures(store, safe)
            result.update(step=kind, data=data, figures=figures.as_dict())
        await self._told(changed)
        return result

    # -- by hand ----------------------------------------------------------------------------------

    async def _look_up(self, store: str, ids: list[str]) -> list[TransferRow]:
        rows = []
        for transfer_id in ids:
            row = await self.storage.transfer(store, transfer_id)
            if row is None:
                raise CashRuleError(404, f"no transfer {transfer_id!r} in store {store}")
            rows.append(row)
        return rows

    def _manager(self, store: str, employee: str | None, role: str) -> dict[str, Any]:
        if role != "manager":
            raise CashRuleError(403, f"role {role!r}: only a manager reconciles by hand")
        if not employee:
            raise CashRuleError(422, "employee: who reconciles is required")
        listed = self.managers.get(store)
        if listed is not None and employee not in listed:
            raise CashRuleError(403, f"employee {employee} does not have the manager role in "
                                     f"store {store} (managers in the store's configuration)")
        return {"employee": employee, "role": "manager"}

    async def reconcile(self, store: str, ids: list[str], *, employee: str | None, role: str,
                        reason: str | None) -> list[TransferRow]:
        by = self._manager(store, employee, role)
        async with self._lock:
            rows = safes.plan_manual_reconcile(await self._look_up(store, ids), reason)
            reason = (reason or "").strip() or None
            if len(rows) == 1:
                done = [safes.reconciled(rows[0], None, by, reason)]
            else:
                a, b = rows
                done = [safes.reconciled(a, b.transfer_id, by, reason),
                        safes.reconciled(b, a.transfer_id, by, reason)]
            ts = self._clock()
            if not await self.storage.save_cash(
                    done, [self._step(r, "transfer.reconciled", ts) for r in done],
                    expect={r.transfer_id: r.status for r in rows}):
                raise CashRuleError(409, "the transfers changed meanwhile: reload and try "
                                         "again")
        await self._told(done)
        return done

    async def unreconcile(self, store: str, transfer_id: str, *, employee: str | None,
                          role: str, reason: str | None) -> list[TransferRow]:
        """Unreconcile a transfer and its counterpart; refused (409) once a register session
        holding either has closed."""
        by = self._manager(store, employee, role)
        if not (reason or "").strip():
            raise CashRuleError(400, "reason: say why the transfers are unreconciled")
        async with self._lock:
            (row,) = await self._look_up(store, [transfer_id])
            if row.status != "reconciled":
                raise CashRuleError(409, f"transfer {transfer_id} is not reconciled")
            rows = [row]
            if row.counterpart is not None:
                other = await self.storage.transfer(store, row.counterpart)
                if other is not None:
                    rows.append(other)
            for r in rows:
                if r.session_id is None:
                    continue
                session = await self.storage.session(r.session_id)
                if session is not None and session.status == "closed":
                    raise CashRuleError(409, (
                        f"transfer {r.transfer_id} belongs to session {r.session_id} of "
                        f"register {r.owner}, closed at {session.closed_at}: it can no longer "
                        "be unreconciled"))
            done = [safes.unreconciled(r, by, (reason or "").strip()) for r in rows]
            ts = self._clock()
            if not await self.storage.save_cash(done, [
                    CashStep(store, ts, "transfer.unreconciled", r.transfer_id,
                             {"counterpart": old.counterpart}, employee=by["employee"],
                             role="manager", reason=r.reason)
                    for r, old in zip(done, rows, strict=True)],
                    expect={r.transfer_id: r.status for r in rows}):
                raise CashRuleError(409, "the transfers changed meanwhile: reload and try "
                                         "again")
        await self._told(done)
        return done
