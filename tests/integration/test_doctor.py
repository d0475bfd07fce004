"""``kassad doctor`` against a real installation: a running register with its journal, a real
Mosquitto and the printer simulator on TCP; then with each of them broken in turn."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kassad.daemon.admin.checks import Status, check_broker, check_serial
from kassad.daemon.config import load_register_config
from kassad.simulators.broker import MosquittoBroker, free_port
from kassad.simulators.printer.device import PrinterSimulator
from tests.support.register import running_register, write_config

PRINTER = {"status_interval": 0.1, "status_timeout": 0.5, "reconnect_min": 0.05,
           "reconnect_max": 0.2}


async def doctor(config: Path) -> tuple[int, str]:
    """The doctor as a process, as a store's IT person runs it."""
    proc = await asyncio.create_subprocess_exec(
        # --user: judge files as this user even on a machine where kassad is installed.
        sys.executable, "-m", "kassad.daemon.admin.doctor", "--config", str(config),
        "--timeout", "2", "--user", "kassad-tests-nobody",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("KASSAD_")})
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


def lines(report: str, check: str) -> list[str]:
    """The report's lines for one check: 'ok    broker  127.0.0.1:…' and its fix: line."""
    rows = report.splitlines()
    found = []
    for i, row in enumerate(rows):
        if re.match(rf"(ok|warn|FAIL)\s+{re.escape(check)}\s{{2}}", row):
            found.append(row)
            if i + 1 < len(rows) and rows[i + 1].strip().startswith("fix:"):
                found.append(rows[i + 1])
    return found


@pytest.fixture
async def sim() -> AsyncIterator[PrinterSimulator]:
    async with PrinterSimulator() as printer:
        await printer.serve_tcp()
        yield printer


def config_for(tmp_path: Path, broker_port: int, printer_port: int, **broker: object) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_config(
        tmp_path / "kassad.toml", port=broker_port, journal=tmp_path / "state" / "journal.db",
        consumers=[], broker=dict(broker),
        devices={"printer": {"model": "TM-T20II", "transport": {
            "kind": "tcp", "host": "127.0.0.1", "port": printer_port}, **PRINTER}})


async def test_a_working_installation_is_all_ok(broker: MosquittoBroker, sim: PrinterSimulator,
                                                tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    config = config_for(tmp_path, broker.port, sim.tcp_port or 0)
    # Checked live, as on a register: the daemon runs, holds the journal and the printer.
    async with running_register(config):
        code, report = await doctor(config)
    assert code == 0, report
    assert "FAIL" not in report
    for check in ("config", "journal dir", "disk space", "journal", "printer", "broker"):
        assert lines(report, check) and lines(report, check)[0].startswith("ok"), report
    assert "events verified" in lines(report, "journal")[0]
    assert f"TM-T20II at tcp 127.0.0.1:{sim.tcp_port}: accepts connections" in report
    assert f"127.0.0.1:{broker.port}: connected (MQTT 5)" in report
    # The clock depends on the machine (a VM's kernel may not be NTP-synchronised): a warning.
    assert lines(report, "clock")[0].split()[0] in ("ok", "warn")


async def test_broker_stopped(broker: MosquittoBroker, sim: PrinterSimulator,
                              tmp_path: Path) -> None:
    config = config_for(tmp_path, broker.port, sim.tcp_port or 0)
    broker.stop()
    code, report = await doctor(config)
    assert code == 1
    row, fix = lines(report, "broker")
    assert row.startswith("FAIL") and f"127.0.0.1:{broker.port}: connection refused" in row
    assert "fix:" in fix and "Mosquitto" in fix
    assert lines(report, "printer")[0].startswith("ok")


def _password_broker(workdir: Path, user: str, password: str) -> MosquittoBroker:
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(tool, os.X_OK):
        pytest.skip("mosquitto_passwd not installed (package mosquitto)")
    workdir.mkdir(parents=True)
    passwords = workdir / "passwd"
    subprocess.run([tool, "-b", "-c", str(passwords), user, password], check=True,
                   capture_output=True, timeout=30)
    # Later lines win in mosquitto.conf: these replace the helper's allow_anonymous true.
    return MosquittoBroker(workdir, extra_config=f"allow_anonymous false\n"
                                                 f"password_file {passwords}")


async def test_bad_credentials_are_not_authorised(sim: PrinterSimulator, tmp_path: Path) -> None:
    with _password_broker(tmp_path / "broker", "S1-R1", "right") as broker:
        good = config_for(tmp_path / "good", broker.port, sim.tcp_port or 0,
                          username="S1-R1", password="right")
        bad = config_for(tmp_path / "bad", broker.port, sim.tcp_port or 0,
                         username="S1-R1", password="wrong")
        code, report = await doctor(good)
        assert lines(report, "broker")[0].startswith("ok"), report
        assert "connected as 'S1-R1'" in report
        code, report = await doctor(bad)
    assert code == 1
    row, fix = lines(report, "broker")
    assert row.startswith("FAIL") and "not authorised" in row and "'S1-R1'" in row
    assert "password" in fix


async def test_invalid_configuration_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "kassad.toml"
    config.write_text('store = "S1"\nregister = "R1"\n[broker]\nport = 70000\n')
    code, report = await doctor(config)
    assert code == 1
    row = lines(report, "config")[0]
    assert row.startswith("FAIL") and str(config) in row
    assert "broker.port: Input should be less than or equal to 65535" in report
    assert f"fix: edit {config}" in report
    assert not lines(report, "broker")  # nothing that needs the configuration runs


async def test_printer_port_nobody_listens_on(broker: MosquittoBroker, tmp_path: Path) -> None:
    port = free_port()
    config = config_for(tmp_path, broker.port, port)
    code, report = await doctor(config)
    assert code == 1
    row, fix = lines(report, "printer")
    assert row.startswith("FAIL")
    assert f"TM-T20II at tcp 127.0.0.1:{port}: connection refused" in row
    assert "fix:" in fix and "printer" in fix
    assert lines(report, "broker")[0].startswith("ok")


def test_serial_devices(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        result = check_serial("counter coins", Path(os.ttyname(slave)))
        assert result.status is Status.OK, result
    finally:
        os.close(master)
        os.close(slave)
    missing = check_serial("drawer", tmp_path / "ttyUSB9")
    assert missing.status is Status.FAIL and "no such device" in missing.message
    assert missing.fix and "/dev/kassad/" in missing.fix
    (tmp_path / "plain").write_text("")
    assert "not a serial port" in check_serial("drawer", tmp_path / "plain").message


async def test_a_port_that_never_answers_mqtt_is_a_timeout(tmp_path: Path) -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()  # takes the CONNECT and never sends a CONNACK
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        config = load_register_config(config_for(tmp_path, port, free_port()))
        result = await check_broker(config, tmp_path / "kassad.toml", timeout=0.5)
    assert accepted.is_set()
    assert result.status is Status.FAIL
    assert f"127.0.0.1:{port}: no MQTT answer within 0.5 s" in result.message
