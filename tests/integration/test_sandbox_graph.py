"""The sandbox's Graph API over real HTTP: reply and error shapes, validation, templates, numbers,
signup code exchange, debug_token, subscribed_apps, register."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.integration

TO = "4915112345678"


@pytest.fixture
def graph(meta_sandbox):
    with httpx.Client(base_url=meta_sandbox.url, headers={"Authorization": f"Bearer {meta_sandbox.token}"}) as c:
        yield c


def send(graph, number_id, **body):
    return graph.post(f"/v23.0/{number_id}/messages", json={"messaging_product": "whatsapp", "to": TO, **body})


def template(name="hello_world", params=0, lang="en_US"):
    comps = [{"type": "body", "parameters": [{"type": "text", "text": f"p{i}"} for i in range(params)]}] if params else []
    return {"type": "template", "template": {"name": name, "language": {"code": lang}, "components": comps}}


def assert_meta_error(r, code, status=None):
    err = r.json()["error"]
    assert err["code"] == code, r.text
    assert set(err) >= {"message", "type", "code", "fbtrace_id"}
    if status is not None:
        assert r.status_code == status
    return err


def test_send_template_reply_is_meta_shaped(meta_sandbox, graph):
    r = send(graph, meta_sandbox.number_id, to="+" + TO, biz_opaque_callback_data="key-1", **template("order_update", 2))
    assert r.status_code == 200
    body = r.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+" + TO, "wa_id": TO}]
    (msg,) = body["messages"]
    assert msg["id"].startswith("wamid.") and len(msg["id"]) > 30 and msg["message_status"] == "accepted"
    (rec,) = meta_sandbox.control.messages()
    assert rec["wamid"] == msg["id"] and rec["idempotency_key"] == "key-1" and rec["phone_number_id"] == meta_sandbox.number_id


def test_every_session_type_is_accepted_inside_the_window(meta_sandbox, graph):
    n = meta_sandbox.number_id
    meta_sandbox.control.inbound(n, TO)
    bodies = [
        {"type": "text", "text": {"body": "hi"}},
        {"type": "image", "image": {"link": "https://example.com/a.jpg", "caption": "c"}},
        {"type": "document", "document": {"id": "123", "filename": "a.pdf"}},
        {"type": "interactive", "interactive": {"type": "button", "body": {"text": "Pick"}, "action": {"buttons": [
            {"type": "reply", "reply": {"id": "y", "title": "Yes"}}]}}},
        {"type": "interactive", "interactive": {"type": "list", "body": {"text": "Pick"}, "action": {
            "button": "Choose", "sections": [{"title": "s", "rows": [{"id": "1", "title": "one"}]}]}}},
        {"type": "reaction", "reaction": {"message_id": "wamid.x", "emoji": "👍"}},
    ]
    for b in bodies:
        r = send(graph, n, **b)
        assert r.status_code == 200, r.text
    assert all(m["failed_with"] is None for m in meta_sandbox.control.messages())


@pytest.mark.parametrize(("body", "code"), [
    ({"messaging_product": None}, 100),
    ({"to": None}, 100),
    ({"to": "12ab"}, 100),
    ({"type": "text"}, 131008),
    ({"type": "text", "text": {"body": "x" * 4097}}, 100),
    ({"type": "image", "image": {"caption": "no media"}}, 131008),
    ({"type": "image", "image": {"id": "1", "caption": "x" * 1025}}, 100),
    ({"type": "interactive", "interactive": {"type": "button", "body": {"text": "t"}, "action": {"buttons": [
        {"type": "reply", "reply": {"id": str(i), "title": "b"}} for i in range(4)]}}}, 131009),
    ({"type": "interactive", "interactive": {"type": "button", "body": {"text": "t"}, "action": {"buttons": [
        {"type": "reply", "reply": {"id": "1", "title": "x" * 21}}]}}}, 131009),
    ({"type": "template", "template": {"language": {"code": "en_US"}}}, 131008),
    ({"type": "bogus"}, 100),
])
def test_validation_errors(meta_sandbox, graph, body, code):
    payload = {"messaging_product": "whatsapp", "to": TO, **body}
    payload = {k: v for k, v in payload.items() if v is not None}
    r = graph.post(f"/v23.0/{meta_sandbox.number_id}/messages", json=payload)
    assert r.status_code == 400
    assert_meta_error(r, code)
    assert meta_sandbox.control.counters()["numbers"][meta_sandbox.number_id]["rejected"] == {str(code): 1}
    assert meta_sandbox.control.messages() == []


def test_text_of_exactly_4096_chars_is_accepted(meta_sandbox, graph):
    meta_sandbox.control.inbound(meta_sandbox.number_id, TO)
    assert send(graph, meta_sandbox.number_id, type="text", text={"body": "x" * 4096}).status_code == 200


def test_auth_errors(meta_sandbox):
    url = f"{meta_sandbox.url}/v23.0/{meta_sandbox.number_id}/messages"
    body = {"messaging_product": "whatsapp", "to": TO, **template()}
    r = httpx.post(url, json=body)
    assert_meta_error(r, 190, 401)
    r = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"})
    assert_meta_error(r, 190, 401)
    meta_sandbox.control.add_token("other", waba_ids=["9999"])
    r = httpx.post(url, json=body, headers={"Authorization": "Bearer other"})
    err = assert_meta_error(r, 100, 400)
    assert err["error_subcode"] == 33
    meta_sandbox.control.revoke_token(meta_sandbox.token)
    r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {meta_sandbox.token}"})
    assert assert_meta_error(r, 190, 401)["error_subcode"] == 463


def test_templates_unknown_paused_disabled_and_param_count(meta_sandbox, graph):
    n, c = meta_sandbox.number_id, meta_sandbox.control
    assert_meta_error(send(graph, n, **template("missing")), 132001)
    assert_meta_error(send(graph, n, **template("hello_world", lang="de")), 132001)
    assert_meta_error(send(graph, n, **template("order_update", 1)), 132000, 400)
    c.set_template_status(meta_sandbox.waba_id, "order_update", "en_US", "PAUSED", reason="LOW_QUALITY")
    assert_meta_error(send(graph, n, **template("order_update", 2)), 132015, 400)
    c.set_template_status(meta_sandbox.waba_id, "order_update", "en_US", "DISABLED")
    assert_meta_error(send(graph, n, **template("order_update", 2)), 132016, 400)
    c.set_template_status(meta_sandbox.waba_id, "order_update", "en_US", "APPROVED")
    assert send(graph, n, **template("order_update", 2)).status_code == 200


def test_template_create_list_approve_delete(meta_sandbox, graph):
    w = meta_sandbox.waba_id
    r = graph.post(f"/v23.0/{w}/message_templates", json={
        "name": "shipping_notice", "language": "en_US", "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Parcel {{1}} arrives {{2}}"}]})
    assert r.status_code == 200 and r.json()["status"] == "PENDING"
    tid = r.json()["id"]
    assert_meta_error(send(graph, meta_sandbox.number_id, **template("shipping_notice", 2)), 132001)
    dup = graph.post(f"/v23.0/{w}/message_templates", json={"name": "shipping_notice", "language": "en_US",
                                                            "category": "UTILITY", "components": []})
    assert assert_meta_error(dup, 100)["error_subcode"] == 2388024
    time.sleep(0.3)  # the fixture's review delay is 50 ms
    listed = graph.get(f"/v23.0/{w}/message_templates", params={"name": "shipping_notice"}).json()["data"]
    assert [(t["id"], t["status"]) for t in listed] == [(tid, "APPROVED")]
    assert send(graph, meta_sandbox.number_id, **template("shipping_notice", 2)).status_code == 200
    assert graph.delete(f"/v23.0/{w}/message_templates", params={"name": "shipping_notice"}).json() == {"success": True}
    assert_meta_error(send(graph, meta_sandbox.number_id, **template("shipping_notice", 2)), 132001)
    assert_meta_error(graph.delete(f"/v23.0/{w}/message_templates", params={"name": "shipping_notice"}), 100)
    bad = graph.post(f"/v23.0/{w}/message_templates", json={"name": "Bad Name", "language": "en_US", "category": "UTILITY"})
    assert_meta_error(bad, 100, 400)


def test_phone_numbers_and_details(meta_sandbox, graph):
    data = graph.get(f"/v23.0/{meta_sandbox.waba_id}/phone_numbers").json()["data"]
    assert {d["id"] for d in data} == set(meta_sandbox.number_ids)
    assert all(d["quality_rating"] == "GREEN" and d["throughput"] == {"level": "STANDARD"} for d in data)
    meta_sandbox.control.update_number(meta_sandbox.number_id, throughput=1000, quality_rating="YELLOW")
    meta_sandbox.control.set_tier(meta_sandbox.business_id, "TIER_100K")
    d = graph.get(f"/v23.0/{meta_sandbox.number_id}", params={
        "fields": "status,throughput,quality_rating,whatsapp_business_manager_messaging_limit"}).json()
    assert d == {"status": "CONNECTED", "throughput": {"level": "HIGH"}, "quality_rating": "YELLOW",
                 "whatsapp_business_manager_messaging_limit": "TIER_100K", "id": meta_sandbox.number_id}
    assert_meta_error(graph.get(f"/v23.0/{meta_sandbox.number_id}", params={"fields": "nonsense"}), 100)


def test_register(meta_sandbox, graph):
    meta_sandbox.control.configure(limits={"register_max": 2})
    url = f"/v23.0/{meta_sandbox.number_id}/register"
    assert_meta_error(graph.post(url, json={"messaging_product": "whatsapp"}), 100)
    assert_meta_error(graph.post(url, json={"messaging_product": "whatsapp", "pin": "12"}), 100)
    for _ in range(2):
        assert graph.post(url, json={"messaging_product": "whatsapp", "pin": "123456"}).json() == {"success": True}
    assert_meta_error(graph.post(url, json={"messaging_product": "whatsapp", "pin": "123456"}), 133016)


def test_unregistered_number_cannot_send(meta_sandbox, graph):
    meta_sandbox.control.add_number("3000000009", meta_sandbox.waba_id, registered=False)
    assert_meta_error(send(graph, "3000000009", **template()), 133010)
    graph.post("/v23.0/3000000009/register", json={"messaging_product": "whatsapp", "pin": "000111"})
    assert send(graph, "3000000009", **template()).status_code == 200


def test_signup_code_exchange_debug_token_and_subscription(meta_sandbox):
    c, app, secret = meta_sandbox.control, meta_sandbox.app_id, meta_sandbox.app_secret
    c.add_waba("2000000002", meta_sandbox.business_id, subscribed_apps=[])
    code = c.signup_code(app, ["2000000002"])
    q = {"client_id": app, "client_secret": secret, "code": code}
    assert_meta_error(httpx.get(f"{meta_sandbox.url}/v23.0/oauth/access_token", params={**q, "client_secret": "x"}), 1)
    r = httpx.get(f"{meta_sandbox.url}/v23.0/oauth/access_token", params=q)
    assert r.status_code == 200 and r.json()["token_type"] == "bearer"
    token = r.json()["access_token"]
    again = httpx.get(f"{meta_sandbox.url}/v23.0/oauth/access_token", params=q)
    assert assert_meta_error(again, 100)["error_subcode"] == 36009  # single use

    dbg = httpx.get(f"{meta_sandbox.url}/v23.0/debug_token", params={"input_token": token},
                    headers={"Authorization": f"Bearer {app}|{secret}"}).json()["data"]
    assert dbg["is_valid"] and dbg["app_id"] == app
    assert {g["scope"]: g["target_ids"] for g in dbg["granular_scopes"]} == {
        "whatsapp_business_management": ["2000000002"], "whatsapp_business_messaging": ["2000000002"]}
    bad = httpx.get(f"{meta_sandbox.url}/v23.0/debug_token", params={"input_token": "zzz"},
                    headers={"Authorization": f"Bearer {app}|{secret}"}).json()["data"]
    assert bad["is_valid"] is False

    h = {"Authorization": f"Bearer {token}"}
    subs = f"{meta_sandbox.url}/v23.0/2000000002/subscribed_apps"
    assert httpx.get(subs, headers=h).json() == {"data": []}
    assert httpx.post(subs, headers=h).json() == {"success": True}
    assert [d["whatsapp_business_api_data"]["id"] for d in httpx.get(subs, headers=h).json()["data"]] == [app]
    assert c.state()["wabas"][-1]["subscribed_apps"] == [app]
    assert httpx.delete(subs, headers=h).json() == {"success": True}
    assert httpx.get(subs, headers=h).json() == {"data": []}
    # the new token is scoped to its WABA only
    r = httpx.get(f"{meta_sandbox.url}/v23.0/{meta_sandbox.waba_id}/phone_numbers", headers=h)
    assert assert_meta_error(r, 100)["error_subcode"] == 33


def test_signup_code_expires(meta_sandbox):
    c = meta_sandbox.control
    c.configure(limits={"signup_code_ttl_s": 0.2})
    code = c.signup_code(meta_sandbox.app_id, [meta_sandbox.waba_id])
    time.sleep(0.3)
    r = httpx.get(f"{meta_sandbox.url}/oauth/access_token",
                  params={"client_id": meta_sandbox.app_id, "client_secret": meta_sandbox.app_secret, "code": code})
    assert assert_meta_error(r, 100, 400)["error_subcode"] == 36007
    r = httpx.get(f"{meta_sandbox.url}/oauth/access_token",
                  params={"client_id": meta_sandbox.app_id, "client_secret": meta_sandbox.app_secret, "code": "forged"})
    assert assert_meta_error(r, 100)["error_subcode"] == 36008


def test_mark_read(meta_sandbox, graph):
    wamid = meta_sandbox.control.inbound(meta_sandbox.number_id, TO, "hi")
    url = f"/v23.0/{meta_sandbox.number_id}/messages"
    assert graph.post(url, json={"messaging_product": "whatsapp", "status": "read", "message_id": wamid}).json() == {"success": True}
    assert_meta_error(graph.post(url, json={"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.nope"}), 131009)
    assert meta_sandbox.control.state()["read_marked"] == [wamid]


def test_mark_read_is_scoped_to_the_receiving_number_and_recorded(meta_sandbox, graph):
    c = meta_sandbox.control
    other = "3999000111"
    c.add_number(other, meta_sandbox.waba_id)  # same WABA, same token: still not the number it was sent to
    first = c.inbound(meta_sandbox.number_id, TO, "hi")
    elsewhere = c.inbound(other, TO, "hi other")
    wamid = c.inbound(meta_sandbox.number_id, TO, "hi again")
    later = c.inbound(meta_sandbox.number_id, TO, "and again")
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
    assert_meta_error(graph.post(f"/v23.0/{other}/messages", json=read), 131009)
    assert_meta_error(graph.post(f"/v23.0/{meta_sandbox.number_id}/messages",
                                 json={**read, "typing_indicator": {"type": "voice"}}), 131009)
    assert c.reads() == []
    url = f"/v23.0/{meta_sandbox.number_id}/messages"
    assert graph.post(url, json={**read, "typing_indicator": {"type": "text"}}).json() == {"success": True}
    [r] = c.reads(meta_sandbox.number_id)
    assert (r["message_id"], r["wa_id"], r["typing_indicator"]) == (wamid, TO, True)
    assert r["marks"] == [first, wamid]  # the earlier message of the chat too; not the other number's, not later
    assert c.reads(other) == [] and elsewhere not in r["marks"] and later not in r["marks"]


def test_control_api_rejects_bad_input(meta_sandbox):
    c = meta_sandbox.control
    with pytest.raises(httpx.HTTPStatusError) as e:
        c.seed({"numbers": [{"id": "1", "waba_id": "unknown"}]})
    assert e.value.response.status_code == 422
    with pytest.raises(httpx.HTTPStatusError) as e:
        c.update_number("no-such-number", throughput=5)
    assert e.value.response.status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as e:
        c.configure(limits={"pair_burst": 0})
    assert e.value.response.status_code == 422
    with pytest.raises(httpx.HTTPStatusError) as e:
        c.set_webhook("not-a-url")
    assert e.value.response.status_code == 422
    with pytest.raises(httpx.HTTPStatusError) as e:
        c.inbound("no-such-number", "491700000001")
    assert e.value.response.status_code == 404


def test_management_api_rate_limit(meta_sandbox, graph):
    meta_sandbox.control.configure(limits={"management_calls_per_hour": 3, "management_window_s": 0.5})
    w = meta_sandbox.waba_id
    codes = [graph.get(f"/v23.0/{w}/message_templates").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    assert_meta_error(graph.get(f"/v23.0/{w}/phone_numbers"), 80007, 400)
    # sends are not management calls
    assert send(graph, meta_sandbox.number_id, **template()).status_code == 200
    time.sleep(0.55)
    assert graph.get(f"/v23.0/{meta_sandbox.number_id}").status_code == 200
