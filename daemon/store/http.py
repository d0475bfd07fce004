"""The store's JSON HTTP API (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/api/docs``) and
the uvicorn server that runs it inside the aggregator's event loop.

Endpoints, under ``/api/v1/stores/{store}``: ``discrepancies``, ``cash``, ``sessions`` (``sort``
start|end|discrepancy, ``order`` asc|desc, ``training`` include|exclude|only),
``sessions/{session_id}``, ``registers``, ``alarms``. The list views take ``format=csv`` for a
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
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "the view (format=csv: CSV)"}}


def csv_response(text: str, filename: str, truncated: bool = False) -> Response:
    """A download; ``X-Kassad-Truncated: true`` when rows were left out (as in the JSON)."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if truncated:
        headers["X-Kassad-Truncated"] = "true"
    return Response(text, media_type="text/csv", headers=headers)


# -- the application ------------------------------------------------------------------------------


def create_app(storage: Storage, stores: Sequence[str] | None = None) -> FastAPI:
    """The API over ``storage`` (opened and closed by its owner). With ``stores``, any other
    store is 404; without, every store id is answered (with empty views if unknown)."""
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
                                      limit=MAX_ROWS + 1)
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

    app.include_router(router)

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
