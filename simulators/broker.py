"""A real mosquitto broker as a subprocess, on loopback: the demo's broker and the tests'.

    with MosquittoBroker(tmp_path) as broker:
        async with aiomqtt.Client(broker.host, broker.port, protocol=V5) as client: ...

Observed with the Debian mosquitto 2.0.11:

* Started as root, mosquitto drops privileges to the user ``mosquitto`` unless the config says
  ``user root``. It then cannot write into a root-owned 0700 directory such as pytest's
  ``tmp_path``: the log file fails to open and the persistence database is not saved, yet
  the broker keeps running. As root we therefore write ``user root`` into the config.
* ``log_dest stdout`` is block-buffered when stdout is a file, so it is useless for a live
  ``log_tail()``. ``log_dest file`` is flushed line by line. The process's own stdout/stderr
  (messages printed before the config is loaded, config errors) are appended to the
  same file through an ``O_APPEND`` descriptor, so nothing is lost and nothing is garbled.
* The listener sets SO_REUSEADDR, so the port can be bound again right after a stop, even
  while old client connections linger in TIME-WAIT/FIN-WAIT.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
FALLBACK_BINARY = Path("/usr/sbin/mosquitto")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.02


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> Path:
    """Locate the mosquitto binary on PATH or in /usr/sbin, or raise RuntimeError."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    if FALLBACK_BINARY.is_file() and os.access(FALLBACK_BINARY, os.X_OK):
        return FALLBACK_BINARY
    msg = (
        "mosquitto not found on PATH or at /usr/sbin/mosquitto; install it with "
        "`apt-get install mosquitto` (Debian/Ubuntu) to run the broker tests"
    )
    raise RuntimeError(msg)


def _port_is_bindable(port: int) -> bool:
    """True if nobody listens on HOST:port (bound like mosquitto does, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """A mosquitto process listening on 127.0.0.1 only, configured and logged inside workdir."""

    host = HOST

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        max_queued_messages: int | None = None,
        persistence: bool = False,
        extra_config: str = "",
        listeners: str | None = None,
    ) -> None:
        """``listeners``: configuration that replaces the default loopback listener open to
        anonymous clients (a test of the shipped TLS/ACL configuration); ``port`` must be one
        of its listeners, the one waited for at start."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = find_mosquitto()
        self.port = port if port is not None else free_port()
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.persistence = persistence
        self._proc: subprocess.Popen[bytes] | None = None

        head = ([f"listener {self.port} {HOST}", "allow_anonymous true"] if listeners is None
                else [listeners.strip()])
        lines = [
            *head,
            # Without it a small message right after another waits for a delayed ACK (~40 ms).
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type all",
            "log_timestamp true",
            "log_timestamp_format %H:%M:%S",
        ]
        if os.geteuid() == 0:
            # Otherwise mosquitto switches to user "mosquitto" and cannot write to workdir.
            lines.append("user root")
        if persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines.append("persistence false")
        if max_queued_messages is not None:
            lines.append(f"max_queued_messages {max_queued_messages}")
        if extra_config.strip():
            lines.append(extra_config.strip())
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # -- properties -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def persistence_file(self) -> Path:
        return self.workdir / "mosquitto.db"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start mosquitto and return once its port accepts TCP connections."""
        if self.running:
            msg = f"mosquitto already running (pid {self.pid}) on port {self.port}"
            raise RuntimeError(msg)
        self._reap()
        if not _port_is_bindable(self.port):
            msg = f"port {HOST}:{self.port} is already in use; cannot start mosquitto on it"
            raise RuntimeError(msg)
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                msg = (
                    f"mosquitto exited with code {proc.returncode} during startup "
                    f"(port {self.port}); log tail:\n{self.log_tail()}"
                )
                self._proc = None
                raise RuntimeError(msg)
            # Port free before the start + accepting now + our process alive => it is ours.
            if _accepts_tcp(self.port) and proc.poll() is None:
                return
            if time.monotonic() >= deadline:
                self._terminate(signal.SIGKILL)
                msg = (
                    f"mosquitto did not accept connections on {HOST}:{self.port} within "
                    f"{START_TIMEOUT:.0f} s; log tail:\n{self.log_tail()}"
                )
                raise RuntimeError(msg)
            time.sleep(POLL_INTERVAL)  # polling interval, not synchronisation

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM and wait (SIGKILL after timeout). Idempotent; safe after kill()."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL and wait: no persistence save, no clean disconnects."""
        self._terminate(signal.SIGKILL)

    def restart(self) -> None:
        """stop() then start() on the same port."""
        self.stop()
        self.start()

    def _terminate(self, sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._proc = None

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    # -- diagnostics -------------------------------------------------------------------------

    def log_tail(self, n: int = 50) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "<no mosquitto log yet>"
        return "\n".join(text.splitlines()[-n:])

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<MosquittoBroker {self.url} {state}>"

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
