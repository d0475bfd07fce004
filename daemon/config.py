"""The register's configuration: one TOML file, validated once at start, overridable from the
environment (``KASSAD_BROKER__HOST=…``: prefix ``KASSAD_``, nested keys joined by ``__``).

Every timing is a field here, never a module constant, so tests and stores can tune it.
"""

from __future__ import annotations

import os
import re
import tomllib
import zoneinfo
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .contract.topics import ID_RE
from .ledger.cash_rounding import CashRounding, rules_for
from .ledger.denominations import DEFAULT_DENOMINATIONS, Denomination
from .ledger.exchange import RateError, parse_rate
from .ledger.money import is_iso_currency

CONFIG_ENV = "KASSAD_CONFIG"
Id = Annotated[str, Field(pattern=ID_RE.pattern)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    ca_file: Path = Field(description="CA certificate that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class BrokerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(
        None, description="the password in a file of its own (its first line), readable only "
                          "by the service user; instead of password")
    tls: TlsConfig | None = None
    keepalive: int = Field(15, ge=5, le=3600, description="MQTT keepalive, seconds")
    connect_timeout: Seconds = 10.0
    session_expiry: int = Field(120, ge=1, description="MQTT 5 Session Expiry Interval, s")
    will_delay: int = Field(5, ge=0, le=3600, description="Will Delay: no offline blip")
    reconnect_min: Seconds = 0.5
    reconnect_max: Seconds = 60.0

    @model_validator(mode="after")
    def _one_password(self) -> BrokerConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def password_value(self) -> str | None:
        """The password to connect with: ``password``, or the first line of ``password_file``,
        read at each connect (a changed file takes effect at the next reconnect). OSError when
        the file cannot be read; its message names the file, never the password."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        lines = self.password_file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""


class JournalConfig(_Section):
    path: Path = Path("/var/lib/kassad/journal.db")


class DeliveryConfig(_Section):
    consumers: list[Id] = Field(
        default_factory=list,
        description="consumers whose ack/{consumer} must cover an event before it is done",
    )
    inflight_window: int = Field(20, ge=1, le=1000, description="publishes awaiting PUBACK")
    unacked_window: int = Field(
        500, ge=1, le=100_000,
        description="events published beyond the slowest consumer's ack: below the broker's "
                    "max_queued_messages, or a backlog overflows it and is resent")
    resend_after: Seconds = Field(5.0, description="no ack progress for this long: resend")
    resend_after_max: Seconds = 60.0
    publish_timeout: Seconds = 10.0
    batch: int = Field(200, ge=1, le=10_000, description="events read from the journal at once")
    state_interval: Seconds = Field(0.25, description="at most one retained state per interval")


class DenominationConfig(_Section):
    value: int = Field(ge=1, le=10**9, description="in minor units: 2000 is a 20.00 note")
    kind: Literal["coin", "note"]


class RoundingConfig(_Section):
    increment: int = Field(ge=1, le=100_000, description="minor units: 100 is whole kronor, "
                           "5 is 0.05")
    mode: Literal["half_up", "half_even", "down", "up"] = "half_up"


def _rate(value: Any) -> Any:
    # A rate is written as a string ("11.4250"): a TOML float would already be binary.
    if not isinstance(value, str):
        raise ValueError("write an exchange rate as a string, e.g. \"11.4250\"")
    try:
        return parse_rate(value)
    except RateError as e:
        raise ValueError(str(e)) from None


Rate = Annotated[Decimal, BeforeValidator(_rate)]


class MoneyConfig(_Section):
    base_currency: str = "SEK"
    accepted: list[str] = Field(default_factory=lambda: ["SEK"])
    max_amount: int = Field(
        10**10, ge=1, le=10**13, description="largest single amount, in minor units"
    )
    denominations: dict[str, list[DenominationConfig]] = Field(
        default_factory=dict,
        description="replaces the built-in coins and notes of a currency (SEK, EUR, USD, GBP, "
                    "NOK, DKK and CHF are built in)")
    low_change_pieces: int = Field(5, ge=0, le=1000,
                                   description="warn when a change denomination falls below")
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$", description="ISO 3166 code: "
                                "SE rounds SEK cash to whole kronor, CH CHF and FI/NL/BE/IE EUR "
                                "to 0.05")
    cash_rounding: dict[str, RoundingConfig] = Field(
        default_factory=dict, description="per currency, overrides the country's rounding")
    exchange_rates: dict[str, Rate] = Field(
        default_factory=dict, description="base-currency units for one unit of a foreign "
                                          "currency, e.g. EUR = \"11.4250\" (a command may give "
                                          "its own)")

    def rounding_rules(self) -> dict[str, CashRounding]:
        return rules_for(self.country, {c: CashRounding(r.increment, r.mode)
                                        for c, r in self.cash_rounding.items()})

    def denomination_sets(self) -> dict[str, tuple[Denomination, ...]]:
        sets = dict(DEFAULT_DENOMINATIONS)
        for code, items in self.denominations.items():
            sets[code] = tuple(Denomination(d.value, d.kind) for d in items)
        return sets

    @model_validator(mode="after")
    def _codes(self) -> MoneyConfig:
        for code in [self.base_currency, *self.accepted]:
            if not is_iso_currency(code):
                raise ValueError(f"{code!r} is not an ISO 4217 currency code")
        if self.base_currency not in self.accepted:
            raise ValueError(f"base_currency {self.base_currency} must be in accepted")
        for code, items in self.denominations.items():
            if not is_iso_currency(code):
                raise ValueError(f"denominations: {code!r} is not an ISO 4217 currency code")
            values = [d.value for d in items]
            if len(set(values)) != len(values):
                raise ValueError(f"denominations.{code}: a value is listed twice")
        for table in ("cash_rounding", "exchange_rates"):
            for code in getattr(self, table):
                if not is_iso_currency(code):
                    raise ValueError(f"{table}: {code!r} is not an ISO 4217 currency code")
        if self.base_currency in self.exchange_rates:
            raise ValueError("exchange_rates: the base currency needs no rate")
        return self


class CommandsConfig(_Section):
    max_payload_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    clock_skew: Seconds = Field(5.0, description="tolerance when checking expires_at")
    default_ttl: Seconds = Field(
        60.0, description="lifetime of a command that gives issued_at but no expires_at"
    )
    require_employee: bool = Field(
        True, description="commands that move cash or open the drawer must name the employee "
                          "(else not_permitted)")
    no_sale_roles: list[Id] = Field(
        default_factory=list, description="drawer.open with reason no_sale only for employees "
                                          "with one of these roles ([roles]); empty: anyone")


def _usb_id(value: Any) -> Any:
    """USB ids as people write them: 0x04b8, "04b8", "0x04B8" or 1208."""
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            raise ValueError(f"{value!r} is not a hexadecimal USB id") from None
    return value


UsbId = Annotated[int, BeforeValidator(_usb_id), Field(ge=0, le=0xFFFF)]
BAUD_RATES = (2400, 4800, 9600, 19200, 38400, 57600, 115200)


class TcpTransportConfig(_Section):
    kind: Literal["tcp"]
    host: str
    port: int = Field(9100, ge=1, le=65535)


class SerialTransportConfig(_Section):
    kind: Literal["serial"]
    path: Path = Field(description="/dev/ttyUSB0, /dev/kassad/printer0, or a pty")
    baudrate: int = 19200
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    flow: Literal["none", "xonxoff", "rtscts", "dsrdtr"] = "none"

    @model_validator(mode="after")
    def _baud(self) -> SerialTransportConfig:
        if self.baudrate not in BAUD_RATES:
            raise ValueError(f"baudrate {self.baudrate} is not one of {BAUD_RATES}")
        return self


class UsbTransportConfig(_Section):
    kind: Literal["usb"]
    vendor_id: UsbId
    product_id: UsbId
    serial_number: str | None = Field(None, description="tells two identical printers apart")
    interface: int = Field(0, ge=0, le=15)


TransportConfig = Annotated[
    TcpTransportConfig | SerialTransportConfig | UsbTransportConfig, Field(discriminator="kind")
]


class PrinterConfig(_Section):
    model: str = Field("TM-T20II", description="printer model: columns, dots, code page")
    transport: TransportConfig
    open_timeout: Seconds = 5.0
    write_timeout: Seconds = 10.0
    status_interval: Seconds = Field(1.0, description="DLE EOT status poll period")
    status_timeout: Seconds = Field(1.0, description="no status reply in this time: offline")
    reconnect_min: Seconds = 0.5
    reconnect_max: Seconds = 30.0
    receipt_expiry: Seconds = Field(300.0, description="a receipt not printed by then expires")
    completion_timeout: Seconds = Field(30.0, description="wait for GS ( H after the last byte")
    asb: bool = Field(True, description="Automatic Status Back: changes reported at once")


def _hex_bytes(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{value!r} is not hex bytes (e.g. \"1b 70 00 19 fa\")") from None
    return value


HexBytes = Annotated[bytes, BeforeValidator(_hex_bytes), Field(min_length=1, max_length=32)]


class SerialDrawerConfig(_Section):
    """A drawer on its own serial interface box: an open command and a status byte."""

    path: Path
    baudrate: int = 9600
    open_command: HexBytes = Field(b"\x07", description="hex, e.g. \"07\" or \"1b 70 00 19 fa\"")
    status_command: HexBytes = Field(b"\x1b\x75\x00", description="asks for the sensor byte")
    open_mask: int = Field(0x01, ge=1, le=0xFF)
    open_value: int = Field(0x01, ge=0, le=0xFF, description="sensor byte & mask when open")
    poll_interval: Seconds = 0.2
    reply_timeout: Seconds = 0.5
    write_timeout: Seconds = 2.0
    reconnect_min: Seconds = 0.1
    reconnect_max: Seconds = 5.0

    @model_validator(mode="after")
    def _checks(self) -> SerialDrawerConfig:
        if self.baudrate not in BAUD_RATES:
            raise ValueError(f"baudrate {self.baudrate} is not one of {BAUD_RATES}")
        if self.open_value & ~self.open_mask:
            raise ValueError("open_value has bits outside open_mask")
        return self


class DrawerConfig(_Section):
    via: Literal["printer", "serial"] = Field("printer", description="the printer's kick port, "
                                              "or a serial drawer interface ([…drawer.serial])")
    serial: SerialDrawerConfig | None = None
    pin: Literal[2, 5] = 2
    pulse_on_ms: int = Field(100, ge=2, le=510)
    pulse_off_ms: int = Field(100, ge=2, le=510)
    realtime_kick: bool = Field(True, description="DLE DC4: never waits behind print data")
    open_level: Literal["low", "high"] = Field("low", description="pin 3 level when open")
    open_timeout: Seconds = Field(1.5, description="a kick that has not opened it by then …")
    kick_retries: int = Field(1, ge=0, le=3, description="… is sent again this many times")
    left_open_after: Seconds = Field(60.0, description="alarm when open longer than this")
    max_kick_age: Seconds = Field(10.0, description="a kick older than this is never run")


class CounterConfig(_Section):
    """A coin or note counter: a ccTalk device (coin acceptor, bill validator) or an ITL SSP
    note validator on a serial line."""

    name: Id
    protocol: Literal["cctalk", "ssp"]
    kind: Literal["coin_acceptor", "bill_validator", "note_validator"] = "coin_acceptor"
    path: Path
    baudrate: int = 9600
    address: int | None = Field(None, ge=0, le=255,
                                description="default: ccTalk 2 coins, 40 bills; SSP 0")
    crc: bool = Field(False, description="ccTalk CRC-16 mode instead of the 8-bit checksum")
    currency: str | None = Field(None, description="what the channels hold, if one currency")
    channels: dict[int, int] = Field(
        default_factory=dict,
        description="channel → denomination value in minor units; overrides the device's ids")
    poll_interval: Seconds = 0.2
    response_timeout: Seconds = 0.5
    quiet_time: Seconds = Field(10.0, description="a counting run ends this long after the "
                                "last piece")

    @model_validator(mode="after")
    def _checks(self) -> CounterConfig:
        if self.baudrate not in BAUD_RATES:
            raise ValueError(f"baudrate {self.baudrate} is not one of {BAUD_RATES}")
        if self.channels and self.currency is None:
            raise ValueError("channels need the currency they are in")
        if self.currency is not None and not is_iso_currency(self.currency):
            raise ValueError(f"{self.currency!r} is not an ISO 4217 currency code")
        return self


class DevicesConfig(_Section):
    """The register's hardware; a device not configured answers device_unavailable."""

    printer: PrinterConfig | None = None
    drawer: DrawerConfig | None = None
    counters: list[CounterConfig] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _drawer_needs_printer(self) -> DevicesConfig:
        if self.drawer is not None and self.drawer.via == "printer" and self.printer is None:
            raise ValueError("drawer.via = printer needs a [devices.printer]")
        if self.drawer is not None and self.drawer.via == "serial" and self.drawer.serial is None:
            raise ValueError("drawer.via = serial needs a [devices.drawer.serial]")
        names = [c.name for c in self.counters]
        if len(set(names)) != len(names):
            raise ValueError("two counters have the same name")
        return self


_CLOCK_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def _clock(value: Any) -> Any:
    if isinstance(value, str) and not _CLOCK_RE.match(value):
        raise ValueError(f"{value!r} is not a time of day as HH:MM (24-hour)")
    return value


ClockTime = Annotated[str, BeforeValidator(_clock)]


class AutoCloseConfig(_Section):
    """Close the open session by itself (a system close: counted unknown, the expected amount
    carried forward) at a local time every day, month or year."""

    period: Literal["daily", "monthly", "yearly"]
    at: ClockTime = Field("03:00", description="local time (session.timezone), HH:MM")


class CountRulesConfig(_Section):
    """Enforced by the daemon, whatever the POS screen shows."""

    blind: bool = Field(False, description="nobody is told the expected cash before the close "
                                           "is counted (state, replies and X reports omit it)")
    max_difference: dict[str, int] = Field(
        default_factory=dict, description="per currency, minor units: a close further off "
                                          "needs a manager's approval and a reason")
    max_recounts: int = Field(2, ge=0, le=10, description="closes refused for the difference "
                              "before only an approval can close")
    managers: list[Id] = Field(default_factory=list, description="employee ids with the "
                               "manager role; empty: the role the command claims is taken")

    @model_validator(mode="after")
    def _checks(self) -> CountRulesConfig:
        for code, limit in self.max_difference.items():
            if not is_iso_currency(code):
                raise ValueError(f"max_difference: {code!r} is not an ISO 4217 currency code")
            if limit < 0:
                raise ValueError(f"max_difference.{code} must be 0 or more")
        return self


class SessionConfig(_Section):
    timezone: str = Field("UTC", description="the store's time zone, e.g. Europe/Stockholm")
    business_day_starts: ClockTime = Field("00:00", description="sales after midnight and "
                                           "before this belong to the previous business day")
    auto_close: AutoCloseConfig | None = None
    count_rules: CountRulesConfig = CountRulesConfig()
    allow_unreconciled_close: bool = Field(
        False, description="a session may close with cash transfers not yet reconciled")

    @model_validator(mode="after")
    def _zone(self) -> SessionConfig:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone "
                             "(e.g. Europe/Stockholm)") from None
        return self


class ReportsConfig(_Section):
    """X and Z reports and slips, printed by the daemon from its own journal."""

    language: Literal["sv", "en"] = "en"
    company: str | None = Field(None, max_length=48)
    org_number: str | None = Field(None, max_length=32, description="organisationsnummer")
    address: list[Annotated[str, Field(max_length=48)]] = Field(default_factory=list,
                                                               max_length=4)
    print_z_at_close: bool = Field(True, description="print the Z report when a session "
                                                     "closes (with a printer configured)")
    slips: bool = Field(True, description="print a slip for each adjustment and for the cash "
                                          "removed at a close")


class LoggingConfig(_Section):
    level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")


class RegisterConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KASSAD_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    store: Id
    # The file's key is "register", the environment's KASSAD_REGISTER (see _file_values): the
    # attribute "register" would shadow BaseModel.register.
    register_id: Id
    broker: BrokerConfig = BrokerConfig()
    journal: JournalConfig = JournalConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    money: MoneyConfig = MoneyConfig()
    commands: CommandsConfig = CommandsConfig()
    devices: DevicesConfig = DevicesConfig()
    session: SessionConfig = SessionConfig()
    reports: ReportsConfig = ReportsConfig()
    roles: dict[Id, list[Id]] = Field(
        default_factory=dict, description="role → employee ids with it, e.g. manager = "
                                          "[\"mia\"]; the manager role also counts for "
                                          "approvals (with session.count_rules.managers)")
    logging: LoggingConfig = LoggingConfig()

    def role_members(self) -> dict[str, frozenset[str]]:
        """``[roles]``, with ``session.count_rules.managers`` counted in the manager role."""
        members = {role: frozenset(ids) for role, ids in self.roles.items()}
        if self.session.count_rules.managers:
            members["manager"] = (members.get("manager", frozenset())
                                  | frozenset(self.session.count_rules.managers))
        return members

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed as init values).
        return env_settings, init_settings


#: What SIGHUP changes in a running register (kassad.daemon.reload): log level, limits,
#: alarms and timeouts. Anything else (broker, journal, devices present and how they are
#: reached, currencies, consumers) is reported as needing a restart.
RELOADABLE: tuple[str, ...] = (
    "logging.level",
    "commands.max_payload_bytes", "commands.clock_skew", "commands.default_ttl",
    "commands.require_employee", "commands.no_sale_roles", "roles",
    "delivery.resend_after", "delivery.resend_after_max", "delivery.publish_timeout",
    "delivery.state_interval",
    "money.max_amount", "money.low_change_pieces", "money.exchange_rates",
    "session.count_rules", "session.allow_unreconciled_close",
    "reports.language", "reports.company", "reports.org_number", "reports.address",
    "reports.print_z_at_close", "reports.slips",
    "devices.printer.receipt_expiry",
    *(f"devices.drawer.{key}" for key in (
        "pin", "pulse_on_ms", "pulse_off_ms", "realtime_kick", "open_level", "open_timeout",
        "kick_retries", "left_open_after", "max_kick_age")),
)


class ConfigError(Exception):
    """A configuration that cannot run: the message names the file, the key and the problem."""


def _format_errors(path: Path | None, error: ValidationError) -> str:
    where = str(path) if path else "configuration"
    lines = [f"{where}: {error.error_count()} problem(s)"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        key = "register" if key == "register_id" else key
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (misspelt, or not supported by this version)"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def config_path(explicit: str | Path | None) -> Path | None:
    chosen = explicit or os.environ.get(CONFIG_ENV)
    return Path(chosen) if chosen else None


def load_register_config(explicit: str | Path | None = None) -> RegisterConfig:
    """Load ``--config`` or ``$KASSAD_CONFIG``, with environment overrides; ConfigError if bad."""
    path = config_path(explicit)
    values = _file_values(read_toml(path) if path else {}, path)
    try:
        return RegisterConfig(**values)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from None
    except SettingsError as e:
        raise ConfigError(f"environment (KASSAD_…): {e}") from None


def _file_values(values: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """Map the file's ``register`` key (and ``KASSAD_REGISTER``) onto ``register_id``."""
    values = dict(values)
    if "register_id" in values:
        raise ConfigError(f"{path}: register_id: unknown key (the key is 'register')")
    if "register" in values:
        values["register_id"] = values.pop("register")
    if env := os.environ.get("KASSAD_REGISTER"):
        values["register_id"] = env
    return values
