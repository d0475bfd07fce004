"""A register daemon and a consumer for tests: configuration files, in-process and subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from kassad.daemon.config import BrokerConfig, RegisterConfig, load_register_config
from kassad.daemon.consumer import AckConsumer
from kassad.daemon.register.service import RegisterService

FAST_DELIVERY = {"resend_after": 0.5, "resend_after_max": 2.0}
FAST_BROKER = {"reconnect_min": 0.05, "reconnect_max": 0.5, "keepalive": 5}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def write_config(path: Path, *, port: int, journal: Path, consumers: list[str] | None = None,
                 store: str = "S1", register: str = "R1", **sections: dict[str, Any]) -> Path:
    """A register TOML file pointing at the test broker, with quick retry timings."""
    tables: dict[str, dict[str, Any]] = {
        "broker": {"host": "127.0.0.1", "port": port, **FAST_BROKER},
        "journal": {"path": str(journal)},
        "delivery": {"consumers": consumers if consumers is not None else ["agg"],
                     **FAST_DELIVERY},
        "money": {"base_currency": "SEK", "accepted": ["SEK", "EUR"]},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = [f'store = "{store}"', f'register = "{register}"']
    for name, values in tables.items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def broker_config(port: int) -> BrokerConfig:
    return BrokerConfig(host="127.0.0.1", port=port, **FAST_BROKER)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_register(config: RegisterConfig | Path) -> AsyncIterator[RegisterService]:
    """The register service as a task of this test's event loop."""
    if isinstance(config, Path):
        config = load_register_config(config)
    service = RegisterService(config)
    task = asyncio.create_task(service.run(), name="register")
    try:
        async with asyncio.timeout(10):
            ready = asyncio.create_task(service.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                ready.cancel()
                task.result()
        yield service
    finally:
        service.stop()
        try:
            async with asyncio.timeout(15):
                await task
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running_consumer(port: int, db: Path, *, store: str = "S1", consumer: str = "agg",
                           reorder_timeout: float = 0.5) -> AsyncIterator[AckConsumer]:
    agg = AckConsumer(broker_config(port), store=store, consumer=consumer, db_path=db,
                      reorder_timeout=reorder_timeout)
    task = asyncio.create_task(agg.run(), name="consumer")
    try:
        yield agg
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], timeout: float = 30.0,  # noqa: ASYNC109
                what: str = "condition", *, wake: asyncio.Event | None = None) -> None:
    """Wait for ``condition()``; re-checked when ``wake`` is set, else every 20 ms."""
    async with asyncio.timeout(timeout):
        while not condition():
            if wake is not None:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await wake.wait()
            else:
                await asyncio.sleep(0.02)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0,  # noqa: ASYNC109
                     what: str = "condition") -> None:
    """Wait until an async ``check()`` (a database read, say) is true; polled, bounded."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


def consumer_events(db: Path, register: str = "R1") -> list[dict[str, Any]]:
    """Events the consumer stored for one register, in seq order."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT body FROM events WHERE register = ? ORDER BY epoch, seq",
                           (register,)).fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


def journal_events(journal: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT body FROM events ORDER BY seq").fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


class RegisterProcess:
    """``kassad run`` as a real process, so a test can SIGKILL it."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None):
        self.config = config
        self.log = log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> None:
        env = {**os.environ, **self.env, **extra_env}
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kassad.daemon", "--log-level", "INFO", "run", "--config",
             str(self.config)], stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            return self.proc.wait(20)
        return self.proc.returncode if self.proc else None

    async def wait_exit(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        proc = self.proc
        await until(lambda: proc.poll() is not None, timeout, "register process exit")
        return int(proc.returncode)
