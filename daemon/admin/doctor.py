"""``kassad doctor [--config FILE]``: check a register's installation and say what to fix.

One line per check (ok / warn / FAIL), a ``fix:`` line under anything not ok. Exit 0 when
nothing failed (warnings allowed), 1 when something did. The register's configuration comes
first; the checks that need it are skipped when it does not load.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from . import accounts
from .checks import (
    Result,
    Status,
    check_broker,
    check_clock,
    check_config,
    check_config_access,
    check_installation,
    check_journal,
    check_journal_dir,
    check_password_file,
    device_checks,
    printer_check,
)
from .layout import SERVICE_USER

DEFAULT_CONFIG = Path("/etc/kassad/kassad.toml")


async def run_checks(path: Path, timeout: float,  # noqa: ASYNC109
                     user: str = SERVICE_USER) -> list[Result]:
    # Files and devices are judged as the service's user would open them; without that user
    # (not installed yet), as the user running the doctor.
    account = accounts.lookup(Path("/"), user)
    config_result, config = check_config(path)
    results = [config_result]
    if config is not None:
        access = check_config_access(path, config, account)
        if access is not None:
            results.append(access)
        secret = check_password_file(config, account)
        if secret is not None:
            results.append(secret)
        results += check_journal_dir(config, account)
        # A journal of a busy year takes a while to verify: off the loop, beside the network.
        journal = asyncio.create_task(asyncio.to_thread(check_journal, config))
        broker = asyncio.create_task(check_broker(config, path, timeout))
        printer = printer_check(config, timeout, account)
        if printer is not None and not isinstance(printer, Result):
            printer = await printer
        results.append(await journal)
        if printer is not None:
            results.append(printer)
        results += device_checks(config, account)
        results.append(await broker)
    results.append(check_clock())
    results += check_installation()
    return results


def format_report(path: Path, results: list[Result]) -> str:
    width = max(len(r.check) for r in results)
    lines = [f"kassad doctor: {path}"]
    for r in results:
        lines.append(f"{r.status.value:<4}  {r.check:<{width}}  {r.message}")
        if r.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {r.fix}")
    failed = sum(r.status is Status.FAIL for r in results)
    warned = sum(r.status is Status.WARN for r in results)
    if failed:
        lines.append(f"{failed} problem(s) to fix, {warned} warning(s).")
    elif warned:
        lines.append(f"No problems; {warned} warning(s).")
    else:
        lines.append("All checks passed.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kassad doctor",
        description="Check a register's installation: the configuration, the journal and its "
                    "disk, the printer, drawer and counters, the broker (with the configured "
                    "credentials and TLS), the clock, the service user and udev rules. Exit "
                    "0 when nothing failed, 1 when something did.")
    p.add_argument("--config", help="register configuration (default $KASSAD_CONFIG, else "
                   f"{DEFAULT_CONFIG})")
    p.add_argument("--user", default=SERVICE_USER,
                   help="the service's user, as whom files and devices are judged (default "
                        "kassad; when it does not exist, the user running the doctor)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for the broker and a network printer (default 5)")
    return p


def main(argv: list[str]) -> int:
    from ..config import config_path

    args = build_parser().parse_args(argv)
    path = config_path(args.config) or DEFAULT_CONFIG
    results = asyncio.run(run_checks(path, args.timeout, args.user))
    print(format_report(path, results))
    return 1 if any(r.status is Status.FAIL for r in results) else 0


if __name__ == "__main__":  # python -m kassad.daemon.admin.doctor
    sys.exit(main(sys.argv[1:]))
