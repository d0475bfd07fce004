"""A real sd_notify socket, as systemd gives a ``Type=notify`` service: the test reads what the
daemon says, in order, each message with the time it arrived."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Notice:
    at: float  # time.monotonic() on arrival
    fields: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str) -> str | None:
        return self.fields.get(key)


class NotifySocket:
    """A bound AF_UNIX datagram socket read by a thread (so a test may block its own loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notices: list[Notice] = []
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._cond:
                self.notices.append(Notice(time.monotonic(), fields))
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Notice], bool], timeout: float = 15.0,
                 after: int = 0, what: str = "notice") -> int:
        """Index of the first notice from ``after`` on that matches; blocks the caller's thread
        (call it through ``asyncio.to_thread`` from a test's loop)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.notices)):
                    if predicate(self.notices[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s; got "
                                       f"{[n.fields for n in self.notices]}")
                self._cond.wait(left)

    def keys(self) -> list[str]:
        """The message kinds in order: READY, STATUS, WATCHDOG, RELOADING, STOPPING."""
        with self._cond:
            return [next(iter(k for k in ("READY", "RELOADING", "STOPPING", "WATCHDOG", "STATUS")
                              if k in n.fields)) for n in self.notices]

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self._sock.close()


def has(key: str, value: str = "1") -> Callable[[Notice], bool]:
    return lambda n: n.get(key) == value
