"""What the ERP receives, per webhook shape: the real normaliser turns Meta's fixtures into events,
``processors.erp_inbound`` turns those into ErpInbound records (kind, link to the command, errors),
and any malformed record becomes a dead letter with a reason or is skipped, never another error.
Kafka-backed parts (key ring, links index, the loop) are covered in tests/integration/test_erp_inbound.py."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.erp_inbound.app import ErpInbound
from processors.erp_inbound.convert import Dead, Skip, from_inbound, from_status, typed
from wapipe.messages.events import InboundMessage, StatusEvent
from wapipe.messages.erp import CommandLink
from processors.normalise.convert import Normaliser
from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.privacy.errors import SubjectErased, UnsealError
from wapipe.privacy.wamids import WamidRefs
from wapipe.topics import ERP_INBOUND, INBOUND_MESSAGES, STATUS_EVENTS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
REF = WamidRefs.from_pepper(b"q" * 32)
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone.utc)
SERDE = AvroSerde()
OUR_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"  # the message our command sent


class _Tenant:
    tenant_id = "acme"


class _Directory:
    def tenant_for_number(self, pnid):
        return _Tenant()

    def tenant_for_waba(self, waba_id):
        return None


class _Keys:
    """AES-256-GCM, one key per subject (the Kafka-backed KeyRing is tested in integration)."""

    def __init__(self):
        self.keys: dict[str, bytes] = {}

    def seal(self, tenant, subject, data):
        key = self.keys.setdefault(subject, os.urandom(32))
        nonce = os.urandom(12)
        kid = f"{subject}/k"
        return {"key_id": kid, "nonce": nonce,
                "ciphertext": AESGCM(key).encrypt(nonce, json.dumps(data).encode(), kid.encode())}

    def open(self, key_id, nonce, ciphertext):
        return self.unseal({"key_id": key_id, "nonce": nonce, "ciphertext": ciphertext})

    def unseal(self, sealed):
        subject = sealed["key_id"].split("/")[0]
        if subject not in self.keys:
            raise SubjectErased(sealed["key_id"])
        try:
            return json.loads(AESGCM(self.keys[subject]).decrypt(bytes(sealed["nonce"]), bytes(sealed["ciphertext"]),
                                                                sealed["key_id"].encode()))
        except Exception as exc:
            raise UnsealError(str(exc)) from None


KEYS = _Keys()
NORMALISER = Normaliser(_Directory(), KEYS.seal, lambda scope, wa: f"s{scope}{''.join(c for c in wa if c.isdigit())}",
                        wamid_ref=REF)
COMMAND = CommandLink(idempotency_key="invoice-17", command_id="cmd-1", message_ref=REF(OUR_WAMID))


def link_of(tenant, ref, *, wait=True):
    return COMMAND if (tenant, ref) == ("acme", COMMAND.message_ref) else None


def events(doc: dict) -> list:
    raw = {"signature_verified": True, "received_at": NOW, "body": json.dumps(doc).encode()}
    done = NORMALISER.convert_items(raw)
    assert not done.bad, done.bad
    return [SERDE.decode(SERDE.encode(e.record_name, e.record.to_avro()), e.record_name) | {"_topic": e.topic}
            for e in done.events]


def fixture(name: str, **message) -> dict:
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    value = doc["entry"][0]["changes"][0]["value"]
    if message:
        value["messages"][0].update(message)
    return doc


def erp(rec: dict) -> dict:
    topic = rec.pop("_topic")
    out = (from_inbound(InboundMessage.from_avro(rec), link_of=link_of, open_=PROC._open, ref=REF)
           if topic == INBOUND_MESSAGES else from_status(StatusEvent.from_avro(rec), link_of=link_of)).to_avro()
    SERDE.encode("ErpInbound", out, topic=ERP_INBOUND)  # always a valid record
    return out


REPLY = {"context": {"from": "15550783881", "id": OUR_WAMID}}


@pytest.mark.parametrize("name,kind,mtype", [
    ("inbound_text_reply", "MESSAGE", "text"),
    ("inbound_interactive_button_reply", "BUTTON_REPLY", "interactive"),
    ("inbound_interactive_list_reply", "LIST_REPLY", "interactive"),
    ("inbound_button", "BUTTON_REPLY", "button"),
    ("inbound_location", "MESSAGE", "location"),
    ("inbound_contacts", "MESSAGE", "contacts"),
    ("inbound_image", "MESSAGE", "image"),
])
def test_a_reply_is_linked_to_the_command_it_answers(name, kind, mtype):
    [rec] = events(fixture(name, **REPLY))
    out = erp(rec)
    assert (out["kind"], out["message_type"], out["tenant_id"]) == (kind, mtype, "acme")
    assert out["command"] == COMMAND.to_avro()
    assert out["message_ref"].startswith("wref.") and out["pii"] == rec["pii"]  # content stays sealed
    assert OUR_WAMID not in json.dumps(out, default=str)


def test_without_context_a_message_is_not_linked():
    [rec] = events(fixture("inbound_text"))
    out = erp(rec)
    assert out["kind"] == "MESSAGE" and out["command"] is None


def test_a_reply_to_another_tenants_message_is_not_linked():
    [rec] = events(fixture("inbound_text_reply", **REPLY))
    rec["tenant_id"] = "other"
    assert erp(rec)["command"] is None


def test_a_reaction_is_linked_to_the_message_reacted_to():
    doc = fixture("inbound_reaction")
    doc["entry"][0]["changes"][0]["value"]["messages"][0]["reaction"]["message_id"] = OUR_WAMID
    [rec] = events(doc)
    out = erp(rec)
    assert out["kind"] == "REACTION" and out["command"] == COMMAND.to_avro()


def test_failed_inbound_keeps_metas_error_code():
    doc = fixture("inbound_text")
    msg = doc["entry"][0]["changes"][0]["value"]["messages"][0]
    del msg["text"]
    msg.update(type="interactive", errors=[{"code": 131051, "title": "Message type unknown",
                                            "message": "Message type unknown",
                                            "error_data": {"details": "Message type is currently not supported."}}])
    [rec] = events(doc)  # before: "interactive.interactive: Field required", a dead letter
    out = erp(rec)
    assert out["kind"] == "FAILED" and out["message_type"] == "interactive"
    assert out["errors"] == [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown",
                              "details": "Message type is currently not supported."}]


def _status(name: str, wamid: str, cb: str | None = None) -> dict:
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    st_ = doc["entry"][0]["changes"][0]["value"]["statuses"][0]
    st_["id"] = wamid
    if cb is None:
        st_.pop("biz_opaque_callback_data", None)
    else:
        st_["biz_opaque_callback_data"] = cb
    [rec] = events(doc)
    return rec


@pytest.mark.parametrize("name", ["status_sent", "status_delivered", "status_read", "status_failed"])
def test_a_status_of_a_command_is_linked(name):
    out = erp(_status(name, OUR_WAMID))
    assert out["kind"] == "STATUS" and out["status"] == name.split("_")[1] and out["command"] == COMMAND.to_avro()
    if name == "status_failed":
        assert out["errors"] and out["errors"][0]["code"]


def test_a_status_of_no_command_is_skipped_and_an_echo_links_only_within_the_tenant():
    with pytest.raises(Skip):
        erp(_status("status_read", "wamid.someoneelse"))
    with pytest.raises(Skip):  # Meta's echo names another tenant's key
        erp(_status("status_read", "wamid.someoneelse", cb="other/invoice-17"))
    out = erp(_status("status_read", "wamid.sentbeforeitsresult", cb="acme/invoice-18"))
    assert out["command"]["idempotency_key"] == "invoice-18" and out["command"]["command_id"] is None


def test_no_tenant_and_erased_are_skipped():
    [rec] = events(fixture("inbound_text"))
    with pytest.raises(Skip) as e:
        erp({**rec, "tenant_id": None})
    assert e.value.outcome == "no_tenant"
    with pytest.raises(Skip) as e:
        erp({**rec, "pii": {**rec["pii"], "key_id": "erased-subject/k"}})
    assert e.value.outcome == "erased"


def test_tampered_content_is_a_dead_letter():
    [rec] = events(fixture("inbound_text"))
    sealed = bytes(rec["pii"]["ciphertext"])
    bad = {**rec, "pii": {**rec["pii"], "ciphertext": sealed[:-1] + bytes([sealed[-1] ^ 1])}}  # (was 1/256 a no-op)
    with pytest.raises(Dead) as e:
        erp(bad)
    assert e.value.error_type == "UnsealError"


# --- the processor's one-record step on anything ---------------------------------------------
class _Links:
    get = staticmethod(link_of)


PROC = ErpInbound(Settings(), links=_Links(), ring=KEYS, tenants=None, kek=None, graph=None, refs=REF, serde=SERDE)
BASE = {t: events(fixture(n, **REPLY))[0] for t, n in ((INBOUND_MESSAGES, "inbound_text_reply"),)}
BASE[STATUS_EVENTS] = _status("status_read", OUR_WAMID)
JUNK = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=20) | st.binary(max_size=20) \
    | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2) \
    | st.recursive(st.none() | st.integers() | st.text(max_size=5), lambda i: st.lists(i, max_size=3)
                   | st.dictionaries(st.sampled_from(["errors", "code", "title", "forwarded"]), i, max_size=3),
                   max_leaves=8).map(json.dumps) \
    | st.sampled_from(["wref.x", "", "interactive", "reaction", "button", '{"errors": [{"code": 1}]}'])


def _run(topic: str, value: bytes):
    try:
        done = asyncio.run(PROC.handle(topic, value))
    except (Dead, Skip) as exc:
        return exc
    return done


@settings(max_examples=300, deadline=None)
@given(data=st.data(), topic=st.sampled_from([INBOUND_MESSAGES, STATUS_EVENTS]), drop=st.booleans())
def test_a_malformed_event_is_a_dead_letter_or_skipped_never_an_error(data, topic, drop):
    rec = copy.deepcopy({k: v for k, v in BASE[topic].items() if k != "_topic"})
    for name in data.draw(st.lists(st.sampled_from(sorted(rec)), min_size=1, max_size=3, unique=True)):
        if drop:
            rec.pop(name, None)
        else:
            rec[name] = data.draw(JUNK)
    try:
        value = SERDE.encode("InboundMessage" if topic == INBOUND_MESSAGES else "StatusEvent", rec)
    except Exception:
        value = json.dumps(rec, default=str).encode()  # not even Avro: the decoder's dead letter
    got = _run(topic, value)
    if isinstance(got, Dead):
        assert got.reason and got.error_type
    elif not isinstance(got, Skip):
        out, encoded = got
        assert SERDE.decode(encoded, "ErpInbound")["event_id"] == out.event_id


@settings(max_examples=200, deadline=None)
@given(value=st.binary(max_size=200))
def test_any_bytes_are_a_dead_letter_with_a_reason(value):
    for topic in (INBOUND_MESSAGES, STATUS_EVENTS):
        got = _run(topic, value)
        assert isinstance(got, Dead) and "undecodable" in got.reason


def test_a_status_waits_for_the_results_topic_only_when_metas_echo_names_the_tenant():
    waits = []

    def recording(tenant, ref, *, wait=True):
        waits.append(wait)
        return None

    with pytest.raises(Skip):
        from_status(StatusEvent.from_avro(_status("status_read", "wamid.x")), link_of=recording)
    out = from_status(StatusEvent.from_avro(_status("status_read", "wamid.y", cb="acme/k9")), link_of=recording)
    assert waits == [False, True] and out.command.idempotency_key == "k9"


# --- the loop's one-record step: an infrastructure failure waits, it is no dead letter -------------
class _Msg:
    def __init__(self, topic, value):
        self._t, self._v = topic, value

    def topic(self):
        return self._t

    def value(self):
        return self._v

    def offset(self):
        return 7

    def partition(self):
        return 0

    def key(self):
        return b"k"


class _Producer:
    def __init__(self):
        self.produced = []

    def produce(self, topic, key, value, on_delivery):
        self.produced.append((topic, key, value))

    def poll(self, _t):
        return 0


class _Letters:
    def __init__(self):
        self.written = []

    def write(self, letter, key=None):
        self.written.append(letter)


def test_a_broker_timeout_is_retried_in_place_and_a_bad_record_is_a_dead_letter():
    calls = []

    class Flaky:
        def get(self, tenant, ref, *, wait=True):
            calls.append(ref)
            if len(calls) == 1:
                raise TimeoutError("wa.send.results not read to its end")
            return link_of(tenant, ref)

    proc = ErpInbound(Settings(), links=Flaky(), ring=KEYS, tenants=None, kek=None, graph=None, refs=REF, serde=SERDE)
    rec = {k: v for k, v in BASE[INBOUND_MESSAGES].items() if k != "_topic"}
    producer, letters, errors = _Producer(), _Letters(), []
    asyncio.run(proc._one(_Msg(INBOUND_MESSAGES, SERDE.encode("InboundMessage", rec)), producer, letters, errors))
    assert len(calls) == 2 and letters.written == []
    [(topic, key, value)] = producer.produced
    assert topic == ERP_INBOUND and key == b"acme" and SERDE.decode(value, "ErpInbound")["command"] == COMMAND.to_avro()
    asyncio.run(proc._one(_Msg(INBOUND_MESSAGES, b"garbage"), producer, letters, errors))
    [letter] = letters.written
    assert letter.error_type == "SerdeError" and "undecodable" in letter.reason and len(producer.produced) == 1


def test_links_keep_the_command_that_sent_the_message_within_its_tenant():
    from processors.erp_inbound.links import CommandLinks

    links = CommandLinks("127.0.0.1:1")  # not started: records are applied by hand

    def result(outcome, command_id, wamid, tenant="acme", key="invoice-17"):
        return SERDE.encode("SendResult", {
            "command_id": command_id, "tenant_id": tenant, "idempotency_key": key, "phone_number_id": "301",
            "subject_id": "s", "lane": "TRANSACTIONAL", "campaign_id": None, "outcome": outcome, "wamid": wamid,
            "message_status": None, "error_code": None, "error_subcode": None, "reason": None, "attempts": 1,
            "original_outcome": "ACCEPTED" if outcome == "DUPLICATE" else None, "decided_at": NOW})

    links.apply(result("RETRYING", "cmd-1", None))
    links.apply(result("ACCEPTED", "cmd-1", "wref.a"))
    links.apply(result("ACCEPTED", "cmd-1", "wref.a"))  # a repeated final result
    links.apply(result("DUPLICATE", "cmd-2", "wref.a"))  # a second command with the same key: not the sender
    links.apply(result("ACCEPTED", "cmd-9", "wref.b", tenant="other"))
    links.apply(b"\x00garbage")
    got = links.get("acme", "wref.a", wait=False)
    assert (got.command_id, got.idempotency_key, got.message_ref) == ("cmd-1", "invoice-17", "wref.a")
    assert links.get("acme", "wref.b", wait=False) is None  # another tenant's message
    assert links.get("other", "wref.b", wait=False).command_id == "cmd-9"
    assert links.unreadable == 1


# --- the SDK's view of an opened event: any content, never an error -----------------------------
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                       lambda i: st.lists(i, max_size=3) | st.dictionaries(
                           st.sampled_from(["message", "from", "profile_name", "wamid", "id", "text", "body",
                                            "interactive", "type", "button_reply", "list_reply", "button",
                                            "reaction", "emoji"]), i, max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(content=JSONISH, kind=st.sampled_from(["MESSAGE", "BUTTON_REPLY", "LIST_REPLY", "REACTION", "STATUS"]))
def test_the_sdk_event_helpers_take_any_content(content, kind):
    from producers.erp.consumer import InboundEvent

    ev = InboundEvent(event_id="e", tenant_id="acme", kind=kind, phone_number_id="301", subject_id="s",
                      message_ref="wref.x", message_type=None, status=None, command=None, errors=(),
                      timestamp=NOW, received_at=NOW, content=content)
    assert isinstance(ev.message, dict)
    for v in (ev.sender, ev.profile_name, ev.wamid, ev.text, ev.reaction):
        assert v is None or isinstance(v, str)
    assert ev.reply is None or isinstance(ev.reply, dict)


def test_the_sdk_event_helpers_read_metas_shapes():
    from producers.erp.consumer import InboundEvent

    def ev(kind, message):
        return InboundEvent(event_id="e", tenant_id="acme", kind=kind, phone_number_id="301", subject_id="s",
                            message_ref="wref.x", message_type=None, status=None, command=None, errors=(),
                            timestamp=NOW, received_at=NOW, content={"from": "4915", "message": message})

    assert ev("MESSAGE", {"id": "wamid.a", "text": {"body": "hi"}}).text == "hi"
    assert ev("BUTTON_REPLY", {"button": {"payload": "P", "text": "Yes"}}).reply == {"payload": "P", "text": "Yes"}
    assert ev("LIST_REPLY", {"interactive": {"type": "list_reply", "list_reply": {"id": "r"}}}).reply == {"id": "r"}
    assert ev("REACTION", {"reaction": {"message_id": "wamid.b"}}).reaction == ""  # removed
    assert ev("MESSAGE", {"id": "wamid.a"}).wamid == "wamid.a" and ev("MESSAGE", {}).sender == "4915"


@pytest.mark.parametrize("topic", [INBOUND_MESSAGES, STATUS_EVENTS])
def test_a_decoded_event_missing_a_required_field_is_a_missing_field_dead_letter(topic):
    name = "InboundMessage" if topic == INBOUND_MESSAGES else "StatusEvent"
    rec = {k: v for k, v in BASE[topic].items() if k != "_topic"}
    assert typed(name, rec).event_id == rec["event_id"]
    for f in SERDE.store.latest(name).schema["fields"]:
        if "default" in f:
            continue
        with pytest.raises(Dead) as e:
            typed(name, {k: v for k, v in rec.items() if k != f["name"]})
        assert e.value.error_type == "MissingField" and f["name"] in e.value.reason
