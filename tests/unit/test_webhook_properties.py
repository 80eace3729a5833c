"""Property-based: whatever body Meta (or anyone) sends, the webhook parser and the normaliser
either convert it or raise their one typed error, and every event they make can be written to
Kafka. One bad item of a webhook costs that item only (issues 18 and 20)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.meta.webhooks import InvalidWebhook, parse_items, parse_webhook
from processors.normalise.convert import Normaliser, Unreadable
from wapipe.avro import AvroSerde
from wapipe.privacy.subjects import subject_id
from wapipe.privacy.wamids import WamidRefs
from wapipe.topics import STATUS_EVENTS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
DOCS = {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))}
SERDE = AvroSerde()
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone.utc)
# (a user_preferences change: its list, or one item of it: processors/normalise/preferences.py)
PATH = re.compile(r"^entry\[\d+\](\.changes\[\d+\](\.value(\.(statuses|messages|errors|contacts)\[\d+\]"
                  r"|\.user_preferences(\[\d+\])?)?)?)?$")
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values that broke the parser or the normaliser on main (issue 18), and their kin.
NASTY = [[], {}, True, None, "x", "", "asdf", "abc", -1, 0, 2**31, -(2**31) - 1, 2**63, 9223372036854775808,
         -62135596801, 1e20, -1e20, 1.5, float("inf"), "1e20", "-62135596801", "9" * 40, "\u0000", "+()-"]
scalars = st.one_of(st.sampled_from(NASTY), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
                    st.booleans(), st.none())
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)


class _NoTenants:
    def tenant_for_number(self, pnid):
        return None

    def tenant_for_waba(self, waba_id):
        return None


def _seal(scope: str, subject: str, data: dict) -> dict:
    return {"key_id": f"{subject}/k1", "nonce": b"\0" * 12, "ciphertext": json.dumps(data, default=str).encode()}


REF = WamidRefs.from_pepper(b"p" * 32)  # records carry wamid refs, never wamids (issue 18)
NORMALISER = Normaliser(_NoTenants(), _seal, lambda scope, wa: subject_id(b"p" * 32, scope, wa), wamid_ref=REF)


def _raw(body: bytes) -> dict:
    return {"ingress_id": "i", "received_at": NOW, "app_id": "a", "signature_verified": True, "headers": {},
            "body": body}


def _paths(doc, prefix=()):
    """Every (path, container) position of a JSON document, to put a bad value at."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


@st.composite
def mutated_webhooks(draw) -> bytes:
    """A real fixture with one to three values replaced by a value of any type or size."""
    doc = copy.deepcopy(DOCS[draw(st.sampled_from(sorted(DOCS)))])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        if not paths:
            break
        _set(doc, draw(st.sampled_from(paths)), draw(json_values))
    return json.dumps(doc).encode()


def _check(body: bytes) -> None:
    for parse in (parse_webhook, parse_items):
        try:
            parse(body)
        except InvalidWebhook as exc:
            assert exc.reason
    try:
        done = NORMALISER.convert_items(_raw(body))
    except Unreadable as exc:
        assert exc.reason and exc.error_type
        return
    for e in done.events:  # every event can be written: nothing that would kill the agent later
        SERDE.encode(e.record_name, e.record.to_avro(), topic=e.topic)
        assert PATH.match(e.path), e.path
    for bad in done.bad:
        assert PATH.match(bad.path), bad.path
        assert bad.reason


@PROPS
@given(mutated_webhooks())
def test_a_mutated_webhook_converts_or_raises_the_typed_error(body):
    _check(body)


@PROPS
@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_any_json_or_bytes_converts_or_raises_the_typed_error(body):
    _check(body)


@PROPS
@given(st.integers(0, 4), st.sampled_from(["from", "timestamp", "id", "type", "text", "context"]), json_values)
def test_one_bad_message_costs_only_itself(bad_at, key, value):
    doc = copy.deepcopy(DOCS["inbound_text"])
    v = doc["entry"][0]["changes"][0]["value"]
    v["messages"] = [{**v["messages"][0], "id": f"wamid.m{i}"} for i in range(5)]
    v["messages"][bad_at][key] = value
    done = NORMALISER.convert_items(_raw(json.dumps(doc).encode()))
    good = {e.record.message_id for e in done.events}
    assert {REF(f"wamid.m{i}") for i in range(5) if i != bad_at} <= good
    assert [b.path for b in done.bad] in ([], [f"entry[0].changes[0].value.messages[{bad_at}]"])
    assert len(good) + len(done.bad) == 5


@PROPS
@given(st.integers(0, 3), st.sampled_from(["recipient_id", "timestamp", "id", "status", "errors", "pricing"]),
       json_values)
def test_one_bad_status_costs_only_itself(bad_at, key, value):
    doc = copy.deepcopy(DOCS["status_failed"])
    v = doc["entry"][0]["changes"][0]["value"]
    v["statuses"] = [{**v["statuses"][0], "id": f"wamid.s{i}"} for i in range(4)]
    v["statuses"][bad_at][key] = value
    done = NORMALISER.convert_items(_raw(json.dumps(doc).encode()))
    good = {e.record.wamid for e in done.events if e.topic == STATUS_EVENTS}
    assert {REF(f"wamid.s{i}") for i in range(4) if i != bad_at} <= good
    assert [b.path for b in done.bad] in ([], [f"entry[0].changes[0].value.statuses[{bad_at}]"])


M = ("entry", 0, "changes", 0, "value")


@pytest.mark.parametrize("fixture,where,value,envelope_ok", [
    ("status_failed", ("entry", 0, "changes", 0, "field"), [], False),
    ("inbound_text", (*M, "messages", 0, "type"), [], False),
    ("status_failed", ("entry", 0, "changes"), True, False),
    ("status_failed", (*M, "metadata"), "x", False),
    ("inbound_text", (*M, "messages", 0, "from"), "abc", True),
    ("status_failed", (*M, "statuses", 0, "recipient_id"), "+()-", True),
    ("status_failed", (*M, "statuses", 0, "timestamp"), -62135596801, False),
    ("status_failed", (*M, "statuses", 0, "timestamp"), 1e20, False),
    ("status_failed", (*M, "statuses", 0, "timestamp"), "asdf", False),
    ("status_failed", (*M, "statuses", 0, "errors", 0, "code"), 9223372036854775808, False),
    ("status_failed", (*M, "statuses", 0, "errors", 0, "code"), 2**31, False),
])
def test_the_fuzzer_findings_are_dead_letter_reasons(fixture, where, value, envelope_ok):
    """The inputs of issue 18: each raised TypeError, AttributeError, ValueError or OverflowError
    (or made an event Avro cannot write); now each is a bad item with a reason."""
    doc = copy.deepcopy(DOCS[fixture])
    _set(doc, where, value)
    body = json.dumps(doc).encode()
    if envelope_ok:
        parse_webhook(body)
    else:
        with pytest.raises(InvalidWebhook):
            parse_webhook(body)
    done = NORMALISER.convert_items(_raw(body))
    assert done.events == [] and len(done.bad) == 1 and done.bad[0].reason
    with pytest.raises(Unreadable, match=re.escape(done.bad[0].path)):
        NORMALISER.convert(_raw(body))


def test_a_group_status_is_a_group_event_not_a_person():
    doc = copy.deepcopy(DOCS["status_delivered"])
    st_ = doc["entry"][0]["changes"][0]["value"]["statuses"][0]
    st_.update(recipient_type="group", recipient_id="grp-AbCdEf")
    done = NORMALISER.convert_items(_raw(json.dumps(doc).encode()))
    assert not done.bad
    [ev] = done.events
    r = ev.record.to_avro()
    assert r["recipient_type"] == "group" and r["subject_id"] is None and r["pii"] is None
    assert json.loads(r["extra"]) == {"group_id": "grp-AbCdEf", "recipient_type": "group"}  # what ClickHouse keeps
    back = SERDE.decode(SERDE.encode("StatusEvent", r), "StatusEvent")
    assert back["recipient_type"] == "group"
    # the same id on a person's status is a bad item, never a made-up subject
    st_.update(recipient_type="individual")
    done = NORMALISER.convert_items(_raw(json.dumps(doc).encode()))
    assert not done.events and "no digits" in done.bad[0].reason
