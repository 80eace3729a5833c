"""Inbound to the ERP end to end, every part real but Meta (the sandbox): a SendCommand is sent by
`wapipe worker`; the user's reply, button answer and reaction come back from the sandbox as signed
webhooks -> `wapipe ingress` -> `wapipe normalise` -> `wapipe erp inbound` -> wa.erp.inbound -> the
ERP SDK's consumer, opened and linked to the command; statuses of the command likewise. Another
tenant's consumer (on the same partition) sees none of it and cannot open it; mark-as-read from the
SDK reaches the sandbox; poison records and forged read commands become dead letters with their
reason while the stream goes on."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from producers.erp import ErpConsumer, template
from producers.erp.consumer import partition_for
from tests.integration.kafka_helpers import read_all
from tests.integration.test_send_pipeline import send_world  # noqa: F401  (the fixture)
from wapipe.avro import AvroSerde, SerdeError
from tests.integration.test_poison_erp_inbound import start_group_at_end
from wapipe.kafka import JAVA_PARTITIONER
from wapipe.kafka import producer as make_producer
from wapipe.privacy.kek import load_kek
from wapipe.app.services import ServiceSpec
from wapipe.tenants.models import PhoneNumber, Tenant, TenantStatus
from wapipe.tenants.store import publish_tenant
from wapipe.topics import ERP_DEAD, ERP_INBOUND, ERP_READS, INBOUND_MESSAGES, admin_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _collect(consumer: ErpConsumer, want, timeout: float = 60.0) -> list:
    """Events until ``want(events)`` holds (or fail naming what arrived)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got.extend(consumer.poll(0.5))
        if want(got):
            return got
    raise AssertionError(f"after {timeout:.0f}s: {[(e.kind, e.message_type, e.status, e.command) for e in got]}")


def _decoded(serde: AvroSerde, value: bytes | None) -> dict | None:
    try:
        return serde.decode(value, "ErpInbound")
    except SerdeError:  # the poison records of this module
        return None


def _dead_letters(bootstrap: str, since: dt.datetime) -> list[dict]:
    serde = AvroSerde()
    out = [serde.decode(m.value(), "DeadLetter") for m in read_all(bootstrap, ERP_DEAD)]
    return [d for d in out if d["failed_at"] >= since]


def test_replies_buttons_reactions_and_statuses_reach_the_erp_linked_to_their_command(send_world, unique):
    w = send_world
    sb, c, kafka = w.sandbox, w.sandbox.control, w.bootstrap
    started = dt.datetime.now(dt.timezone.utc)
    tenant_a, number_a = w.tenant_id, w.numbers[0]
    parts = len(admin_client(kafka).list_topics(ERP_INBOUND, timeout=10).topics[ERP_INBOUND].partitions)
    # Tenant B: another business at Meta, and a tenant id on A's partition of wa.erp.inbound, so
    # B's consumer reads A's records and must ignore them.
    tenant_b = next(t for t in (f"b{unique}{i}" for i in range(10_000))
                    if partition_for(t, parts) == partition_for(tenant_a, parts))
    biz_b, waba_b, number_b = f"17{unique[:6]}", f"27{unique[:6]}", f"37{unique[:6]}"
    c.add_business(biz_b)
    c.add_waba(waba_b, biz_b)
    c.add_number(number_b, waba_b)
    c.add_token(f"EAAB{unique}", [waba_b])
    p = make_producer(kafka)
    publish_tenant(p, Tenant(tenant_id=tenant_b, status=TenantStatus.ACTIVE, waba_id=waba_b,
                             numbers=(PhoneNumber(phone_number_id=number_b),)).with_token(load_kek(w.settings),
                                                                                            f"EAAB{unique}"))

    group = f"erp-inbound-{unique}"
    start_group_at_end(kafka, group, [INBOUND_MESSAGES, "wa.status.events", ERP_READS])
    env = {**w.env, "WAPIPE_META_APPS": f'{{"{sb.app_id}": "{sb.app_secret}"}}',
           "WAPIPE_NORMALISE_APP_ID": f"normalise-{unique}", "WAPIPE_NORMALISE_OFFSET_RESET": "latest",
           "WAPIPE_ERP_INBOUND_GROUP": group}
    ingress = w.supervisor.start(ServiceSpec("ingress", ("ingress",), args=("--port", "0"), env=env))
    w.supervisor.start(ServiceSpec("normalise", ("normalise",), env=env, ready_timeout=120))
    w.supervisor.start(ServiceSpec("erp-inbound", ("erp", "inbound"), env=env, ready_timeout=120))
    c.set_webhook(f"{ingress.ready_value}/webhook", app_id=sb.app_id, app_secret=sb.app_secret)
    inbox_a = ErpConsumer.from_settings(w.settings, kafka, tenant_a, group_id=f"erp-a-{unique}", from_beginning=True)
    inbox_b = ErpConsumer.from_settings(w.settings, kafka, tenant_b, group_id=f"erp-b-{unique}", from_beginning=True)
    try:
        w.start_worker()
        user = w.recipient(7)
        cmd = w.send(template(user, "hello_world"), w.routing("order-1"))
        assert w.final(["order-1"])["order-1"]["outcome"] == "ACCEPTED"
        [sent] = [m for m in c.messages(number_a) if m["biz_opaque_callback_data"] == f"{tenant_a}/order-1"]
        wamid = sent["wamid"]

        # The user answers our message: a text reply, a button, a reaction; then writes to B too.
        c.inbound(number_a, user, "yes, deliver on Monday", context_id=wamid)
        c.inbound(number_a, user, type="interactive", context_id=wamid,
                  message={"interactive": {"type": "button_reply", "button_reply": {"id": "confirm", "title": "Confirm"}}})
        c.inbound(number_a, user, type="reaction", message={"reaction": {"message_id": wamid, "emoji": "👍"}})
        c.inbound(number_a, user, type="interactive", context_id=wamid, message={"interactive": {
            "type": "list_reply", "list_reply": {"id": "slot-2", "title": "Tuesday", "description": "9-12"}}})
        # A message Meta could not deliver to the business: its type, errors, no type object.
        c.inbound(number_a, user, type="interactive", message={"errors": [{
            "code": 131051, "title": "Message type unknown", "message": "Message type unknown",
            "error_data": {"details": "Message type is currently not supported."}}]})
        c.inbound(number_b, "4915100000001", "hello B")
        # A poison record on the processor's input, then one more message: the stream goes on.
        poison = make_producer(kafka)
        poison.produce(INBOUND_MESSAGES, key=number_a.encode(), value=b"\x00 not an InboundMessage")
        assert poison.flush(10) == 0
        # ...and one on the ERP's own topic, in A's partition: the SDK skips it, with why.
        erp_poison = make_producer(kafka, partitioner=JAVA_PARTITIONER)
        erp_poison.produce(ERP_INBOUND, key=tenant_a.encode(), value=b"\xc3\x01 not an ErpInbound")
        assert erp_poison.flush(10) == 0
        c.inbound(number_a, user, "after the poison")

        def complete(evs):
            kinds = {(e.kind, e.status) for e in evs}
            return ({("MESSAGE", None), ("BUTTON_REPLY", None), ("LIST_REPLY", None), ("REACTION", None),
                     ("FAILED", None), ("STATUS", "read")} <= kinds
                    and any(e.text == "after the poison" for e in evs))
        events = _collect(inbox_a, complete, timeout=90)
        assert {e.tenant_id for e in events} == {tenant_a}
        by_kind = {}
        for e in events:
            by_kind.setdefault(e.kind, []).append(e)
        [reply] = [e for e in by_kind["MESSAGE"] if e.text == "yes, deliver on Monday"]
        [button] = by_kind["BUTTON_REPLY"]
        [reaction] = by_kind["REACTION"]
        [choice] = by_kind["LIST_REPLY"]
        [failed] = by_kind["FAILED"]
        for e in (reply, button, reaction, choice):
            assert e.command is not None and e.command.idempotency_key == "order-1", e
            assert e.command.command_id == cmd["command_id"]
            assert e.subject_id == w.subject(user) and e.sender == user  # opened with the tenant's key
        assert button.reply == {"id": "confirm", "title": "Confirm"}
        assert reaction.reaction == "👍"
        assert choice.reply == {"id": "slot-2", "title": "Tuesday", "description": "9-12"}
        assert failed.message_type == "interactive" and failed.command is None
        assert [e["code"] for e in failed.errors] == [131051]
        statuses = {e.status for e in by_kind["STATUS"] if e.command and e.command.idempotency_key == "order-1"}
        assert {"sent", "delivered", "read"} <= statuses
        [after] = [e for e in by_kind["MESSAGE"] if e.text == "after the poison"]
        assert after.command is None  # not a reply
        assert len(inbox_a.skipped) == 1 and "fingerprint" in inbox_a.skipped[0][1], inbox_a.skipped

        # Tenant B reads the same partition: its own message only, A's records ignored.
        b_events = _collect(inbox_b, lambda evs: any(e.text == "hello B" for e in evs))
        assert {e.tenant_id for e in b_events} == {tenant_b}
        assert inbox_b.foreign >= len(events)
        with pytest.raises(PermissionError):
            inbox_b.mark_read(reply)
        # A record forged onto wa.erp.inbound in B's name carrying A's sealed content: B refuses to open it.
        serde = AvroSerde.from_settings(w.settings)
        forged = {"event_id": uuid.uuid4().hex, "tenant_id": tenant_b, "kind": "MESSAGE", "phone_number_id": number_b,
                  "waba_id": waba_b, "subject_id": reply.subject_id, "message_ref": reply.message_ref,
                  "message_type": "text", "status": None, "command": None, "errors": [], "timestamp": started,
                  "received_at": started, "pii": None, "extra": "{}"}
        forged["pii"] = next(r for r in map(lambda m: _decoded(serde, m.value()), read_all(kafka, ERP_INBOUND))
                             if r and r["event_id"] == reply.event_id)["pii"]
        fp = make_producer(kafka, partitioner=JAVA_PARTITIONER)
        fp.produce(ERP_INBOUND, key=tenant_b.encode(), value=serde.encode("ErpInbound", forged))
        assert fp.flush(10) == 0
        [seen] = _collect(inbox_b, lambda evs: any(e.event_id == forged["event_id"] for e in evs))
        assert seen.content is None and "not tenant" in seen.content_error

        # Mark-as-read through the pipeline reaches Meta (the sandbox), with the typing indicator.
        inbox_a.mark_read(reply, typing_indicator=True)
        deadline = time.monotonic() + 60
        while not c.reads(number_a):
            assert time.monotonic() < deadline, "the read receipt never reached the sandbox"
            time.sleep(0.2)
        [r] = c.reads(number_a)
        assert (r["message_id"], r["wa_id"], r["typing_indicator"]) == (reply.wamid, user, True)

        # A read command naming A's user, forged by tenant B for its own number: refused, not sent.
        forged_read = {"command_id": uuid.uuid4().hex, "tenant_id": tenant_b, "phone_number_id": number_b,
                       "subject_id": reply.subject_id, "message_ref": reply.message_ref,
                       "pii": inbox_b.keys.seal(tenant_b, reply.subject_id, {"wamid": reply.wamid}),
                       "typing_indicator": False, "requested_at": started}
        fp.produce(ERP_READS, key=tenant_b.encode(), value=serde.encode("ReadCommand", forged_read))
        assert fp.flush(10) == 0
        deadline = time.monotonic() + 60
        while True:
            dead = _dead_letters(kafka, started)
            reasons = {d["error_type"]: d for d in dead}
            if "ForeignSubject" in reasons and "SerdeError" in reasons:
                break
            assert time.monotonic() < deadline, dead
            time.sleep(0.5)
        assert reasons["ForeignSubject"]["tenant_id"] == tenant_b
        assert "undecodable InboundMessage" in reasons["SerdeError"]["reason"]
        assert reasons["SerdeError"]["source_topic"] == INBOUND_MESSAGES
        assert len(c.reads(number_a)) == 1 and c.reads(number_b) == []
    finally:
        c.set_webhook(None)
        inbox_a.close()
        inbox_b.close()
