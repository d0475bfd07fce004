"""``kassad send``'s key=value params, and ``kassad schema``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kassad.daemon.cli import parse_assignments


def _run_cli(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("KASSAD_")}
    return subprocess.run(
        [sys.executable, "-m", "kassad.daemon", *args],
        capture_output=True, text=True, timeout=30, cwd=cwd, env=env, check=False,
    )


# -- parse_assignments ------------------------------------------------------------------------


@pytest.mark.parametrize(("pair", "expected"), [
    ("kind=cash_sale", {"kind": "cash_sale"}),
    ("tendered=200.00SEK", {"tendered": {"amount": 20000, "currency": "SEK"}}),
    ("tendered=149.5SEK", {"tendered": {"amount": 14950, "currency": "SEK"}}),
    ("tendered=200SEK", {"tendered": {"amount": 20000, "currency": "SEK"}}),
    ("tendered=500JPY", {"tendered": {"amount": 500, "currency": "JPY"}}),
    ("tendered=1.234KWD", {"tendered": {"amount": 1234, "currency": "KWD"}}),
    ("n=5", {"n": 5}),
    ("flag=true", {"flag": True}),
    ("flag=false", {"flag": False}),
    ("x=null", {"x": None}),
    ("x=[1,2]", {"x": [1, 2]}),
    ('x={"a":1}', {"x": {"a": 1}}),
    ('note="5"', {"note": "5"}),
    ("note=hello world", {"note": "hello world"}),
    ("note=", {"note": ""}),
    ("note=a=b", {"note": "a=b"}),
    ("amount.amount=14950", {"amount": {"amount": 14950}}),
    ("a.b.c=x", {"a": {"b": {"c": "x"}}}),
    ("note=THANKS", {"note": "THANKS"}),  # ends in three capitals, not a currency
    ("note=HELLOSEK", {"note": "HELLOSEK"}),  # a currency, but no amount before it
])
def test_single_assignment(pair, expected):
    assert parse_assignments([pair]) == expected


def test_dotted_keys_merge():
    params = parse_assignments(["amount.amount=14950", "amount.currency=SEK", "kind=other",
                                "payment_type=card"])
    assert params == {"amount": {"amount": 14950, "currency": "SEK"}, "kind": "other",
                      "payment_type": "card"}


def test_later_assignment_wins():
    assert parse_assignments(["n=1", "n=2"]) == {"n": 2}


def test_no_assignments():
    assert parse_assignments([]) == {}


@pytest.mark.parametrize("pair", ["x", "=5", ""])
def test_not_an_assignment(pair):
    with pytest.raises(ValueError, match="key=value"):
        parse_assignments([pair])


@pytest.mark.parametrize("pair", ["t=1.005SEK", "t=-5.00SEK", "t=1.5JPY", "t=1.00XYZ"])
def test_money_that_does_not_parse_is_refused_locally(pair):
    """Looks like money but is not (finer than the minor unit, negative, unknown currency):
    ``kassad send`` says so at once instead of sending a string the register would refuse."""
    with pytest.raises(ValueError, match="not an amount of money"):
        parse_assignments([pair])


@pytest.mark.parametrize("pairs", [["a=1", "a.b=2"], ["a=x", "a.b.c=2"]])
def test_key_that_is_both_a_value_and_a_parent(pairs):
    """``a=1 a.b=2`` cannot be both; it must be a ValueError (which ``kassad send`` reports
    with exit 2), not a TypeError escaping as a traceback."""
    with pytest.raises(ValueError):
        parse_assignments(pairs)


@pytest.mark.parametrize("pair", ["a.=1", ".a=1", "a..b=1"])
def test_empty_key_segment(pair):
    with pytest.raises(ValueError):
        parse_assignments([pair])


def test_cli_send_with_conflicting_params_exits_2_without_traceback(tmp_path):
    # parse_assignments runs before any connection is attempted.
    result = _run_cli("send", "state.get", "a=1", "a.b=2", "--store", "S1", "--register", "R1",
                      "--port", "1", cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr


def test_cli_send_without_equals_exits_2(tmp_path):
    result = _run_cli("send", "state.get", "oops", "--store", "S1", "--register", "R1",
                      "--port", "1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "key=value" in result.stderr
    assert "Traceback" not in result.stderr


# -- kassad schema ----------------------------------------------------------------------------


def test_cli_schema_prints_every_schema(tmp_path):
    result = _run_cli("schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schemas = json.loads(result.stdout)
    for key in ("command", "reply", "event", "params.payment.record", "params.session.open",
                "params.drawer.open", "ack"):
        assert key in schemas, sorted(schemas)
    for name, schema in schemas.items():
        assert isinstance(schema, dict), name
        assert "properties" in schema, name
        assert schema.get("type") == "object", name
    assert {"cmd_id", "v", "params", "requester"} <= set(schemas["command"]["properties"])
    assert {"seq", "epoch", "hash", "prev_hash"} <= set(schemas["event"]["properties"])
    assert {"kind", "tendered", "change", "amount"} <= set(
        schemas["params.payment.record"]["properties"])


def test_cli_schema_out_writes_files(tmp_path):
    out = tmp_path / "schemas"
    result = _run_cli("schema", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert "command.schema.json" in files
    assert "params.payment.record.schema.json" in files
    schema = json.loads((out / "event.schema.json").read_text())
    assert "properties" in schema


@pytest.mark.parametrize("argv", [["install", "--help"], ["demo", "--help"],
                                  ["--log-level", "INFO", "doctor", "--help"]])
def test_commands_with_their_own_options_get_the_whole_rest_of_the_line(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from kassad.daemon.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: kassad {argv[-2]}")
