"""Sending to a username user by BSUID (issue 20 item 2): the message model, the ERP SDK's
command (SendCommand v3), the worker's validation and Graph body, and the sandbox's answer."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.meta.bsuid import is_bsuid
from connectors.meta.messages import TemplateMessage, TextMessage, addressed
from connectors.meta.sandbox.graph_errors import GraphError
from connectors.meta.sandbox.validate import parse_send
from processors.send.records import Outcome, graph_body
from tests.unit.commands import command
from producers.erp import Routing
from producers.erp.commands import build_command, template, text
from tests.unit.test_send_validate import REG, NOW
from processors.send.validate import validate
from wapipe.avro import AvroSerde
from wapipe.privacy.subjects import subject_id

PEPPER = b"p" * 32
USER = "US.13491208655302741918"
PARENT = "US.ENT.11815799212886844830"
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Clear:
    """A sealer that keeps the JSON readable (the KeyRing's sealing is tested on its own)."""

    def seal(self, tenant_id, subject, data):
        return {"key_id": f"{subject}/k", "nonce": b"\0" * 12, "ciphertext": json.dumps(data).encode()}


def opened(cmd) -> dict:
    return json.loads(cmd["pii"]["ciphertext"])


ROUTE = Routing(tenant_id="acme", phone_number_id="111", idempotency_key="k1")


# --- the message ------------------------------------------------------------------------------------
def test_a_message_to_a_bsuid_has_recipient_and_no_to():
    body = TextMessage(recipient=USER, body="hi").to_request()
    assert body["recipient"] == USER and "to" not in body and body["recipient_type"] == "individual"


def test_a_message_to_number_and_bsuid_has_both_and_meta_uses_the_number():
    body = TemplateMessage(to="+46 70 123 4567", recipient=PARENT, name="hello", language="en_US").to_request()
    assert (body["to"], body["recipient"]) == ("46701234567", PARENT)


def test_a_message_needs_a_recipient():
    with pytest.raises(ValidationError, match="needs its recipient"):
        TextMessage(body="hi")


@PROPS
@given(st.one_of(st.text(max_size=40), st.integers()))
def test_a_malformed_bsuid_is_refused_when_the_message_is_built(value):
    if isinstance(value, str) and is_bsuid(value):
        assert TextMessage(recipient=value, body="x").recipient == value
        return
    with pytest.raises(ValidationError):
        TextMessage(recipient=value, body="x")


def test_addressed_refuses_a_body_without_recipient():
    with pytest.raises(ValueError, match="no recipient"):
        addressed({"type": "text"}, to=None, recipient=None)


# --- the ERP's command --------------------------------------------------------------------------------
def test_a_command_by_bsuid_is_the_bsuid_s_subject_and_seals_the_recipient():
    cmd = build_command(text(None, "hi", recipient=USER), ROUTE, sealer=Clear(), pepper=PEPPER)
    sid = subject_id(PEPPER, "acme", USER)
    assert cmd["subject_id"] == cmd["user_subject_id"] == sid
    assert opened(cmd) == {"recipient": USER, "message": {"type": "text", "text": {"body": "hi", "preview_url": False}}}
    outside = cmd | {"pii": {"key_id": "", "nonce": b"", "ciphertext": b""}}  # everything but the sealed part
    assert USER.encode() not in AvroSerde().encode("SendCommand", outside)


def test_a_command_by_number_and_bsuid_keeps_the_number_s_subject_and_names_both():
    cmd = build_command(template("+15550100001", "hello", recipient=USER), ROUTE, sealer=Clear(), pepper=PEPPER)
    assert cmd["subject_id"] == subject_id(PEPPER, "acme", "15550100001")
    assert cmd["user_subject_id"] == subject_id(PEPPER, "acme", USER)
    assert {k: v for k, v in opened(cmd).items() if k != "message"} == {"to": "15550100001", "recipient": USER}


def test_a_command_by_number_only_is_as_before():
    cmd = build_command(template("15550100001", "hello"), ROUTE, sealer=Clear(), pepper=PEPPER)
    assert cmd["user_subject_id"] is None and set(opened(cmd)) == {"to", "message"}


def test_a_v2_command_is_read_as_v3_without_a_bsuid():
    serde = AvroSerde()
    cmd = build_command(template("15550100001", "hello"), ROUTE, sealer=Clear(), pepper=PEPPER,
                        requested_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    v2 = {k: v for k, v in cmd.items() if k != "user_subject_id"}
    back = serde.decode(serde.encode("SendCommand", v2, version=2), "SendCommand")
    assert back["user_subject_id"] is None and back["subject_id"] == cmd["subject_id"]


# --- the worker: validation and the Graph body ------------------------------------------------------------
def _cmd(**kw):
    base = {"command_id": "c1", "tenant_id": "acme", "idempotency_key": "k", "phone_number_id": "111",
            "subject_id": "a" * 32, "kind": "TEXT", "template": None, "valid_until": None}
    return command(**(base | kw))


def test_the_window_is_open_when_the_person_wrote_under_either_subject():
    phone_s, user_s = "a" * 32, "b" * 32
    wrote_as_user = {("111", user_s): NOW - 1000}
    look = lambda n, s: wrote_as_user.get((n, s))  # noqa: E731
    assert validate(_cmd(user_subject_id=user_s), REG, now_ms=NOW, last_inbound=look) is None
    refused = validate(_cmd(), REG, now_ms=NOW, last_inbound=look)  # a v2 command: the number's subject only
    assert refused is not None and "window" in refused.reason


def test_a_restriction_under_either_subject_holds():
    phone_s, user_s = "a" * 32, "b" * 32
    r = validate(_cmd(kind="TEMPLATE", template={"name": "hello", "language": "en_US", "parameter_count": 0},
                      user_subject_id=user_s), REG, now_ms=NOW, last_inbound=lambda n, s: None,
                 is_restricted=lambda s: s == user_s)
    assert r is not None and r.outcome == Outcome.REJECTED and "restricted" in r.reason


@pytest.mark.parametrize("bad", ["", "US.1349", "x" * 32, "A" * 32, "a" * 31])
def test_a_user_subject_id_that_is_not_a_subject_is_rejected(bad):
    r = validate(_cmd(user_subject_id=bad), REG, now_ms=NOW, last_inbound=lambda n, s: NOW)
    assert r is not None and r.outcome == Outcome.REJECTED and "user_subject_id" in r.reason


def test_the_graph_body_carries_the_recipient_fields_the_command_has():
    msg = {"type": "text", "text": {"body": "hi"}}
    assert graph_body({"recipient": USER, "message": msg}, "t/k")["recipient"] == USER
    assert "to" not in graph_body({"recipient": USER, "message": msg}, "t/k")
    both = graph_body({"to": "15550100001", "recipient": USER, "message": msg}, "t/k")
    assert (both["to"], both["recipient"], both["biz_opaque_callback_data"]) == ("15550100001", USER, "t/k")
    with pytest.raises(ValueError):  # the worker's "cannot prepare the message": FAILED, nothing sent
        graph_body({"message": msg}, "t/k")


# --- the sandbox, as Meta answers ----------------------------------------------------------------------
def test_the_sandbox_sends_by_bsuid_and_the_number_wins_when_both():
    by_user = parse_send({"messaging_product": "whatsapp", "recipient": USER, "type": "text", "text": {"body": "x"}})
    assert (by_user.wa_id, by_user.user_id, by_user.input) == (None, USER, USER)
    both = parse_send({"messaging_product": "whatsapp", "to": "15550100001", "recipient": USER, "type": "text",
                       "text": {"body": "x"}})
    assert (both.wa_id, both.user_id) == ("15550100001", None)


@PROPS
@given(st.one_of(st.text(max_size=40), st.integers(), st.lists(st.integers(), max_size=2), st.none()))
def test_the_sandbox_answers_100_for_a_malformed_recipient(value):
    body = {"messaging_product": "whatsapp", "recipient": value, "type": "text", "text": {"body": "x"}}
    if isinstance(value, str) and is_bsuid(value):
        assert parse_send(body).user_id == value
        return
    with pytest.raises(GraphError) as err:
        parse_send(body)
    assert err.value.code in (100, 131008)
