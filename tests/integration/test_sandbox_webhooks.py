"""Status and event webhooks from the sandbox to a real receiver over HTTP: signed like Meta,
batched, with each bad habit, retries while the receiver fails or is down, and on-demand inbound
messages, template status and number quality updates."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.meta.sandbox.server import bind
from connectors.meta.signature import HEADER, verify

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook endpoint: verifies every POST's signature, records it, answers ``fail_next`` POSTs
    with 500 before answering 200."""

    def __init__(self, secret: str, port: int = 0) -> None:
        self.secret = secret.encode()
        self.posts: list[dict] = []
        self.bad_signatures = 0
        self.fail_next = 0
        self.answers: Counter = Counter()
        self._lock = threading.Lock()
        self._sock = bind("127.0.0.1", port)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/webhook"
        self.verify_token = "verify-me"
        app = Starlette(routes=[Route("/webhook", self._post, methods=["POST"]),
                                Route("/webhook", self._handshake, methods=["GET"])])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", loop="asyncio", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    async def _post(self, request: Request) -> Response:
        raw = await request.body()
        with self._lock:
            if not verify(self.secret, raw, request.headers.get(HEADER)):
                self.bad_signatures += 1
                self.answers[401] += 1
                return Response(status_code=401)
            if self.fail_next > 0:
                self.fail_next -= 1
                self.answers[500] += 1
                return Response(status_code=500)
            self.posts.append(json.loads(raw))
            self.answers[200] += 1
        return Response("ok")

    async def _handshake(self, request: Request) -> Response:
        q = request.query_params
        if q.get("hub.mode") == "subscribe" and q.get("hub.verify_token") == self.verify_token:
            return Response(q.get("hub.challenge", ""), media_type="text/plain")
        return Response(status_code=403)

    def start(self) -> "Receiver":
        self._thread.start()
        while not self._server.started:
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    # --- reading what arrived ---------------------------------------------------------------
    def changes(self, field: str | None = None) -> list[dict]:
        with self._lock:
            posts = list(self.posts)
        return [ch for p in posts for e in p["entry"] for ch in e["changes"] if field is None or ch["field"] == field]

    def statuses(self) -> list[dict]:
        return [s for ch in self.changes("messages") for s in ch["value"].get("statuses", [])]


@pytest.fixture
def receiver(meta_sandbox):
    r = Receiver(meta_sandbox.app_secret).start()
    meta_sandbox.control.set_webhook(r.url)
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def graph(meta_sandbox):
    with httpx.Client(base_url=meta_sandbox.url, headers={"Authorization": f"Bearer {meta_sandbox.token}"}) as c:
        yield c


def send_templates(meta_sandbox, graph, n, version="v23.0", first=491710000000):
    wamids = []
    for i in range(n):
        r = graph.post(f"/{version}/{meta_sandbox.number_id}/messages", json={
            "messaging_product": "whatsapp", "to": str(first + i), "biz_opaque_callback_data": f"cb-{i}",
            "type": "template", "template": {"name": "promo", "language": {"code": "en_US"}}})
        assert r.status_code == 200, r.text
        wamids.append(r.json()["messages"][0]["id"])
    return wamids


def by_message(statuses):
    out: dict[str, list[str]] = {}
    for s in statuses:
        out.setdefault(s["id"], []).append(s["status"])
    return out


def test_status_webhooks_are_signed_batched_and_complete(meta_sandbox, graph, receiver):
    meta_sandbox.control.configure(webhooks={"batch_interval_s": 0.05})
    wamids = send_templates(meta_sandbox, graph, 20)
    meta_sandbox.control.wait_webhooks_idle()
    assert receiver.bad_signatures == 0
    statuses = receiver.statuses()
    seq = by_message(statuses)
    assert set(seq) == set(wamids)
    # no habits configured: each message exactly once sent, delivered, read (POSTs may still race)
    assert all(sorted(seq[w]) == ["delivered", "read", "sent"] for w in wamids)
    assert len(receiver.posts) < len(statuses), "statuses must be batched several per POST"
    sent = next(s for s in statuses if s["id"] == wamids[3] and s["status"] == "sent")
    assert sent["biz_opaque_callback_data"] == "cb-3" and sent["recipient_id"] == "491710000003"
    assert sent["pricing"] == {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "marketing"}
    assert sent["conversation"]["origin"] == {"type": "marketing"} and sent["conversation"]["id"]
    read = next(s for s in statuses if s["id"] == wamids[3] and s["status"] == "read")
    assert "pricing" not in read and int(read["timestamp"]) >= int(sent["timestamp"])
    change = receiver.changes("messages")[0]
    assert change["value"]["metadata"]["phone_number_id"] == meta_sandbox.number_id
    assert receiver.posts[0]["object"] == "whatsapp_business_account"
    assert receiver.posts[0]["entry"][0]["id"] == meta_sandbox.waba_id
    c = meta_sandbox.control.counters()["webhooks"]
    assert c["updates_delivered"] == 60 and c["posts_failed"] == 0 and c["pending"] == 0


def test_conversation_is_omitted_from_v24(meta_sandbox, graph, receiver):
    send_templates(meta_sandbox, graph, 2, version="v24.0")
    meta_sandbox.control.wait_webhooks_idle()
    statuses = receiver.statuses()
    assert statuses and all("conversation" not in s for s in statuses)
    assert any("pricing" in s for s in statuses)


def test_failed_statuses_carry_errors(meta_sandbox, graph, receiver):
    meta_sandbox.control.set_invalid_recipients(["491710000001"])
    wamids = send_templates(meta_sandbox, graph, 2)
    r = graph.post(f"/v23.0/{meta_sandbox.number_id}/messages", json={
        "messaging_product": "whatsapp", "to": "491710000099", "type": "text", "text": {"body": "outside window"}})
    assert r.status_code == 200
    meta_sandbox.control.wait_webhooks_idle()
    seq = by_message(receiver.statuses())
    assert sorted(seq[wamids[0]]) == ["delivered", "read", "sent"]
    assert seq[wamids[1]] == ["failed"]
    assert seq[r.json()["messages"][0]["id"]] == ["failed"]
    failed = {s["recipient_id"]: s for s in receiver.statuses() if s["status"] == "failed"}
    assert failed["491710000001"]["errors"][0]["code"] == 131026
    assert failed["491710000001"]["errors"][0]["error_data"]["details"]
    assert failed["491710000099"]["errors"][0]["code"] == 131047


def test_duplicates(meta_sandbox, graph, receiver):
    meta_sandbox.control.configure(habits={"duplicate": 1.0})
    wamids = send_templates(meta_sandbox, graph, 5)
    meta_sandbox.control.wait_webhooks_idle()
    counts = Counter((s["id"], s["status"]) for s in receiver.statuses())
    assert {counts[(w, st)] for w in wamids for st in ("sent", "delivered", "read")} == {2}


def test_out_of_order(meta_sandbox, graph, receiver):
    # statuses 100 ms apart, so the order of arrival is the sandbox's doing, not POSTs racing
    meta_sandbox.control.configure(habits={"out_of_order": 1.0}, webhooks={
        "sent_after": {"a": 10}, "delivered_after": {"a": 100}, "read_after": {"a": 100}})
    wamids = send_templates(meta_sandbox, graph, 5)
    meta_sandbox.control.wait_webhooks_idle()
    seq = by_message(receiver.statuses())
    for w in wamids:
        assert sorted(seq[w]) == ["delivered", "read", "sent"]
        assert seq[w][0] == "read" and seq[w][-1] == "sent", seq[w]
    # event timestamps still tell the true order
    for s in receiver.statuses():
        if s["status"] == "read":
            sent = next(x for x in receiver.statuses() if x["id"] == s["id"] and x["status"] == "sent")
            assert int(s["timestamp"]) >= int(sent["timestamp"])


def test_delivered_skipped(meta_sandbox, graph, receiver):
    meta_sandbox.control.configure(habits={"skip_delivered": 1.0})
    wamids = send_templates(meta_sandbox, graph, 5)
    meta_sandbox.control.wait_webhooks_idle()
    seq = by_message(receiver.statuses())
    assert all(sorted(seq[w]) == ["read", "sent"] for w in wamids)


def test_unread_messages_stop_at_delivered(meta_sandbox, graph, receiver):
    meta_sandbox.control.configure(habits={"read": 0.0})
    wamids = send_templates(meta_sandbox, graph, 3)
    meta_sandbox.control.wait_webhooks_idle()
    assert all(sorted(s) == ["delivered", "sent"] for s in by_message(receiver.statuses()).values())
    assert len(wamids) == 3


def test_retries_while_the_receiver_fails(meta_sandbox, graph, receiver):
    receiver.fail_next = 3
    meta_sandbox.control.configure(webhooks={"batch_interval_s": 0.2})  # one POST gathers all three statuses' first
    wamids = send_templates(meta_sandbox, graph, 1)
    meta_sandbox.control.wait_webhooks_idle(timeout=20)
    assert receiver.answers[500] == 3
    assert by_message(receiver.statuses())[wamids[0]].count("sent") == 1
    assert set(by_message(receiver.statuses())[wamids[0]]) == {"sent", "delivered", "read"}
    c = meta_sandbox.control.counters()["webhooks"]
    assert c["posts_failed"] == 3 and c["posts_dropped"] == 0 and c["posts_attempted"] == c["posts_delivered"] + 3


def test_retries_while_the_receiver_is_down_then_gives_up_after_max_age(meta_sandbox, graph):
    from wapipe.net import free_port

    port = free_port()
    meta_sandbox.control.set_webhook(f"http://127.0.0.1:{port}/webhook")
    wamids = send_templates(meta_sandbox, graph, 2)
    time.sleep(0.4)  # the receiver is down: attempts fail with connection refused
    assert meta_sandbox.control.counters()["webhooks"]["posts_failed"] >= 1
    receiver = Receiver(meta_sandbox.app_secret, port=port).start()
    try:
        meta_sandbox.control.wait_webhooks_idle(timeout=20)
        seq = by_message(receiver.statuses())
        assert all(set(seq[w]) == {"sent", "delivered", "read"} for w in wamids)
        assert meta_sandbox.control.counters()["webhooks"]["posts_dropped"] == 0
    finally:
        receiver.stop()
    # now down for good with a short max age: retried, then dropped
    meta_sandbox.control.configure(webhooks={"retry_max_age_s": 0.3})
    send_templates(meta_sandbox, graph, 1, first=491720000000)
    meta_sandbox.control.wait_webhooks_idle(timeout=10)
    assert meta_sandbox.control.counters()["webhooks"]["posts_dropped"] >= 1


def test_inbound_message_webhook_opens_the_window(meta_sandbox, graph, receiver):
    wamid = meta_sandbox.control.inbound(meta_sandbox.number_id, "+49 171 0000 555", "Hallo", name="Erika")
    meta_sandbox.control.wait_webhooks_idle()
    (value,) = [ch["value"] for ch in receiver.changes("messages")]
    assert value["contacts"] == [{"profile": {"name": "Erika"}, "wa_id": "491710000555"}]
    (msg,) = value["messages"]
    assert msg["id"] == wamid and msg["from"] == "491710000555" and msg["type"] == "text"
    assert msg["text"] == {"body": "Hallo"} and msg["timestamp"].isdigit()
    r = graph.post(f"/v23.0/{meta_sandbox.number_id}/messages", json={
        "messaging_product": "whatsapp", "to": "491710000555", "type": "text", "text": {"body": "Hi Erika"},
        "context": {"message_id": wamid}})
    assert r.status_code == 200
    meta_sandbox.control.wait_webhooks_idle()
    reply = [s for s in receiver.statuses() if s["id"] == r.json()["messages"][0]["id"]]
    assert sorted(s["status"] for s in reply) == ["delivered", "read", "sent"]
    sent = next(s for s in reply if s["status"] == "sent")
    assert sent["pricing"]["category"] == "service" and sent["pricing"]["billable"] is False


def test_template_and_number_events(meta_sandbox, receiver):
    c = meta_sandbox.control
    c.set_template_status(meta_sandbox.waba_id, "promo", "en_US", "PAUSED", reason="LOW_QUALITY")
    c.update_number(meta_sandbox.number_id, throughput=1000)
    c.set_tier(meta_sandbox.business_id, "TIER_100K")
    c.wait_webhooks_idle()
    (tpl,) = [ch["value"] for ch in receiver.changes("message_template_status_update")]
    assert tpl["event"] == "PAUSED" and tpl["message_template_name"] == "promo"
    assert tpl["message_template_language"] == "en_US" and tpl["reason"] == "LOW_QUALITY"
    assert isinstance(tpl["message_template_id"], int)
    events = [ch["value"] for ch in receiver.changes("phone_number_quality_update")]
    assert [e["event"] for e in events] == ["THROUGHPUT_UPGRADE", "UPGRADE", "UPGRADE"]
    assert events[-1]["current_limit"] == "TIER_100K"


def test_webhooks_only_go_to_subscribed_apps(meta_sandbox, graph, receiver):
    other = Receiver("other-secret").start()
    try:
        meta_sandbox.control.add_app("4000000002", "other-secret", webhook_url=other.url)
        meta_sandbox.control.add_waba(meta_sandbox.waba_id, meta_sandbox.business_id,
                                      subscribed_apps=[meta_sandbox.app_id])
        send_templates(meta_sandbox, graph, 1)
        meta_sandbox.control.wait_webhooks_idle()
        assert receiver.statuses() and other.posts == []
        meta_sandbox.control.add_waba(meta_sandbox.waba_id, meta_sandbox.business_id,
                                      subscribed_apps=[meta_sandbox.app_id, "4000000002"])
        send_templates(meta_sandbox, graph, 1, first=491730000000)
        meta_sandbox.control.wait_webhooks_idle()
        assert other.statuses() and other.bad_signatures == 0  # signed with that app's own secret
    finally:
        other.stop()


def test_signup_sends_partner_added_and_account_updates_reach_the_waba_apps(meta_sandbox, receiver):
    c = meta_sandbox.control
    c.add_waba("2000000003", meta_sandbox.business_id, subscribed_apps=[])
    code = c.signup_code(meta_sandbox.app_id, ["2000000003"])
    r = httpx.get(f"{meta_sandbox.url}/v23.0/oauth/access_token", params={
        "client_id": meta_sandbox.app_id, "client_secret": meta_sandbox.app_secret, "code": code})
    assert r.status_code == 200
    c.wait_webhooks_idle()
    (added,) = [p for p in receiver.posts if p["entry"][0]["changes"][0]["field"] == "account_update"]
    assert added["entry"][0]["id"] == meta_sandbox.business_id
    assert added["entry"][0]["changes"][0]["value"] == {
        "event": "PARTNER_ADDED", "waba_info": {"waba_id": "2000000003", "owner_business_id": meta_sandbox.business_id}}
    c.account_update(meta_sandbox.waba_id, "ACCOUNT_VIOLATION", violation_info={"violation_type": "SPAM"})
    c.account_update("2000000003", "PARTNER_REMOVED")  # nobody subscribed to this WABA: nothing sent
    c.wait_webhooks_idle()
    values = [ch["value"] for ch in receiver.changes("account_update")]
    assert values[1:] == [{"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SPAM"}}]


def test_callback_url_handshake_like_the_app_dashboard(meta_sandbox):
    r = Receiver(meta_sandbox.app_secret).start()
    try:
        assert meta_sandbox.control.set_webhook(r.url, verify_token="verify-me")["verified"] is True
        with pytest.raises(httpx.HTTPStatusError) as e:
            meta_sandbox.control.set_webhook(r.url + "?x=1", verify_token="wrong")
        assert e.value.response.status_code == 422 and "HTTP 403" in e.value.response.text
    finally:
        r.stop()
    from wapipe.net import free_port

    with pytest.raises(httpx.HTTPStatusError) as e:
        meta_sandbox.control.set_webhook(f"http://127.0.0.1:{free_port()}/webhook", verify_token="verify-me")
    assert e.value.response.status_code == 422 and "ConnectError" in e.value.response.text
    assert meta_sandbox.control.state()["apps"][0]["webhook_url"] == r.url  # failed attempts changed nothing


def test_user_preferences_stop_and_resume_webhooks_and_131050_for_marketing_only(meta_sandbox, graph, receiver):
    """A user who stops marketing messages: the signed user_preferences webhook (Meta's payload) goes
    out; a MARKETING template to them is accepted and then fails with 131050 (as Meta reports it); a
    UTILITY template still goes; after resume, marketing is delivered again."""
    ctl, user = meta_sandbox.control, "491710000555"
    ctl.configure(webhooks={"batch_interval_s": 0.05})
    assert ctl.user_preferences(meta_sandbox.number_id, "+49 171 0000555", "stop")["opted_out"] is True

    def send(name: str) -> str:
        r = graph.post(f"/v23.0/{meta_sandbox.number_id}/messages", json={
            "messaging_product": "whatsapp", "to": user, "type": "template",
            "template": {"name": name, "language": {"code": "en_US"}}})
        assert r.status_code == 200, r.text
        return r.json()["messages"][0]["id"]

    promo, utility = send("promo"), send("hello_world")
    ctl.wait_webhooks_idle()
    [change] = receiver.changes("user_preferences")
    v = change["value"]
    assert v["metadata"]["phone_number_id"] == meta_sandbox.number_id and v["contacts"][0]["wa_id"] == user
    [pref] = v["user_preferences"]
    assert (pref["wa_id"], pref["category"], pref["value"]) == (user, "marketing_messages", "stop")
    assert pref["detail"] == "User requested to stop marketing messages" and isinstance(pref["timestamp"], int)
    seq = by_message(receiver.statuses())
    assert seq[promo] == ["failed"] and sorted(seq[utility]) == ["delivered", "read", "sent"]
    failed = next(s for s in receiver.statuses() if s["id"] == promo)
    assert failed["errors"][0]["code"] == 131050 and "marketing" in failed["errors"][0]["error_data"]["details"]

    ctl.user_preferences(meta_sandbox.number_id, user, "resume")
    again = send("promo")
    ctl.wait_webhooks_idle()
    assert [c["value"]["user_preferences"][0]["value"] for c in receiver.changes("user_preferences")] == ["stop", "resume"]
    assert sorted(by_message(receiver.statuses())[again]) == ["delivered", "read", "sent"]
    assert receiver.bad_signatures == 0
    assert ctl.counters()["webhooks"]["user_preferences_scheduled"] == {"stop": 1, "resume": 1}


def test_user_preferences_control_refuses_bad_input(meta_sandbox):
    for body, status in (({"phone_number_id": meta_sandbox.number_id, "wa_id": "4917", "value": "maybe"}, 422),
                         ({"phone_number_id": "nope", "wa_id": "4917", "value": "stop"}, 404),
                         ({"phone_number_id": meta_sandbox.number_id, "wa_id": "abc", "value": "stop"}, 422),
                         ({"phone_number_id": meta_sandbox.number_id, "value": "stop"}, 422)):
        r = httpx.post(f"{meta_sandbox.url}/_sandbox/user_preferences", json=body)
        assert r.status_code == status, (body, r.text)
