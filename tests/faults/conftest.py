"""The fault suite's figures: each fault test adds what it injected and checked, and the run
ends with one table (faults, commands, events, losses, duplicates) — the figures the README's
reliability statement quotes. ``KASSAD_FAULT_REPORT=FILE`` also writes them as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pytest

from tests.faults.rig import Figures


@dataclass
class FaultReport:
    rows: dict[str, Figures] = field(default_factory=dict)

    def add(self, fault: str, figures: Figures) -> None:
        self.rows[fault] = figures

    def total(self) -> Figures:
        total = Figures()
        for row in self.rows.values():
            for f in fields(Figures):
                setattr(total, f.name, getattr(total, f.name) + getattr(row, f.name))
        return total

    def refusals(self) -> str:
        codes = self.total().refusals
        return "refusals by code: " + ", ".join(f"{code} {n}" for code, n in codes.most_common())

    def table(self) -> list[str]:
        head = f"{'fault':<48} {'faults':>6} {'cmds':>6} {'ok':>6} {'refused':>7} " \
               f"{'indet.':>6} {'events':>7} {'kicks':>5} {'lost':>4} {'double':>6}"
        lines = [head]
        for name, f in [*self.rows.items(), ("total", self.total())]:
            lines.append(f"{name[:48]:<48} {f.faults:>6} {f.commands:>6} {f.ok:>6} "
                         f"{f.refused:>7} {f.indeterminate:>6} {f.events:>7} {f.kicks:>5} "
                         f"{f.lost:>4} {f.doubled:>6}")
        return [*lines, self.refusals()]


_REPORT = FaultReport()


@pytest.fixture
def fault_report() -> FaultReport:
    return _REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORT.rows:
        return
    terminalreporter.section("fault injection: what was injected and checked")
    for line in _REPORT.table():
        terminalreporter.write_line(line)
    target = os.environ.get("KASSAD_FAULT_REPORT")
    if target:
        Path(target).write_text(json.dumps(
            {name: asdict(f) for name, f in _REPORT.rows.items()}, indent=2) + "\n")
