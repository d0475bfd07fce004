"""``kassad …``: the one command line of the product.

  kassad run [--config FILE]                the register daemon (systemd runs this)
  kassad store [--config FILE]              the store aggregator
  kassad send COMMAND [--json '{…}'] [k=v]  send a command to a register, print each reply
  kassad ack-consumer --store S --consumer NAME --db FILE   minimal event consumer
  kassad ws-bridge [--config FILE]          MQTT over WebSockets to the store broker
  kassad schema [--out DIR]                 JSON Schemas of every payload
  kassad journal verify|export              check or dump a register journal
  kassad sim printer [--help]               the printer simulator (and `… control VERB`)
  kassad sim counter cctalk|ssp [--help]    coin/note counter simulators (and `… control`)
  kassad install [--help]                   put units, udev rules, config and user in place
  kassad doctor [--config FILE]             check a live installation and say what to fix
  kassad demo [--help]                      a whole simulated store, until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import BrokerConfig, ConfigError, RegisterConfig, TlsConfig, load_register_config
from .journal.store import JournalError
from .mqtt.link import quiet_socket_races

if TYPE_CHECKING:
    from .store.config import StoreConfig

_LOGGER = logging.getLogger("kassad")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def _add_broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="register configuration (TOML); default $KASSAD_CONFIG")
    p.add_argument("--host", help="broker host (overrides the configuration)")
    p.add_argument("--port", type=int, help="broker port")
    p.add_argument("--store", help="store id")
    p.add_argument("--register", help="register id")
    p.add_argument("--username", help="broker username (a POS user for kassad send)")
    p.add_argument("--password-file", help="file holding the broker password (first line)")
    p.add_argument("--ca-file", help="TLS: the CA that signed the broker's certificate")


def _broker_from_args(args: argparse.Namespace) -> tuple[BrokerConfig, str | None, str | None]:
    store, register = args.store, args.register
    broker = BrokerConfig()
    if args.config or (not (args.host or args.port) and _env_config()):
        config = load_register_config(args.config)
        broker = config.broker
        store, register = store or config.store, register or config.register_id
    updates: dict[str, Any] = {k: v for k, v in (("host", args.host), ("port", args.port))
                               if v is not None}
    if args.username:  # another user: none of the configuration's credentials
        updates.update(username=args.username, password=None, password_file=None)
    if args.password_file:
        updates.update(password=None, password_file=Path(args.password_file))
    if args.ca_file:
        updates["tls"] = TlsConfig(ca_file=Path(args.ca_file))
    return broker.model_copy(update=updates), store, register


def _env_config() -> bool:
    import os

    return bool(os.environ.get("KASSAD_CONFIG"))


# -- run ------------------------------------------------------------------------------------


async def _run_register(config: RegisterConfig, path: str | None) -> None:
    from .register.service import RegisterService

    service = RegisterService(config, load_config=lambda: load_register_config(path))
    loop = asyncio.get_running_loop()
    quiet_socket_races(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    loop.add_signal_handler(signal.SIGHUP, service.request_reload)
    await service.run()


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_register_config(args.config)
    except ConfigError as e:
        print(f"kassad: invalid configuration\n{e}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or config.logging.level)
    try:
        asyncio.run(_run_register(config, args.config))
    except JournalError as e:
        print(f"kassad: {e}", file=sys.stderr)
        return 3
    return 0


async def _run_store(config: StoreConfig, path: str | None) -> None:
    from .store.config import load_store_config
    from .store.service import StoreService

    service = StoreService(config, load_config=lambda: load_store_config(path))
    loop = asyncio.get_running_loop()
    quiet_socket_races(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    loop.add_signal_handler(signal.SIGHUP, service.request_reload)
    await service.run()


def cmd_store(args: argparse.Namespace) -> int:
    from .store.config import load_store_config

    try:
        config = load_store_config(args.config)
    except ConfigError as e:
        print(f"kassad store: invalid configuration\n{e}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or config.logging.level)
    asyncio.run(_run_store(config, args.config))
    return 0


# -- ws-bridge ------------------------------------------------------------------------------


def cmd_ws_bridge(args: argparse.Namespace) -> int:
    from .mqtt.ws_bridge import WsBridge
    from .mqtt.ws_config import load_ws_bridge_config

    try:
        config = load_ws_bridge_config(args.config)
        bridge = WsBridge(config)  # loads the certificates: a bad file is a configuration error
    except ConfigError as e:
        print(f"kassad ws-bridge: invalid configuration\n{e}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or config.logging.level)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bridge.stop)
        await bridge.run()

    try:
        asyncio.run(serve())
    except OSError as e:  # the port taken, or the address not here
        print(f"kassad ws-bridge: cannot listen: {e}", file=sys.stderr)
        return 1
    return 0


# -- send -----------------------------------------------------------------------------------


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``kind=cash_sale tendered=200.00SEK amount.amount=14950`` → params.

    Values are JSON when they parse as JSON, else strings; ``149.50SEK`` is money; dotted keys
    nest.
    """
    from .contract.commands import MoneyIn
    from .ledger.money import MoneyError, parse_decimal

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise ValueError(f"{pair!r}: expected key=value (dotted keys: a.b=value)")
        value: Any
        if _MONEY_RE.match(raw):
            try:
                value = MoneyIn(amount=parse_decimal(raw[:-3], raw[-3:]),
                                currency=raw[-3:]).model_dump()
            except (MoneyError, ValueError) as e:
                raise ValueError(f"{pair!r}: not an amount of money: {e}") from None
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        node = out
        *parents, leaf = parts
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{pair!r}: {part} already has a value")
            node = child
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"{pair!r}: {leaf} already has nested keys")
        node[leaf] = value
    return out


_MONEY_RE = re.compile(r"^-?\d+(\.\d+)?[A-Z]{3}$")


async def _send(args: argparse.Namespace, params: dict[str, Any]) -> int:
    from .client import CommandError, CommandTimeout, KassadClient

    broker, store, register = _broker_from_args(args)
    if not store or not register:
        print("kassad send: --store and --register (or --config) are required", file=sys.stderr)
        return 2

    def show(reply: dict[str, Any]) -> None:
        print(json.dumps(reply, ensure_ascii=False), flush=True)

    # Under the store broker's ACL a POS reads only the replies to its own username.
    requester = args.requester or (args.username if args.username and
                                   "/" not in args.username else "cli")
    async with KassadClient(broker, store=store, register=register, requester=requester,
                            employee=args.employee, ttl=args.ttl, on_reply=show) as client:
        try:
            await client.send(args.command, params, cmd_id=args.cmd_id)
        except CommandError:
            return 1
        except CommandTimeout as e:
            print(f"kassad send: {e}", file=sys.stderr)
            return 4
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level or "WARNING")
    try:
        params = json.loads(args.json) if args.json else {}
        if not isinstance(params, dict):
            raise ValueError("--json must be a JSON object")
        params.update(parse_assignments(args.params))
    except ValueError as e:
        print(f"kassad send: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_send(args, params))
    except ConfigError as e:
        print(f"kassad: invalid configuration\n{e}", file=sys.stderr)
        return 2


# -- ack-consumer ---------------------------------------------------------------------------


async def _consume(args: argparse.Namespace) -> None:
    from .consumer import AckConsumer

    broker, store, _ = _broker_from_args(args)
    consumer = AckConsumer(broker, store=store or "", consumer=args.consumer,
                           db_path=Path(args.db))
    task = asyncio.create_task(consumer.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def cmd_ack_consumer(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level or "INFO")
    if not args.store and not args.config:
        print("kassad ack-consumer: --store (or --config) is required", file=sys.stderr)
        return 2
    asyncio.run(_consume(args))
    return 0


# -- schema, journal ------------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    from .contract.schema import all_schemas

    schemas = all_schemas()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas.items():
            (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
        print(f"wrote {len(schemas)} schemas to {out}")
    else:
        print(json.dumps(schemas, indent=2))
    return 0


def _journal_path(args: argparse.Namespace) -> Path:
    if args.journal:
        return Path(args.journal)
    return load_register_config(args.config).journal.path


def cmd_journal(args: argparse.Namespace) -> int:
    from .journal.verify import export_events, verify_journal

    try:
        path = _journal_path(args)
        if args.action == "verify":
            report = verify_journal(path)
            print(report.summary())
            return 0 if report.ok else 1
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
        try:
            count = export_events(path, out, args.from_seq)
        finally:
            if out is not sys.stdout:
                out.close()
        print(f"exported {count} events", file=sys.stderr)
        return 0
    except ConfigError as e:
        print(f"kassad: invalid configuration\n{e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"kassad journal: {e}", file=sys.stderr)
        return 2


def cmd_sim(args: argparse.Namespace) -> int:
    """``kassad sim printer [options]`` / ``kassad sim counter cctalk|ssp [options]`` run a
    simulator; ``… control --control-port N VERB [key=value …]`` drives a running one."""
    rest = list(args.args)
    if args.device == "printer":
        from kassad.simulators.printer.control import control_main
        from kassad.simulators.printer.control import main as printer_main

        if rest and rest[0] == "control":
            return control_main(rest[1:])
        return printer_main(rest)
    if rest and rest[0] == "control":
        return _counter_control(rest[1:])
    if rest and rest[0] == "cctalk":
        from kassad.simulators.cctalk.control import main as cctalk_main

        return cctalk_main(rest[1:])
    if rest and rest[0] == "ssp":
        from kassad.simulators.ssp.control import main as ssp_main

        return ssp_main(rest[1:])
    print("kassad sim counter: say cctalk, ssp or control (kassad sim counter cctalk --help)",
          file=sys.stderr)
    return 2


def _counter_control(argv: list[str]) -> int:
    """One control verb to a running counter simulator (insert_coin, jam, lose_reply …)."""
    from kassad.simulators.control import control

    p = argparse.ArgumentParser(prog="kassad sim counter control")
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("verb")
    p.add_argument("params", nargs="*", metavar="key=value")
    a = p.parse_args(argv)
    try:
        params = parse_assignments(a.params)
        reply = asyncio.run(control(a.control_port, a.verb, **params))
    except ValueError as e:
        print(f"kassad sim counter control: {e}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError) as e:
        print(f"counter simulator not reachable on port {a.control_port}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from kassad.simulators.demo import main as demo_main

    return demo_main(list(args.args))


def cmd_install(args: argparse.Namespace) -> int:
    from .admin.install import main as install_main

    return install_main(list(args.args))


def cmd_doctor(args: argparse.Namespace) -> int:
    from .admin.doctor import main as doctor_main

    return doctor_main(list(args.args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kassad", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kassad {__version__}")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="run the register daemon")
    p.add_argument("--config", help="configuration file (default $KASSAD_CONFIG)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("store", help="run the store aggregator")
    p.add_argument("--config", help="aggregator configuration (TOML)")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("ws-bridge", help="MQTT over WebSockets (browser POS) to the broker")
    p.add_argument("--config", help="bridge configuration (TOML)")
    p.set_defaults(func=cmd_ws_bridge)

    p = sub.add_parser("send", help="send a command to a register and print its replies")
    _add_broker_args(p)
    p.add_argument("command", help="e.g. session.open, payment.record, state.get")
    p.add_argument("params", nargs="*", help="key=value params (149.50SEK is money)")
    p.add_argument("--json", help="params as a JSON object")
    p.add_argument("--requester", help="requester id (default: --username, else cli)")
    p.add_argument("--employee", default=os.environ.get("KASSAD_EMPLOYEE"),
                   help="employee id recorded as the actor; required for commands that move "
                        "cash or open the drawer (default $KASSAD_EMPLOYEE)")
    p.add_argument("--cmd-id", help="reuse a cmd_id (a resend is answered from the journal)")
    p.add_argument("--ttl", type=float, default=30.0, help="seconds until the command expires")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("ack-consumer", help="store events and acknowledge them (minimal)")
    _add_broker_args(p)
    p.add_argument("--consumer", required=True, help="consumer id (acks on ack/{consumer})")
    p.add_argument("--db", required=True, help="SQLite file for the stored events")
    p.set_defaults(func=cmd_ack_consumer)

    p = sub.add_parser("schema", help="print the JSON Schemas of the MQTT payloads")
    p.add_argument("--out", help="write one file per schema into this folder")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("journal", help="verify or export a register journal")
    p.add_argument("action", choices=["verify", "export"])
    p.add_argument("--journal", help="journal file (default: journal.path of --config)")
    p.add_argument("--config", help="configuration file (default $KASSAD_CONFIG)")
    p.add_argument("--from-seq", type=int, default=1, help="export from this seq")
    p.add_argument("--output", "-o", help="export to this file instead of stdout")
    p.set_defaults(func=cmd_journal)

    p = sub.add_parser("sim", help="device simulators: kassad sim printer|counter …")
    p.add_argument("device", choices=["printer", "counter"])
    p.add_argument("args", nargs=argparse.REMAINDER, help="the simulator's own options")
    p.set_defaults(func=cmd_sim)

    # These parse their own options (``kassad demo --help`` is the demo's help).
    for name, func, text in (
            ("install", cmd_install, "install units, udev rules, configuration and user"),
            ("doctor", cmd_doctor, "check a live installation and say what to fix"),
            ("demo", cmd_demo, "run the simulated store until Ctrl-C")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER, help=f"the {name} command's options")
        p.set_defaults(func=func)
    return parser


#: Subcommands that parse their own options: everything after their name is theirs.
PASS_THROUGH = {"install": cmd_install, "doctor": cmd_doctor, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # argparse's REMAINDER drops options that come first (``kassad install --root X``), so
    # a pass-through command gets the rest of the line as it was typed.
    args, _ = parser.parse_known_args(argv)
    name = next((n for n, f in PASS_THROUGH.items() if getattr(args, "func", None) is f), None)
    if name is None:
        args = parser.parse_args(argv)
    else:
        args.args = argv[argv.index(name) + 1:]
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
