"""The store's JSON HTTP API (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/api/docs``) and
the uvicorn server that runs it inside the aggregator's event loop.

Endpoints, under ``/api/v1/stores/{store}``: ``discrepancies``, ``cash``, ``sessions`` (``sort``
start|end|discrepancy, ``order`` asc|desc, ``training`` include|exclude|only),
``sessions/{session_id}``, ``registers``, ``alarms``; issue 9's ``safes``, ``safes/{safe}``,
``POST safes/{safe}/{declare_start|receipt|float|bank_deposit|count}``, ``transfers``
(``status`` all|reconciled|unreconciled), ``transfers/{id}``, ``POST transfers/reconcile`` and
``POST transfers/unreconcile`` (a manager; a refusal is 400, 403, 404, 409 or 422 with a
``detail`` that says why). The list views take ``format=csv`` for a
download of what the JSON shows (layout: :mod:`.views`). A date range is ``from`` / ``to``: an
RFC 3339 time with its offset, or a date (``to`` a date: through the end of that day) in the
time zone ``tz`` (IANA name, default UTC); the views hold the sessions that overlap [from, to).
Amounts are integer minor units per currency, never floats. Training sessions are listed
(``"training": true``) and left out of every total; a session closed without a count
(auto-close) has no discrepancy at end (null), and the totals say how many they left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from .. import __version__
from ..contract.topics import ID_RE
from . import views
from .cashbook import CashBook
from .safes import CashRuleError, SafeAction
from .storage.base import SessionRow, SessionSort, Storage
from .storage.schema import StorageError
from .web import STATIC_DIR

_LOGGER = logging.getLogger(__name__)
API = "/api/v1"
MAX_ROWS = 10_000  # sessions or alarms one response holds; more: "truncated": true

# -- response models (the OpenAPI document) -------------------------------------------------------

Amounts = Annotated[dict[str, StrictInt], Field(
    description="per ISO 4217 currency: an integer count of minor units (SEK -150 = -1.50)")]
Sort = Literal["start", "end", "discrepancy"]
Training = views.TrainingFilter


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# "register" would shadow BaseModel.register (ABCMeta): the field is register_ with that alias.
RegisterId = Annotated[str, Field(alias="register")]


class Span(_Model):
    store: str
    from_: datetime | None = Field(alias="from", description="start of the range (inclusive)")
    to: datetime | None = Field(description="end of the range (exclusive)")
    truncated: bool = Field(description=f"more than {MAX_ROWS} rows matched: narrow the range")


class Envelope(Span):
    currencies: dict[str, int | None] = Field(
        description="minor-unit digits of each currency shown (null: not ISO 4217)")


class SessionHead(_Model):
    store: str
    register_: RegisterId
    session_id: str
    number: int
    status: Literal["open", "closed"]
    opened_at: str
    closed_at: str | None
    training: bool = Field(description="a training session: listed, never in a total")


class SessionDiscrepancy(SessionHead):
    start: Amounts
    end: Amounts | None = Field(description="at close; zeros while open; null when closed "
                                            "without a count (auto-close): unknown")
    total: Amounts = Field(description="start + end (start alone when end is null)")


class DiscrepancyTotals(_Model):
    start: Amounts
    end: Amounts
    total: Amounts


class DiscrepancyView(Envelope):
    sessions: list[SessionDiscrepancy]
    totals: DiscrepancyTotals = Field(description="without training sessions, and without "
                                                  "the unknown ends of uncounted closes")
    training_sessions: int = Field(description="training sessions listed, not in the totals")
    sessions_without_count: int = Field(description=(
        "sessions closed without a count (auto-close) whose end is not in the totals"))


class CashFigures(_Model):
    sessions: int = Field(description="sessions in the figures (training ones are not)")
    training_sessions: int = Field(description="training sessions, left out of the figures")
    gross: Amounts = Field(description="cash payments: tendered − change")
    refunds: Amounts
    net: Amounts = Field(description="gross − refunds")
    cash_sales_count: int
    cash_refunds_count: int


class RegisterCash(CashFigures):
    store: str
    register_: RegisterId


class CashView(Envelope):
    totals: CashFigures
    registers: list[RegisterCash]


class SessionItem(SessionHead):
    opened_by: str | None
    closed_by: str | None
    discrepancy_start: Amounts
    discrepancy_end: Amounts | None = Field(description="null: closed without a count")
    discrepancy: Amounts = Field(description="total: start + end")


class SessionListView(Envelope):
    sort: Sort
    order: Literal["asc", "desc"]
    sessions: list[SessionItem]


class AdjustmentItem(_Model):
    direction: str | None
    currency: str | None
    amount: int
    note: str | None
    ts: str | None
    employee: str | None


class Balance(_Model):
    opening: Amounts = Field(description="carried in (cash: the starting float)")
    payments: Amounts = Field(description="net of refunds")
    deposits: Amounts
    withdrawals: Amounts
    balance: Amounts = Field(description="opening + payments + deposits − withdrawals "
                                         "(cash: the expected cash)")


class ApprovalItem(_Model):
    employee: str | None
    role: str | None
    reason: str | None


class CorrectionItem(_Model):
    ts: str | None
    employee: str | None
    approval: ApprovalItem | None
    counted_before: Amounts | None
    counted: Amounts


class SessionDetail(SessionHead):
    opened_by: str | None
    closed_by: str | None
    automatic: bool
    note: str | None
    close_note: str | None
    starting_float: Amounts
    expected_start: Amounts | None
    discrepancy_at_start: Amounts
    cash_sales: Amounts
    cash_sales_count: int
    cash_refunds: Amounts
    cash_refunds_count: int
    adjustments_added: Amounts
    adjustments_removed: Amounts
    adjustments: list[AdjustmentItem]
    payments_by_type: dict[str, Amounts]
    payment_counts: dict[str, int]
    total_sales: Amounts
    balances: dict[str, Balance] = Field(description="per payment type, cash included")
    rounding: Amounts = Field(description="cash rounding differences, rounded − exact")
    drawer_openings: dict[str, int] = Field(description="per cause: sale, no_sale, unexpected …")
    no_sale_openings: int
    recount_attempts: int = Field(description="closes refused for too large a difference")
    x_printed: int = Field(description="X reports printed")
    z_number: int | None = Field(description="the Z report's number (null: none, or training)")
    z_copies: int
    expected_cash: Amounts
    counted: Amounts | None = Field(description="null while open, or after a system close")
    expected: Amounts | None
    discrepancy: Amounts | None = Field(description="null while open, or after a system close")
    left_in_drawer: Amounts | None
    removed: Amounts | None = Field(description="cash removed at close: counted − left")
    system_close: bool | None = Field(description="closed by the system (auto-close), "
                                                  "nobody counted; null while open")
    approval: ApprovalItem | None = Field(description="a manager's approval of the close")
    recounts: int | None
    corrections: list[CorrectionItem] | None = Field(
        description="approved corrections of the count, oldest first; null while open")
    details: dict[str, Any]
    currencies: dict[str, int | None]


class AlarmItem(_Model):
    ts: str
    store: str | None
    register_: Annotated[str | None, Field(alias="register")]
    kind: str
    detail: dict[str, Any]


class RegisterItem(_Model):
    store: str
    register_: RegisterId
    online: bool
    last_seen: str | None
    alarms: list[str] = Field(description="active device alarms: paper_out, drawer_open …")
    devices: dict[str, Any]
    recent_alarms: list[AlarmItem]


class RegistersView(_Model):
    store: str
    registers: list[RegisterItem]
    online: int
    offline: int
    with_alarms: int


class AlarmsView(Span):
    alarms: list[AlarmItem]


# -- issue 9: safes and transfers -------------------------------------------------------------

Employee = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_RE.pattern)]
Reason = Annotated[str, Field(max_length=500)]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class Party(_Model):
    kind: Literal["safe", "register", "external"] = Field(
        description="external: from outside the store (a safe's start amount)")
    id: str


class ByItem(_Model):
    employee: str | None
    role: str


class TransferItem(_Model):
    store: str
    transfer_id: str
    side: Literal["register", "safe"] = Field(description="who recorded it")
    owner: str = Field(description="that register's or safe's id")
    direction: Literal["out", "in"]
    party: Party = Field(description="the other side as this one names it")
    amounts: Amounts
    ts: str
    of_transfer: str | None = Field(description="an in: the out it names")
    session_id: str | None = Field(description="a register's: the session that holds it")
    employee: str | None
    bag: str | None
    seal: str | None
    note: str | None
    status: Literal["unreconciled", "reconciled"]
    counterpart: str | None
    by: ByItem | None = Field(description="who (un)reconciled it last (role system: "
                                          "automatically)")
    reason: str | None


class StepItem(_Model):
    ts: str
    kind: str
    subject: str
    employee: str | None
    role: str | None
    reason: str | None
    data: dict[str, Any]


class SafeFiguresItem(_Model):
    store: str
    safe: str
    name: str
    declared: bool = Field(description="the start amount is declared")
    start: Amounts
    receipts: Amounts
    floats_issued: Amounts
    bank_deposits: Amounts
    expected: Amounts = Field(description="start + receipts − floats issued − bank deposits")
    last_count: dict[str, Any] | None = Field(description="the last count: counted, expected, "
                                                          "discrepancy (counted − expected)")


class SafesView(_Model):
    store: str
    safes: list[SafeFiguresItem]


class SafeDetail(SafeFiguresItem):
    ledger: list[StepItem]


class SafeActionBody(_Model):
    model_config = ConfigDict(extra="forbid")

    amounts: dict[str, StrictInt] = Field(description=(
        "minor units per currency (count: what was counted)"))
    employee: Employee
    register_: Annotated[str | None, Field(alias="register", pattern=ID_RE.pattern,
                                           description="receipt: from; float: to")] = None
    of_transfer: Annotated[str | None, Field(max_length=140, description=(
        "receipt: the register's transfer out (reconciles by itself when it balances)"))] = None
    bag: Text | None = None
    seal: Text | None = None
    note: Reason | None = None


class SafeActionResult(_Model):
    step: str
    data: dict[str, Any]
    figures: dict[str, Any]
    transfer: TransferItem | None = Field(None, description="receipt and float: the safe's "
                                                            "transfer (a float's id is what "
                                                            "the register's transfer in names)")


class TransfersView(_Model):
    store: str
    status: Literal["all", "reconciled", "unreconciled"]
    transfers: list[TransferItem]
    unreconciled: int
    truncated: bool


class TransferDetail(TransferItem):
    steps: list[StepItem] = Field(description="every step with who and why, oldest first")


class ReconcileBody(_Model):
    model_config = ConfigDict(extra="forbid")

    transfers: Annotated[list[Annotated[str, Field(max_length=140)]],
                         Field(min_length=1, max_length=2, description=(
                             "a pair (an out and an in), or one transfer alone"))]
    employee: Employee
    role: str = Field(description="manager: only a manager reconciles by hand")
    reason: Reason | None = Field(None, description="required when the pair does not "
                                                    "balance, and for one transfer alone")


class UnreconcileBody(_Model):
    model_config = ConfigDict(extra="forbid")

    transfer_id: Annotated[str, Field(max_length=140)]
    employee: Employee
    role: str
    reason: Reason


class ChangedView(_Model):
    transfers: list[TransferItem]


# -- query parameters -----------------------------------------------------------------------------

def date_range(
    from_: Annotated[str | None, Query(alias="from", max_length=64, description=(
        "RFC 3339 time with offset, or a date (its start in tz)"))] = None,
    to: Annotated[str | None, Query(max_length=64, description=(
        "RFC 3339 time with offset (exclusive), or a date (through its end, in tz)"))] = None,
    tz: Annotated[str, Query(max_length=64, description="IANA time zone of dates")] = "UTC",
) -> views.Range:
    try:
        return views.parse_range(from_, to, tz)
    except views.RangeError as e:
        raise HTTPException(422, [{"loc": ["query", e.field], "msg": str(e),
                                   "type": "value_error"}]) from None


StoreId = Annotated[str, PathParam(pattern=ID_RE.pattern, description="store id")]
Format = Annotated[Literal["json", "csv"], Query(description="csv: a download of the view")]
Order = Annotated[Literal["asc", "desc"], Query()]
RangeDep = Annotated[views.Range, Depends(date_range)]


def store_id(store: StoreId, request: Request) -> str:
    known: frozenset[str] | None = request.app.state.stores
    if known is not None and store not in known:
        raise HTTPException(404, f"store {store!r} is not served here")
    return store


Store = Annotated[str, Depends(store_id)]
SafeId = Annotated[str, PathParam(pattern=ID_RE.pattern, description="safe id")]
SafeActionName = Literal["declare_start", "receipt", "float", "bank_deposit", "count"]
TransferStatus = Literal["all", "reconciled", "unreconciled"]
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "the view (format=csv: CSV)"}}


def csv_response(text: str, filename: str, truncated: bool = False) -> Response:
    """A download; ``X-Kassad-Truncated: true`` when rows were left out (as in the JSON)."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if truncated:
        headers["X-Kassad-Truncated"] = "true"
    return Response(text, media_type="text/csv", headers=headers)


# -- the application ------------------------------------------------------------------------------


def create_app(storage: Storage, stores: Sequence[str] | None = None, *,
               cashbook: CashBook | None = None) -> FastAPI:
    """The API over ``storage`` (opened and closed by its owner). With ``stores``, any other
    store is 404; without, every store id is answered (with empty views if unknown).
    ``cashbook``: safes and transfers (default: one with no safes, telling no register)."""
    book = cashbook or CashBook(storage, {})
    app = FastAPI(title="kassad store aggregator", version=__version__,
                  description=(__doc__ or "").split("\n\n", 1)[1],
                  docs_url="/api/docs", redoc_url=None, openapi_url="/openapi.json")
    app.state.stores = None if stores is None else frozenset(stores)
    router = APIRouter(prefix=f"{API}/stores/{{store}}", responses={
        404: {"description": "a store this aggregator does not serve"},
        503: {"description": "the store database is unavailable"}})

    async def in_range(store: str, span: views.Range, sort: SessionSort = "start",
                       descending: bool = False) -> tuple[list[SessionRow], bool]:
        rows = await storage.sessions([store], span.start, span.end, sort, descending,
                                      limit=MAX_ROWS + 1, summary_keys=views.LIST_SUMMARY_KEYS)
        return rows[:MAX_ROWS], len(rows) > MAX_ROWS

    def envelope(store: str, span: views.Range, truncated: bool) -> dict[str, Any]:
        return {"store": store, "from": span.start, "to": span.end, "truncated": truncated}

    @router.get("/discrepancies", response_model=DiscrepancyView, responses=_CSV,
                summary="Discrepancy at start and at end, per session and in total")
    async def discrepancies(store: Store, span: RangeDep, format: Format = "json") -> Any:
        rows, truncated = await in_range(store, span)
        view = views.discrepancy_summary(rows)
        if format == "csv":
            return csv_response(views.discrepancies_csv(view),
                                f"{store}-discrepancies-{span.stamp()}.csv", truncated)
        return {**envelope(store, span, truncated), **view}

    @router.get("/cash", response_model=CashView, responses=_CSV,
                summary="Cash payments: gross, refunds, net, in total and per register")
    async def cash(store: Store, span: RangeDep, format: Format = "json") -> Any:
        rows, truncated = await in_range(store, span)
        view = views.cash_summary(rows)
        if format == "csv":
            return csv_response(views.cash_csv(view), f"{store}-cash-{span.stamp()}.csv",
                                truncated)
        return {**envelope(store, span, truncated), **view}

    @router.get("/sessions", response_model=SessionListView, responses=_CSV,
                summary="Sessions with their total discrepancy, sorted")
    async def sessions(store: Store, span: RangeDep, format: Format = "json",
                       sort: Annotated[Sort, Query(description=(
                           "start, end (open sessions last) or discrepancy (the size of the "
                           "total discrepancy, summed over currencies); ties by start"))
                       ] = "start",
                       order: Order = "asc",
                       training: Annotated[Training, Query(description=(
                           "training sessions: include (marked), exclude, or only them"))
                       ] = "include") -> Any:
        descending = order == "desc"
        rows, truncated = await in_range(store, span, "start" if sort == "discrepancy" else sort,
                                         descending)
        rows = views.filter_training(rows, training)
        if sort == "discrepancy":
            rows = views.order_by_discrepancy(rows, descending)
        view = views.session_list(rows)
        if format == "csv":
            return csv_response(views.sessions_csv(view),
                                f"{store}-sessions-{span.stamp()}-{sort}-{order}.csv", truncated)
        return {**envelope(store, span, truncated), "sort": sort, "order": order, **view}

    @router.get("/sessions/{session_id}", response_model=SessionDetail,
                summary="One session: its figures, payments by type, adjustments, drawer "
                        "openings", responses={404: {"description": "no such session here"}})
    async def session(store: Store, session_id: Annotated[str, PathParam(max_length=200)],
                      ) -> Any:
        row = await storage.session(session_id)
        if row is None or row.store != store:
            raise HTTPException(404, f"no session {session_id!r} in store {store!r}")
        return views.session_detail(row)

    @router.get("/registers", response_model=RegistersView, responses=_CSV,
                summary="Registers: online status, device alarms, latest stored alarms")
    async def registers(store: Store, format: Format = "json") -> Any:
        rows = await storage.registers(store)
        view = views.registers_view(rows, await storage.alarms(store, limit=500))
        if format == "csv":
            return csv_response(views.registers_csv(view), f"{store}-registers.csv")
        return {"store": store, **view}

    @router.get("/alarms", response_model=AlarmsView, responses=_CSV,
                summary="Stored alarms (integrity and device), newest first")
    async def alarms(store: Store, span: RangeDep, format: Format = "json",
                     limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 500) -> Any:
        ranged = span.start is not None or span.end is not None
        fetched = await storage.alarms(store, limit=(MAX_ROWS if ranged else limit) + 1)
        found = [a for a in fetched if span.contains(a.ts)] if ranged else fetched
        truncated = len(found) > limit or len(fetched) > MAX_ROWS
        view = views.alarms_view(found[:limit])
        if format == "csv":
            return csv_response(views.alarms_csv(view), f"{store}-alarms-{span.stamp()}.csv",
                                truncated)
        return {"store": store, "from": span.start, "to": span.end, "truncated": truncated,
                **view}

    # -- issue 9: safes and transfers -----------------------------------------------------------

    def transfer_dict(row: Any) -> dict[str, Any]:
        return {name: getattr(row, name) for name in type(row).__dataclass_fields__}

    def step_dict(step: Any) -> dict[str, Any]:
        return {"ts": step.ts, "kind": step.kind, "subject": step.subject,
                "employee": step.employee, "role": step.role, "reason": step.reason,
                "data": step.data}

    async def safe_item(store: str, safe: str) -> tuple[dict[str, Any], list[Any]]:
        figures, steps = await book.safe_figures(store, safe)
        return {"store": store, "name": book.safes[store][safe], **figures.as_dict()}, steps

    @router.get("/safes", response_model=SafesView, responses=_CSV,
                summary="The store's safes and their figures")
    async def safes_list(store: Store, format: Format = "json") -> Any:
        items = [(await safe_item(store, safe))[0] for safe in book.safes.get(store, {})]
        if format == "csv":
            return csv_response(views.safes_csv(items), f"{store}-safes.csv")
        return {"store": store, "safes": items}

    @router.get("/safes/{safe}", response_model=SafeDetail,
                summary="One safe: its figures and its ledger, oldest first")
    async def safe_detail(store: Store, safe: SafeId) -> Any:
        item, steps = await safe_item(store, safe)
        return {**item, "ledger": [step_dict(s) for s in steps]}

    _ACTIONS: dict[str, SafeAction] = {"declare_start": "declare_start", "receipt": "receipt",
                                       "float": "float", "bank_deposit": "bank_deposit",
                                       "count": "count"}

    @router.post("/safes/{safe}/{action}", response_model=SafeActionResult,
                 summary="A step of the safe's ledger: declare_start, receipt (cash from a "
                         "register), float (cash to a register), bank_deposit, count",
                 responses={409: {"description": "refused by the safe's rules"}})
    async def safe_action(store: Store, safe: SafeId,
                          action: SafeActionName,
                          body: SafeActionBody) -> Any:
        return await book.safe_action(
            store, safe, _ACTIONS[action], body.amounts, employee=body.employee,
            register=body.register_, of_transfer=body.of_transfer, bag=body.bag,
            seal=body.seal, note=body.note)

    @router.get("/transfers", response_model=TransfersView, responses=_CSV,
                summary="Cash transfers (registers' and safes'), oldest first")
    async def transfers(store: Store, format: Format = "json",
                        status: Annotated[TransferStatus, Query(
                            description="the reconciliation tabs")] = "all") -> Any:
        rows = await storage.transfers(store, status=None if status == "all" else status,
                                       limit=MAX_ROWS + 1)
        items = [transfer_dict(r) for r in rows[:MAX_ROWS]]
        if format == "csv":
            return csv_response(views.transfers_csv(items), f"{store}-transfers-{status}.csv",
                                len(rows) > MAX_ROWS)
        return {"store": store, "status": status, "transfers": items,
                "unreconciled": sum(1 for t in items if t["status"] == "unreconciled"),
                "truncated": len(rows) > MAX_ROWS}

    @router.get("/transfers/{transfer_id}", response_model=TransferDetail,
                summary="One transfer and its steps (who and why)")
    async def transfer(store: Store,
                       transfer_id: Annotated[str, PathParam(max_length=140)]) -> Any:
        row = await storage.transfer(store, transfer_id)
        if row is None:
            raise HTTPException(404, f"no transfer {transfer_id!r} in store {store!r}")
        steps = await storage.cash_steps(store, transfer_id)
        return {**transfer_dict(row), "steps": [step_dict(s) for s in steps]}

    @router.post("/transfers/reconcile", response_model=ChangedView,
                 summary="A manager reconciles a pair, or one transfer alone",
                 responses={400: {"description": "a reason is required"},
                            403: {"description": "not a manager"},
                            409: {"description": "already reconciled"}})
    async def reconcile(store: Store, body: ReconcileBody) -> Any:
        done = await book.reconcile(store, body.transfers, employee=body.employee,
                                    role=body.role, reason=body.reason)
        return {"transfers": [transfer_dict(r) for r in done]}

    @router.post("/transfers/unreconcile", response_model=ChangedView,
                 summary="A manager unreconciles a transfer and its counterpart, until the "
                         "register session holding them has closed",
                 responses={400: {"description": "a reason is required"},
                            403: {"description": "not a manager"},
                            409: {"description": "not reconciled, or its session closed"}})
    async def unreconcile(store: Store, body: UnreconcileBody) -> Any:
        done = await book.unreconcile(store, body.transfer_id, employee=body.employee,
                                      role=body.role, reason=body.reason)
        return {"transfers": [transfer_dict(r) for r in done]}

    app.include_router(router)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CashRuleError)
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    app.add_exception_handler(CashRuleError, refused)

    async def storage_failed(request: Request, exc: Exception) -> Response:
        _LOGGER.error("store view %s: %s", request.url.path, exc)
        return JSONResponse({"detail": "the store database is unavailable"}, status_code=503)

    async def bad_row(request: Request, exc: Exception) -> Response:
        _LOGGER.error("store view %s: a stored row is not money: %s", request.url.path, exc)
        return JSONResponse({"detail": f"a stored figure is not money: {exc}"}, status_code=500)

    app.add_exception_handler(StorageError, storage_failed)
    app.add_exception_handler(views.ViewError, bad_row)
    # The store manager's page: static files, no build step. Mounted last: "/" catches all.
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    return app


# -- the server -----------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the aggregator owns SIGINT / SIGTERM."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._ready()


class HttpServer:
    """Serves ``app`` on ``host:port`` in the running loop until cancelled (``port`` 0: a free
    one; :attr:`port` tells which once :attr:`started` is set). Cancelling stops accepting,
    lets requests in flight finish (up to ``grace`` seconds) and re-raises the cancellation."""

    def __init__(self, app: FastAPI, host: str, port: int, *,
                 started: asyncio.Event | None = None, access_log: bool = False,
                 grace: int = 5) -> None:
        self.app, self.host, self.requested_port = app, host, port
        self.started = started or asyncio.Event()
        self._access_log = access_log
        self._grace = grace
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the store HTTP server is not listening")
        return int(self._socket.getsockname()[1])

    async def _bind(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host or None, self.requested_port,
                                           type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, address = infos[0]
            return socket.create_server(address, family=family)
        except OSError as e:
            raise OSError(e.errno, f"store HTTP server cannot listen on "
                                   f"{self.host}:{self.requested_port}: {e.strerror or e}"
                          ) from e

    def _ready(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        _LOGGER.info("store view on http://%s:%d/api/docs", host, self.port)
        self.started.set()

    async def run(self) -> None:
        sock = self._socket = await self._bind()
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, ws="none",
                                access_log=self._access_log,
                                timeout_graceful_shutdown=self._grace)
        server = _Server(config, self._ready)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="store-http")
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            server.should_exit = True
            await serving  # a second cancellation stops it outright
            raise
        finally:
            sock.close()
            self._socket = None


async def serve_http(app: FastAPI, host: str, port: int,
                     started: asyncio.Event | None = None) -> None:
    """Run ``app`` on ``host:port`` until cancelled; ``started`` is set once it listens."""
    await HttpServer(app, host, port, started=started).run()
