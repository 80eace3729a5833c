"""Templates, limits and disconnect, live: real broker, the Meta sandbox, the real Graph client.

Account webhooks reach ``wa.account.events`` as the normaliser writes them (its converter turns the
webhook JSON into the AccountEvent record); ``wapipe tenants follow`` (the ``Follower``) applies them,
and a separate ``TenantRegistry`` standing for the send pipeline sees the result without a restart.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from tests.harness import eventually

from connectors.meta.client import GraphClient
from processors.normalise.convert import Normaliser
from tests.integration.kafka_helpers import read_all
from wapipe.avro import AvroSerde
from wapipe.edge.clients import producer
from wapipe.tenants.follow import Follower
from wapipe.tenants.guard import refusal
from wapipe.tenants.lifecycle import disconnect, refresh
from wapipe.tenants.limits import UNLIMITED
from wapipe.tenants.models import PhoneNumber, TenantStatus
from wapipe.tenants.registry import TenantRegistry
from wapipe.tenants.service import TenantError, TenantService
from wapipe.tenants.templates import create_template, delete_template, sync_templates
from wapipe.topics import ACCOUNT_EVENTS, TOPICS

pytestmark = pytest.mark.integration




@pytest.fixture
def world(meta_sandbox, unique):
    """A fresh business/WABA/number/template/token in the sandbox, and our tenant for it."""
    c = meta_sandbox.control
    n = int(unique[:6], 16)
    biz, waba, pn = f"19{n:08d}", f"29{n:08d}", f"39{n:08d}"
    display = f"1777{n % 10**7:07d}"
    token = f"EAAGlife{unique}TOKEN"
    c.add_business(biz, tier="TIER_250")
    c.add_waba(waba, biz)
    c.add_number(pn, waba, display_phone_number=display)
    c.add_template(waba, "invoice_due", body_params=2, body_text="Invoice {{1}} due {{2}}")
    c.add_token(token, [waba], app_id=meta_sandbox.app_id)
    return {"biz": biz, "waba": waba, "pn": pn, "display": display, "token": token}


@pytest.fixture
def service(settings, topics):
    svc = TenantService(settings, topics, actor="operator:test")
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def tenant(service, world, unique):
    return service.create(f"life-{unique}", waba_id=world["waba"], token=world["token"],
                          numbers=[PhoneNumber(phone_number_id=world["pn"], display_phone_number=world["display"])])


@pytest.fixture
def follower(settings, topics, unique):
    """`wapipe tenants follow`'s loop on a thread, with its own service (actor meta); stopped after."""
    svc = TenantService(settings, topics, actor="meta")
    stop, ready = threading.Event(), threading.Event()
    th = threading.Thread(target=Follower(svc, group=f"follow-{unique}").run, args=(stop,),
                          kwargs={"on_ready": ready.set}, daemon=True)
    th.start()
    try:
        assert ready.wait(20)
        yield svc
    finally:
        stop.set()
        th.join(10)
        svc.close()


@pytest.fixture
def dispatcher_view(settings, topics):
    """A separate registry, as the send pipeline holds it."""
    reg = TenantRegistry(settings, topics).start()
    try:
        assert reg.wait_ready(20)
        yield reg
    finally:
        reg.close()


def webhook(waba_id: str, field: str, value: dict, at: float | None = None) -> dict:
    return {"signature_verified": True, "received_at": dt.datetime.now(dt.timezone.utc),
            "body": json.dumps({"object": "whatsapp_business_account", "entry": [
                {"id": waba_id, "time": int(at or time.time()), "changes": [{"field": field, "value": value}]}]}).encode()}


def publish_account_event(bootstrap, registry, waba_id, field, value, at: float | None = None):
    """What the normaliser writes for this webhook change, on wa.account.events."""
    events = Normaliser(tenants=registry, seal=None, subject_of=None).convert(webhook(waba_id, field, value, at))
    assert [e.topic for e in events] == [ACCOUNT_EVENTS]
    p, serde = producer(bootstrap), AvroSerde()
    for e in events:
        p.produce(e.topic, key=e.key.encode(), value=serde.encode(e.record_name, e.record.to_avro(), topic=e.topic))
    assert p.flush(10) == 0


async def test_template_lifecycle_changes_what_the_send_pipeline_accepts(
        service, tenant, world, meta_sandbox, follower, dispatcher_view, topics):
    tid, waba, pn = tenant.tenant_id, world["waba"], world["pn"]
    async with GraphClient(meta_sandbox.url) as graph:
        report = await sync_templates(service, graph, tenant)
        assert report.added == [f"{waba}/invoice_due/en_US"]
        eventually(lambda: dispatcher_view.template(waba, "invoice_due", "en_US"))
        assert refusal(dispatcher_view, tid, pn, ("invoice_due", "en_US")) is None

        # Meta pauses it: the webhook reaches the catalogue and the send pipeline refuses at once
        publish_account_event(topics, dispatcher_view, waba, "message_template_status_update", {
            "event": "PAUSED", "message_template_id": 1, "message_template_name": "invoice_due",
            "message_template_language": "en_US", "reason": None,
            "other_info": {"title": "FIRST_PAUSE", "description": "paused for 3 hours"}})
        r = eventually(lambda: refusal(dispatcher_view, tid, pn, ("invoice_due", "en_US")))
        assert r.code == "template_not_approved" and r.reason == "template paused"

        publish_account_event(topics, dispatcher_view, waba, "message_template_status_update", {
            "event": "REINSTATED", "message_template_id": 1, "message_template_name": "invoice_due",
            "message_template_language": "en_US", "reason": "NONE"})
        eventually(lambda: refusal(dispatcher_view, tid, pn, ("invoice_due", "en_US")) is None)

        # create through the API: PENDING (refused) until Meta's review approves it by webhook
        tpl = await create_template(service, graph, tenant, name="receipt", language="en_US", category="UTILITY",
                                    components=[{"type": "BODY", "text": "Receipt {{1}}"}])
        assert tpl.status == "PENDING" and tpl.body_parameter_count == 1
        assert refusal(dispatcher_view, tid, pn, ("receipt", "en_US")) is not None
        publish_account_event(topics, dispatcher_view, waba, "message_template_status_update", {
            "event": "APPROVED", "message_template_id": int(tpl.template_id), "message_template_name": "receipt",
            "message_template_language": "en_US", "reason": "NONE"})
        eventually(lambda: refusal(dispatcher_view, tid, pn, ("receipt", "en_US")) is None)

        # delete through the API: gone from Meta and from the catalogue
        await delete_template(service, graph, tenant, name="receipt", language="en_US")
        eventually(lambda: dispatcher_view.template(waba, "receipt", "en_US") is None)
        assert "receipt" not in [t["name"] for t in meta_sandbox.control.state()["templates"] if t["waba_id"] == waba]
        assert refusal(dispatcher_view, tid, pn, ("receipt", "en_US")).code == "template_unknown"
    # isolation: a number of another tenant is refused
    assert refusal(dispatcher_view, tid, "1234567", None).code == "number_not_of_tenant"


async def test_limit_changes_reach_a_live_registry_listener(service, tenant, world, meta_sandbox, follower,
                                                            dispatcher_view, topics):
    tid, pn = tenant.tenant_id, world["pn"]
    seen: list = []
    dispatcher_view.on_change(lambda ch: seen.append(ch.new) if ch.kind == "tenant" and ch.key == tid else None)

    # webhook: the portfolio moved to TIER_100K, the number to 1,000 msg/s
    publish_account_event(topics, dispatcher_view, world["waba"], "phone_number_quality_update", {
        "display_phone_number": world["display"], "event": "THROUGHPUT_UPGRADE", "current_limit": "TIER_100K",
        "max_daily_conversations_per_business": "TIER_100K", "throughput": {"level": "HIGH"}})
    new = eventually(lambda: next((t for t in seen if t and t.messaging_limit == 100_000), None))
    assert new.number(pn).throughput_mps == 1000 and new.number(pn).messaging_limit_tier == "TIER_100K"

    # the API: `wapipe tenants refresh` after Meta changed the tier and the quality
    meta_sandbox.control.set_tier(world["biz"], "TIER_UNLIMITED")
    meta_sandbox.control.update_number(pn, quality_rating="YELLOW", throughput=80)
    async with GraphClient(meta_sandbox.url) as graph:
        await refresh(service, graph, tid)
    new = eventually(lambda: next((t for t in seen if t and t.messaging_limit == UNLIMITED), None))
    assert new.number(pn).quality_rating == "YELLOW" and new.number(pn).throughput_mps == 80


async def test_disconnect(service, tenant, world, meta_sandbox, dispatcher_view, topics, capfd):
    sb, waba, tid = meta_sandbox, world["waba"], tenant.tenant_id
    async with GraphClient(sb.url) as graph:
        assert await graph.subscribe_app(waba, token=world["token"])
        subscribed = lambda: next(w for w in sb.control.state()["wabas"] if w["id"] == waba)["subscribed_apps"]  # noqa: E731
        assert sb.app_id in subscribed()
        eventually(lambda: dispatcher_view.tenant(tid))
        assert refusal(dispatcher_view, tid, world["pn"]) is None

        t = await disconnect(service, graph, tid, reason="customer left")
        assert t.status == TenantStatus.DISCONNECTED and t.token is None
        assert sb.app_id not in subscribed()  # the sandbox recorded the unsubscribe
        r = eventually(lambda: refusal(dispatcher_view, tid, world["pn"]))
        assert r.reason == "tenant disconnected"
        with pytest.raises(TenantError, match="already disconnected"):
            await disconnect(service, graph, tid)
    with pytest.raises(LookupError):
        dispatcher_view.tenant(tid).open_token(service.kek)

    serde = AvroSerde()
    from wapipe.topics import AUDIT

    trail = [serde.decode(m.value(), "AuditEvent") for m in read_all(topics, AUDIT) if m.key() == tid.encode()]
    assert [e["action"] for e in trail] == ["tenant.created", "tenant.disconnected"]
    assert trail[-1]["details"]["unsubscribed"] == "yes" and trail[-1]["details"]["reason"] == "customer left"

    # the token is nowhere in clear: every topic, every partition, from the beginning; and no log line
    token = world["token"].encode()
    for spec in TOPICS:
        leaks = [m for m in read_all(topics, spec.name, timeout=10) if token in (m.value() or b"")]
        assert not leaks, f"token in clear on {spec.name}"
    out, err = capfd.readouterr()
    assert world["token"] not in out + err


def test_follower_dead_letters_unreadable_events_and_honours_app_removal(tenant, world, follower, dispatcher_view,
                                                                          topics, unique):
    from wapipe.topics import TENANTS_DEAD

    p = producer(topics)
    p.produce(ACCOUNT_EVENTS, key=world["waba"].encode(), value=f"garbage-{unique}".encode())
    assert p.flush(10) == 0
    # the business removed our app on Meta's side: the tenant is disconnected, its token deleted
    publish_account_event(topics, dispatcher_view, world["waba"], "account_update",
                          {"event": "PARTNER_REMOVED", "waba_info": {"waba_id": world["waba"]}})
    t = eventually(lambda: (x := dispatcher_view.tenant(tenant.tenant_id)) and x.status == TenantStatus.DISCONNECTED
                   and x)
    assert t.token is None
    assert refusal(dispatcher_view, tenant.tenant_id, world["pn"]).reason == "tenant disconnected"
    serde = AvroSerde()
    dead = [serde.decode(m.value(), "DeadLetter") for m in read_all(topics, TENANTS_DEAD)]
    mine = [d for d in dead if d["value"] == f"garbage-{unique}".encode()]
    assert len(mine) == 1 and mine[0]["source_topic"] == ACCOUNT_EVENTS and "not an Avro record" in mine[0]["reason"]


def test_follower_template_edge_events_and_capability_update(tenant, world, follower, dispatcher_view, topics):
    tid, waba, pn = tenant.tenant_id, world["waba"], world["pn"]

    def tpl_event(name, event, reason="NONE", tid_=7, at=None):
        publish_account_event(topics, dispatcher_view, waba, "message_template_status_update", {
            "event": event, "message_template_id": tid_, "message_template_name": name,
            "message_template_language": "en_US", "reason": reason}, at=at)

    # a template created on Meta's side (not by us) arrives by webhook: it enters the catalogue
    tpl_event("surprise", "APPROVED")
    eventually(lambda: refusal(dispatcher_view, tid, pn, ("surprise", "en_US")) is None)
    assert dispatcher_view.template(waba, "surprise", "en_US").tenant_id == tid
    # an older PAUSED delivered late (Meta retries for days) never overrides the newer APPROVED...
    tpl_event("surprise", "PAUSED", at=time.time() - 3600)
    # ...FLAGGED (same WABA key, so the same partition: applied after it): still sendable, the flag noted
    tpl_event("surprise", "FLAGGED", reason="LOW_QUALITY")
    eventually(lambda: (dispatcher_view.template(waba, "surprise", "en_US").reason or "").startswith("FLAGGED"))
    assert refusal(dispatcher_view, tid, pn, ("surprise", "en_US")) is None
    # REJECTED keeps Meta's reason for the operator; an unknown event is kept (and not sendable)
    tpl_event("surprise", "REJECTED", reason="INVALID_FORMAT")
    r = eventually(lambda: refusal(dispatcher_view, tid, pn, ("surprise", "en_US")))
    assert r.reason == "template rejected: INVALID_FORMAT"
    tpl_event("surprise", "SOME_NEW_META_STATE")
    eventually(lambda: dispatcher_view.template(waba, "surprise", "en_US").status == "SOME_NEW_META_STATE")
    # DELETED removes it
    tpl_event("surprise", "DELETED")
    eventually(lambda: dispatcher_view.template(waba, "surprise", "en_US") is None)

    publish_account_event(topics, dispatcher_view, waba, "business_capability_update", {
        "max_daily_conversation_per_phone": 10000, "max_phone_numbers_per_business": 2,
        "max_daily_conversations_per_business": "TIER_10K"})
    eventually(lambda: dispatcher_view.tenant(tid).messaging_limit == 10_000)



async def test_follower_applies_metas_template_category_changes(
        service, tenant, world, meta_sandbox, follower, dispatcher_view, topics):
    """Meta recategorises a UTILITY template as MARKETING (template_category_update): the registry the
    send worker reads takes the new category, which its marketing opt-out check relies on. Both of
    Meta's variants carry the category in force as ``new_category``; an unknown template is ignored."""
    waba = world["waba"]
    async with GraphClient(meta_sandbox.url) as graph:
        await sync_templates(service, graph, tenant)
    eventually(lambda: dispatcher_view.template(waba, "invoice_due", "en_US"))
    assert dispatcher_view.template(waba, "invoice_due", "en_US").category == "UTILITY"
    base = {"message_template_id": 7, "message_template_name": "invoice_due", "message_template_language": "en_US"}
    publish_account_event(topics, dispatcher_view, waba, "template_category_update", {
        **base, "correct_category": "MARKETING", "new_category": "UTILITY",
        "category_update_timestamp": int(time.time()) + 86400})  # impending: still UTILITY
    publish_account_event(topics, dispatcher_view, waba, "template_category_update", {
        **base, "previous_category": "UTILITY", "new_category": "MARKETING"})
    publish_account_event(topics, dispatcher_view, waba, "template_category_update", {
        **base, "message_template_name": "never_seen", "previous_category": "UTILITY", "new_category": "MARKETING"})
    eventually(lambda: dispatcher_view.template(waba, "invoice_due", "en_US").category == "MARKETING")
    assert dispatcher_view.template(waba, "never_seen", "en_US") is None
