"""Which commands the worker may settle in groups: only those whose execution is the ledger
fold alone. A handler that prints or drives a device must run one at a time."""

from kassad.daemon.config import load_register_config
from kassad.daemon.register.commands import Handler
from kassad.daemon.register.service import all_handlers
from tests.unit.test_example_config import EXAMPLE


def _groupable(handler: Handler) -> bool:
    return bool(getattr(handler, "groupable", False))


def test_only_pure_session_commands_are_settled_in_groups(monkeypatch):
    for name in ("KASSAD_CONFIG", "KASSAD_REGISTER", "KASSAD_STORE"):
        monkeypatch.delenv(name, raising=False)
    config = load_register_config(EXAMPLE)  # a printer, a drawer and counters: every handler
    handlers = all_handlers(config)
    grouped = {name for name, handler in handlers.items() if _groupable(handler)}
    assert grouped == {"payment.record", "session.open", "cash.transfer_out",
                       "cash.transfer_in", "cash.reconciliation", "session.correct"}
    for name in grouped:
        handler = handlers[name]
        # Its execute is the base's: nothing after the fold (no print, no device).
        base_execute = next(c.__dict__["execute"] for c in type(handler).__mro__
                            if "settle" in c.__dict__)
        assert type(handler).execute is base_execute, name
