"""From a ``cmd/{name}`` message to a Command, or to the error code its sender gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kassad.daemon.contract.commands import (
    CommandEnvelope,
    PaymentRecordParams,
    SessionOpenParams,
)
from kassad.daemon.contract.errors import ErrorCode
from kassad.daemon.contract.topics import RegisterTopics
from kassad.daemon.register.intake import Command, Rejected, parse_command

TOPICS = RegisterTopics("S1", "R1")
RES = "kassad/v1/S1/R1/res/"
MAX = 64 * 1024
CORR = b"corr-1"


def envelope(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1, "cmd_id": "01JD3W7Q8ABC", "issued_at": "2026-11-25T17:02:11.204Z",
        "expires_at": "2026-11-25T17:03:11.204Z", "requester": "pos-1", "employee": "e17",
        "params": {},
    }
    body.update(overrides)
    return body


def parse(name: str, payload: bytes | str | dict[str, Any], *,
          response_topic: str | None = None, max_bytes: int = MAX) -> Command | Rejected:
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return parse_command(TOPICS, name, payload, response_topic, CORR, max_bytes)


def rejected(result: Command | Rejected, code: ErrorCode) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.refusal.code is code, (result.refusal.code, result.refusal.message)
    assert result.correlation == CORR
    return result


def payment(**params: Any) -> dict[str, Any]:
    return envelope(params={"kind": "cash_sale", **params})


# -- size, encoding, JSON ---------------------------------------------------------------------


def test_payload_too_large():
    body = envelope(params={"note": "x" * 2000})
    payload = json.dumps(body)
    r = rejected(parse("drawer.open", payload, max_bytes=1024), ErrorCode.PAYLOAD_TOO_LARGE)
    assert r.refusal.details == {"size": len(payload), "max": 1024}


def test_size_is_checked_before_parsing():
    payload = b"\xff not json at all " * (2 * 1024 * 1024 // 18 + 1)
    assert len(payload) > 2 * 1024 * 1024
    r = rejected(parse("drawer.open", payload), ErrorCode.PAYLOAD_TOO_LARGE)
    assert r.cmd_id is None
    assert r.reply_to == RES + "_invalid"


def test_payload_at_the_limit_is_parsed():
    payload = json.dumps(envelope(params={"reason": "no_sale"})).encode()
    assert isinstance(parse("drawer.open", payload, max_bytes=len(payload)), Command)
    rejected(parse("drawer.open", payload, max_bytes=len(payload) - 1),
             ErrorCode.PAYLOAD_TOO_LARGE)


def test_invalid_utf8():
    payload = b'{"v":1,"cmd_id":"c1","requester":"pos-1","params":{"note":"f\xf6r"}}'
    r = rejected(parse("drawer.open", payload), ErrorCode.INVALID_JSON)
    assert "UTF-8" in r.refusal.message
    assert r.cmd_id is None
    assert r.reply_to == RES + "_invalid"


@pytest.mark.parametrize("payload", ["[1,2]", "42", '"a string"', "null", "true"])
def test_json_that_is_not_an_object(payload):
    r = rejected(parse("drawer.open", payload), ErrorCode.INVALID_JSON)
    assert "object" in r.refusal.message


@pytest.mark.parametrize("payload", ["", "{", "{'v': 1}", '{"v":1} trailing', "not json"])
def test_not_json(payload):
    rejected(parse("drawer.open", payload), ErrorCode.INVALID_JSON)


def test_duplicate_keys():
    payload = '{"v":1,"v":1,"cmd_id":"c1","requester":"pos-1","params":{"reason":"sale"}}'
    r = rejected(parse("drawer.open", payload), ErrorCode.INVALID_JSON)
    assert "duplicate" in r.refusal.message


def test_duplicate_keys_nested():
    payload = ('{"v":1,"cmd_id":"c1","requester":"pos-1",'
               '"params":{"reason":"sale","reason":"no_sale"}}')
    rejected(parse("drawer.open", payload), ErrorCode.INVALID_JSON)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_literals_are_invalid_json(literal):
    """The contract speaks JSON (RFC 8259): ``NaN`` and ``Infinity`` are not JSON. Accepted,
    they would reach the journal as non-JSON text that other consumers cannot parse."""
    payload = ('{"v":1,"cmd_id":"c1","requester":"pos-1",'
               '"params":{"document":{"x":' + literal + "}}}")
    rejected(parse("print.receipt", payload), ErrorCode.INVALID_JSON)


@pytest.mark.parametrize("depth", [900, 10_000, 100_000])
def test_deeply_nested_payload_never_escapes(depth):
    nested = "[" * depth + "]" * depth
    for payload in (
        nested,
        '{"v":1,"cmd_id":"c1","requester":"pos-1","params":{"reason":' + nested + "}}",
    ):
        result = parse("drawer.open", payload, max_bytes=10 * 1024 * 1024)
        assert isinstance(result, Rejected)
        assert result.refusal.code in {ErrorCode.INVALID_JSON, ErrorCode.INVALID_PAYLOAD}


# -- cmd_id, version, command name ------------------------------------------------------------


def test_missing_cmd_id_without_requester_answers_on_res_invalid():
    body = envelope()
    del body["cmd_id"], body["requester"]
    r = rejected(parse("drawer.open", body), ErrorCode.INVALID_PAYLOAD)
    assert r.cmd_id is None
    assert r.reply_to == RES + "_invalid"
    assert "cmd_id" in r.refusal.message


@pytest.mark.parametrize("cmd_id", [5, None, "", "has space", "x" * 129, "a/b", "a+b"])
def test_unreadable_cmd_id(cmd_id):
    body = envelope(cmd_id=cmd_id)
    del body["requester"]
    r = rejected(parse("drawer.open", body), ErrorCode.INVALID_PAYLOAD)
    assert r.cmd_id is None
    assert r.reply_to == RES + "_invalid"


def test_unsupported_version_keeps_cmd_id():
    r = rejected(parse("drawer.open", envelope(v=2, params={"reason": "sale"})),
                 ErrorCode.UNSUPPORTED_VERSION)
    assert r.cmd_id == "01JD3W7Q8ABC"
    assert r.requester == "pos-1"
    assert r.employee == "e17"
    assert r.name == "drawer.open"
    assert r.reply_to == RES + "pos-1"


def test_missing_version():
    body = envelope(params={"reason": "sale"})
    del body["v"]
    rejected(parse("drawer.open", body), ErrorCode.UNSUPPORTED_VERSION)


@pytest.mark.parametrize("v", [True, 1.0, "1"])
def test_version_must_be_the_integer_1(v):
    """``v`` is the integer 1. ``true`` and ``1.0`` are refused like the string ``"1"`` (the
    way ``amount: true`` and ``amount: 1.5`` are refused)."""
    result = parse("drawer.open", envelope(v=v, params={"reason": "sale"}))
    assert isinstance(result, Rejected), f"v={v!r} was accepted as version 1"
    assert result.refusal.code in {ErrorCode.UNSUPPORTED_VERSION, ErrorCode.INVALID_PAYLOAD}


def test_unknown_command():
    r = rejected(parse("drawer.explode", envelope()), ErrorCode.UNKNOWN_COMMAND)
    assert r.cmd_id == "01JD3W7Q8ABC"
    assert r.name is None
    assert "drawer.explode" in r.refusal.message
    assert r.reply_to == RES + "pos-1"


# -- params -----------------------------------------------------------------------------------


def test_negative_amount_is_out_of_range():
    r = rejected(parse("payment.record", payment(amount={"amount": -5, "currency": "SEK"})),
                 ErrorCode.AMOUNT_OUT_OF_RANGE)
    assert r.cmd_id == "01JD3W7Q8ABC"
    assert "params.amount.amount" in r.refusal.message


def test_absurd_amount_is_out_of_range():
    rejected(parse("payment.record", payment(amount={"amount": 10**14, "currency": "SEK"})),
             ErrorCode.AMOUNT_OUT_OF_RANGE)


@pytest.mark.parametrize("amount", [1.5, 100.0, "100", True, None, [100], {"amount": 1}])
def test_amount_must_be_an_integer(amount):
    r = rejected(parse("payment.record", payment(amount={"amount": amount, "currency": "SEK"})),
                 ErrorCode.INVALID_PAYLOAD)
    assert "params.amount.amount" in r.refusal.message
    assert r.refusal.details["errors"][0]["field"] == "params.amount.amount"


def test_unknown_param_key_names_the_field():
    r = rejected(parse("payment.record", payment(tip={"amount": 5, "currency": "SEK"})),
                 ErrorCode.INVALID_PAYLOAD)
    assert "params.tip" in r.refusal.message
    assert r.refusal.details["errors"][0]["field"] == "params.tip"


def test_unknown_envelope_key():
    r = rejected(parse("drawer.open", envelope(colour="red", params={"reason": "sale"})),
                 ErrorCode.INVALID_PAYLOAD)
    assert "colour" in r.refusal.message


def test_missing_requester_with_cmd_id_is_invalid_payload():
    body = envelope(params={"reason": "sale"})
    del body["requester"]
    r = rejected(parse("drawer.open", body), ErrorCode.INVALID_PAYLOAD)
    assert r.cmd_id == "01JD3W7Q8ABC"
    assert r.reply_to == RES + "_invalid"


def test_naive_expires_at_is_invalid_payload():
    rejected(parse("drawer.open", envelope(expires_at="2026-11-25T17:03:11",
                                           params={"reason": "sale"})),
             ErrorCode.INVALID_PAYLOAD)


# -- where the reply goes ---------------------------------------------------------------------


def _open_session() -> dict[str, Any]:
    return envelope(params={"starting_float": {"amount": 50000, "currency": "SEK"}})


def test_own_response_topic_is_used():
    topic = RES + "pos-1-replies"
    result = parse("session.open", _open_session(), response_topic=topic)
    assert isinstance(result, Command)
    assert result.reply_to == topic
    assert result.correlation == CORR


def test_own_response_topic_is_used_for_rejections_too():
    topic = RES + "pos-1-replies"
    r = rejected(parse("drawer.explode", envelope(), response_topic=topic),
                 ErrorCode.UNKNOWN_COMMAND)
    assert r.reply_to == topic


@pytest.mark.parametrize("payload", [
    "[]",
    json.dumps({"v": 1, "requester": "pos-1", "params": {"reason": "sale"}}),
])
def test_no_readable_cmd_id_answers_on_res_invalid_whoever_asked(payload):
    """Contract: a payload with no readable cmd_id is answered on res/_invalid."""
    r = parse("drawer.open", payload, response_topic=RES + "pos-1-replies")
    assert isinstance(r, Rejected)
    assert r.cmd_id is None
    assert r.reply_to == RES + "_invalid"


@pytest.mark.parametrize("topic", [
    "kassad/v1/S1/R1/evt",
    "kassad/v1/S1/R2/evt",
    "kassad/v1/S1/R2/res/pos-1",
    "kassad/v1/S1/R1/status",
    "kassad/v1/S1/R1/res/",
    "kassad/v1/S1/R1/res/+",
    "kassad/v1/S1/R1/res/#",
    "kassad/v1/S1/R1/res//x",
    "pos/replies",
    "",
])
def test_foreign_response_topic_is_ignored(topic):
    result = parse("session.open", _open_session(), response_topic=topic)
    assert isinstance(result, Command)
    assert result.reply_to == RES + "pos-1"


def test_foreign_response_topic_without_requester_goes_to_res_invalid():
    r = rejected(parse("session.open", "[1,2]", response_topic="pos/replies"),
                 ErrorCode.INVALID_JSON)
    assert r.reply_to == RES + "_invalid"


# -- a valid command --------------------------------------------------------------------------


def test_valid_session_open():
    result = parse("session.open", _open_session())
    assert isinstance(result, Command)
    assert result.name == "session.open"
    assert isinstance(result.envelope, CommandEnvelope)
    assert result.envelope.cmd_id == "01JD3W7Q8ABC"
    assert result.envelope.requester == "pos-1"
    assert result.envelope.employee == "e17"
    assert isinstance(result.params, SessionOpenParams)
    assert [(m.amount, m.currency) for m in result.params.starting_float] == [(50000, "SEK")]
    assert result.reply_to == RES + "pos-1"
    assert result.correlation == CORR


def test_valid_session_open_with_list_of_currencies():
    result = parse("session.open", envelope(params={"starting_float": [
        {"amount": 50000, "currency": "SEK"}, {"amount": 2000, "currency": "EUR"}]}))
    assert isinstance(result, Command)
    assert isinstance(result.params, SessionOpenParams)
    assert len(result.params.starting_float) == 2


def test_valid_payment_record():
    result = parse("payment.record", payment(
        tendered={"amount": 20000, "currency": "SEK"},
        change={"amount": 5050, "currency": "SEK"},
    ))
    assert isinstance(result, Command)
    assert isinstance(result.params, PaymentRecordParams)
    assert result.params.tendered is not None and result.params.tendered.amount == 20000


# -- topics -----------------------------------------------------------------------------------


def test_register_topics():
    assert TOPICS.base == "kassad/v1/S1/R1"
    assert TOPICS.evt == "kassad/v1/S1/R1/evt"
    assert TOPICS.cmd_filter == "kassad/v1/S1/R1/cmd/+"
    assert TOPICS.client_id == "S1-R1"
    assert TOPICS.res("pos-1") == RES + "pos-1"
    assert TOPICS.res("_invalid") == RES + "_invalid"
    assert TOPICS.command_name("kassad/v1/S1/R1/cmd/drawer.open") == "drawer.open"
    assert TOPICS.command_name("kassad/v1/S1/R2/cmd/drawer.open") is None
    assert TOPICS.consumer_of_ack("kassad/v1/S1/R1/ack/agg") == "agg"


@pytest.mark.parametrize("bad", ["S+1", "S#", "S/1", "", "x" * 65, "a b", "ö"])
def test_register_topics_refuse_bad_ids(bad):
    with pytest.raises(ValueError):
        RegisterTopics(bad, "R1")
    with pytest.raises(ValueError):
        RegisterTopics("S1", bad)
    with pytest.raises(ValueError):
        TOPICS.res(bad)
    with pytest.raises(ValueError):
        TOPICS.ack(bad)


@pytest.mark.parametrize("topic", [
    RES + "+", RES + "#", RES + "pos-1/+", RES + "pos-1/#", RES + "+/x", RES, RES + "a//b",
    "kassad/v1/S1/R1/res", "kassad/v1/+/R1/res/pos-1", "kassad/v1/S1/R1/evt",
])
def test_is_own_response_topic_refuses(topic):
    assert TOPICS.is_own_response_topic(topic) is False


@pytest.mark.parametrize("topic", [RES + "pos-1", RES + "pos-1/replies", RES + "_invalid"])
def test_is_own_response_topic_accepts(topic):
    assert TOPICS.is_own_response_topic(topic) is True


# -- what a refusal quotes of the payload -----------------------------------------------------


@pytest.mark.parametrize("build", [
    lambda big: ("session.adjust", envelope(params={big: 1})),
    lambda big: ("session.adjust", envelope(**{big: 1})),
    lambda big: ("session.adjust", envelope(v=big)),
    lambda big: ("session.adjust", envelope(v=[big])),
    lambda big: (big, envelope()),
], ids=["param key", "envelope key", "v", "v in a list", "command name"])
def test_a_refusal_quotes_the_payload_only_briefly(build):
    """A 1 MiB key, version or command name is not sent back (nor journaled) whole."""
    name, body = build("k" * 1024 * 1024)
    result = parse(name, body, max_bytes=4 * 1024 * 1024)
    assert isinstance(result, Rejected)
    assert len(json.dumps(result.refusal.as_error())) < 2000
    assert "kkkkkkkkkk…" in result.refusal.message


# -- JSON the parser reads but a register does not take ---------------------------------------


def _nested(levels: int) -> str:
    """A command whose params hold an unknown field nested to ``levels`` in all."""
    inner = "[" * (levels - 2) + "]" * (levels - 2)
    return '{"v":1,"cmd_id":"c1","requester":"pos-1","params":{"zz":' + inner + "}}"


def _at_stack_depth(frames: int, call):
    return call() if frames == 0 else _at_stack_depth(frames - 1, call)


@pytest.mark.parametrize("frames", [0, 100, 400])
def test_nesting_limit_is_the_same_whatever_the_stack(frames):
    """64 levels are parsed (and refused for the unknown field); 65 are not JSON to us, and
    this does not depend on how deep the parser was called (it did near Python's limit)."""
    assert rejected(_at_stack_depth(frames, lambda: parse("drawer.open", _nested(64))),
                    ErrorCode.INVALID_PAYLOAD).cmd_id == "c1"
    for levels in (65, 900, 990):
        result = _at_stack_depth(frames, lambda n=levels: parse("drawer.open", _nested(n)))
        assert rejected(result, ErrorCode.INVALID_JSON).cmd_id is None


@pytest.mark.parametrize("where", ["employee", "note", "key", "cmd_id", "deep"])
@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ud83d", "\\ude00x"])
def test_a_lone_surrogate_escape_is_invalid_json(where, escape):
    """``"\\ud800"`` parses to a str that is no Unicode: it failed later, when journaled or
    answered as UTF-8 (internal_error, the rejection not journaled)."""
    params = '{"direction":"add","amount":{"amount":1,"currency":"SEK"}}'
    text = {
        "employee": f'{{"v":1,"cmd_id":"c1","requester":"p","employee":"{escape}",'
                    f'"params":{params}}}',
        "note": f'{{"v":1,"cmd_id":"c1","requester":"p","params":{params[:-1]},'
                f'"note":"a{escape}b"}}}}',
        "key": f'{{"v":1,"cmd_id":"c1","requester":"p","params":{{"{escape}":1}}}}',
        "cmd_id": f'{{"v":1,"cmd_id":"c{escape}","requester":"p","params":{params}}}',
        "deep": f'{{"v":1,"cmd_id":"c1","requester":"p","params":{{"a":[[{{"b":'
                f'["{escape}"]}}]]}}}}',
    }[where]
    result = rejected(parse("session.adjust", text), ErrorCode.INVALID_JSON)
    assert result.cmd_id is None
    assert "surrogate" in result.refusal.message


def test_a_surrogate_pair_is_a_character():
    text = ('{"v":1,"cmd_id":"c1","requester":"p","employee":"\\ud83d\\ude00","params":'
            '{"direction":"add","amount":{"amount":1,"currency":"SEK"},"note":"\\\\ud800"}}')
    result = parse("session.adjust", text)
    assert isinstance(result, Command), result
    assert result.envelope.employee == "\U0001f600"
