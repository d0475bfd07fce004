"""The POS side of the contract, for Python POS applications and ``kassad send``.

>>> async with KassadClient(BrokerConfig(), store="S1", register="R1", requester="pos-1",
...                         employee="e17") as c:
...     result = await c.send("payment.record", {"kind": "other", "payment_type": "card",
...                                              "amount": {"amount": 32000, "currency": "SEK"}})

``send`` publishes the command with a Response Topic, Correlation Data = ``cmd_id`` and a
Message Expiry, and resends the *same* ``cmd_id`` until the register answers: the register
acknowledges a command only after journaling it, so the resend is what carries a command
through a broker restart or a daemon crash, and a duplicate is answered from the journal,
never done twice. Errors come back as :class:`CommandError` subclasses named after the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import aiomqtt

from .config import BrokerConfig
from .contract.errors import ErrorCode
from .contract.events import utc_timestamp
from .contract.topics import RegisterTopics, check_id
from .mqtt.link import MqttLink, NotConnected, PublishFailed, publish_properties

_LOGGER = logging.getLogger(__name__)


class KassadError(Exception):
    """Root of the errors a kassad client raises."""


class CommandError(KassadError):
    """The register answered the command with an error (or ``indeterminate``)."""

    code: str = "error"

    def __init__(
        self, code: str, message: str, details: dict[str, Any], reply: dict[str, Any]
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.reply = reply


class CommandTimeout(KassadError, TimeoutError):
    """No answer before the command's deadline; it may or may not have been done:
    ask ``cmd.status`` with the same ``cmd_id``."""

    def __init__(self, cmd_id: str, message: str) -> None:
        super().__init__(message)
        self.cmd_id = cmd_id


def _error_class(code: ErrorCode) -> type[CommandError]:
    name = "".join(part.capitalize() for part in code.value.split("_")) + "Error"
    return type(name, (CommandError,), {"code": code.value, "__module__": __name__})


#: One subclass per stable error code: ``except ERRORS[ErrorCode.SESSION_NOT_OPEN]`` or by
#: ``code``. Unknown codes (a newer register) raise plain CommandError.
ERRORS: dict[ErrorCode, type[CommandError]] = {code: _error_class(code) for code in ErrorCode}


def raise_for_reply(reply: dict[str, Any]) -> None:
    if reply.get("status") in ("ok", "accepted"):
        return
    error = reply.get("error") or {}
    code = str(error.get("code", "error"))
    cls = next((c for k, c in ERRORS.items() if k.value == code), CommandError)
    raise cls(code, str(error.get("message", "")), dict(error.get("details") or {}), reply)


def new_cmd_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Result:
    cmd_id: str
    command: str
    data: dict[str, Any]
    duplicate: bool
    replies: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Pending:
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    result: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    replies: list[dict[str, Any]] = field(default_factory=list)


class KassadClient:
    def __init__(
        self,
        broker: BrokerConfig,
        *,
        store: str,
        register: str,
        requester: str,
        employee: str | None = None,
        client_id: str | None = None,
        ttl: float = 30.0,
        retry_interval: float = 1.0,
        result_retry_interval: float = 5.0,
        result_timeout: float = 120.0,
        on_reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.topics = RegisterTopics(store, register)
        self.requester = check_id(requester, "requester id")
        self.reply_topic = self.topics.res(requester)
        #: Who is at the register: sent with every command that does not name its own.
        self.employee = employee
        self._ttl = ttl
        self._retry = retry_interval
        self._result_retry = result_retry_interval
        self._result_timeout = result_timeout
        self._on_reply = on_reply
        self._pending: dict[str, _Pending] = {}
        self._link = MqttLink(
            broker, client_id=client_id or f"{store}-{register}-{requester}",
            subscriptions=[self.reply_topic], on_message=self._on_message,
            session_expiry=60, name=f"client {requester}")
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KassadClient:
        self._task = asyncio.create_task(self._link.run(), name="kassad-client-link")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            await self._link.connected.wait()

    async def _on_message(self, message: aiomqtt.Message) -> None:
        try:
            reply = json.loads(bytes(message.payload) if isinstance(message.payload, bytes)
                               else str(message.payload))
        except ValueError:
            _LOGGER.warning("unreadable reply on %s ignored", message.topic.value)
            return
        if not isinstance(reply, dict):
            return
        pending = self._pending.get(str(reply.get("cmd_id")))
        if pending is None:
            return  # a late duplicate of a command already answered
        pending.replies.append(reply)
        if self._on_reply is not None:
            self._on_reply(reply)
        if reply.get("phase") == "ack":
            pending.acked.set()
        elif reply.get("phase") == "result" and not pending.result.done():
            pending.acked.set()
            pending.result.set_result(reply)

    def build(self, command: str, params: dict[str, Any], *, cmd_id: str,
              employee: str | None, issued: datetime, expires: datetime) -> dict[str, Any]:
        body: dict[str, Any] = {"v": 1, "cmd_id": cmd_id, "issued_at": utc_timestamp(issued),
                                "expires_at": utc_timestamp(expires), "requester": self.requester,
                                "params": params}
        if employee is not None:
            body["employee"] = employee
        return body

    async def send(self, command: str, params: dict[str, Any] | None = None, *,
                   employee: str | None = None, cmd_id: str | None = None,
                   ttl: float | None = None, issued_at: datetime | None = None) -> Result:
        """Send until answered; return the result or raise its CommandError.

        ``issued_at``: when the person asked for it, if earlier than now (a command queued by
        the POS while it was offline keeps its age: a late drawer kick is refused).
        ``employee`` defaults to the client's own (the constructor's ``employee``).
        """
        cmd_id = cmd_id or new_cmd_id()
        employee = employee if employee is not None else self.employee
        ttl = ttl or self._ttl
        issued = issued_at or datetime.now(UTC)
        expires = issued + timedelta(seconds=ttl)
        payload = json.dumps(self.build(command, params or {}, cmd_id=cmd_id, employee=employee,
                                        issued=issued, expires=expires))
        pending = self._pending.setdefault(cmd_id, _Pending())
        try:
            reply = await self._exchange(command, cmd_id, payload, pending, ttl)
        finally:
            self._pending.pop(cmd_id, None)
        raise_for_reply(reply)
        return Result(cmd_id, command, dict(reply.get("data") or {}),
                      bool(reply.get("duplicate")), list(pending.replies))

    async def _exchange(self, command: str, cmd_id: str, payload: str, pending: _Pending,
                        ttl: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        # Past expires_at the register answers a resend with ``expired``: a clear outcome.
        # Only if nothing at all comes back in a further grace period is it unknown.
        ack_deadline = loop.time() + ttl + 10 * self._retry + 5
        result_deadline: float | None = None
        props = publish_properties(correlation=cmd_id.encode(), response_topic=self.reply_topic,
                                   expiry_s=int(ttl) + 1)
        send_now = True
        while True:
            if send_now and not self._link.is_connected:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._retry):
                        await self._link.connected.wait()
            if send_now and self._link.is_connected:
                with contextlib.suppress(NotConnected, PublishFailed):
                    await self._link.publish(self.topics.cmd(command), payload, qos=1,
                                             properties=props)
            acked = pending.acked.is_set()
            if acked and result_deadline is None:
                result_deadline = loop.time() + self._result_timeout
            deadline = result_deadline if result_deadline is not None else ack_deadline
            wait = min(self._result_retry if acked else self._retry,
                       max(0.0, deadline - loop.time()))
            send_now = False
            try:
                async with asyncio.timeout(wait):
                    await (asyncio.shield(pending.result) if acked
                           else _first(pending.acked, pending.result))
            except TimeoutError:
                send_now = True  # no news: resending the same cmd_id is safe
            if pending.result.done():
                return pending.result.result()
            if loop.time() >= deadline:
                what = "result" if acked else "answer"
                raise CommandTimeout(cmd_id, f"{command} {cmd_id}: no {what} from register "
                                     f"{self.topics.client_id}; it may or may not have been "
                                     "done: ask cmd.status")


async def _first(event: asyncio.Event, future: asyncio.Future[dict[str, Any]]) -> None:
    """Return when the event is set or the future is done."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    watched: set[asyncio.Future[Any]] = {waiter, future}
    try:
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
