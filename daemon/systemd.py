"""The sd_notify(3) protocol and a watchdog that pings only while the service is healthy.

systemd hands a ``Type=notify`` service the address of a datagram socket in
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) and, with
``WatchdogSec=``, the interval in ``$WATCHDOG_USEC``. The protocol is newline-separated
``KEY=value`` lines in one datagram, which is small enough to speak directly: no library.
Outside systemd (tests, a terminal) there is no socket and every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

_LOGGER = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; a no-op when the process was not started by systemd."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._last_status: str | None = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # "@name" is an abstract-namespace socket: its address starts with a NUL byte.
            self._target = "\0" + address[1:] if address.startswith("@") else address

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if env is None else env).get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> bool:
        """Send one message; False when there is no socket or systemd did not take it."""
        if self._socket is None:
            return False
        try:
            self._socket.sendto("\n".join(lines).encode(), self._target)
        except OSError as e:
            # systemd gone (a restart of PID 1, or a test's socket closed): never fatal.
            _LOGGER.debug("sd_notify %r not sent: %s", lines, e)
            return False
        return True

    def status(self, text: str) -> None:
        """``STATUS=``: the line ``systemctl status`` shows; sent only when it changes."""
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={_one_line(text)}")

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={_one_line(status)}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (≥ 253, Type=notify-reload) match the reload to its
        # request; older versions ignore it.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self, status: str) -> None:
        self._last_status = status
        self.send("STOPPING=1", f"STATUS={_one_line(status)}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of ``WatchdogSec``), or None when no watchdog is set.

    ``WATCHDOG_PID`` names the process the watchdog is meant for: a child that inherited the
    environment must not ping for its parent.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000 / 2


HealthCheck = Callable[[], Awaitable[str | None]]


async def run_watchdog(notifier: Notifier, interval: float, health: HealthCheck) -> None:
    """Ping ``WATCHDOG=1`` every ``interval`` seconds while ``health()`` says nothing is wrong.

    The pings come from the event loop itself, so a blocked loop stops them and systemd
    restarts the service. ``health`` returns None when healthy, else what is wrong (then no
    ping: if it stays wrong for the whole ``WatchdogSec``, systemd restarts us).
    """
    while True:
        try:
            async with asyncio.timeout(interval):
                problem = await health()
        except TimeoutError:
            problem = f"the health check did not answer within {interval:g} s"
        if problem is None:
            notifier.watchdog()
        else:
            _LOGGER.error("watchdog not pinged: %s", problem)
        await asyncio.sleep(interval)
