"""Interactive and flow messages (CTA URL, location request, flow) and carousel templates: one
fixture per shape, written from Meta's documentation (docs/meta-api.md), built by the models and
accepted by the sandbox's validator; bad shapes refused by both. Inbound ``nfm_reply`` parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.meta import webhooks as W
from connectors.meta.messages import (BodyComponent, ButtonComponent, CarouselCard, CarouselComponent, CtaUrlMessage,
                                      FlowMessage, LocationRequestMessage, MediaHeader, MediaParameter, TemplateMessage,
                                      TextParameter, quick_reply_button, url_button)
from connectors.meta.sandbox.graph_errors import GraphError
from connectors.meta.sandbox.validate import parse_send

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "outbound"
HOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
TO = "+16505550147"


def fixture(name: str) -> dict:
    return json.loads((OUT / f"{name}.json").read_text())


def _card(i: int, media: dict, pct: str) -> CarouselCard:
    return CarouselCard(card_index=i, header=MediaParameter(kind="image", **media),
                        body=BodyComponent(parameters=[TextParameter(text=pct)]),
                        buttons=[quick_reply_button(0, f"more-{i}"), url_button(1, f"sku-{i + 1}00")])


BUILT = {
    "interactive_cta_url": lambda: CtaUrlMessage(
        to=TO, header="Your invoice", body="Invoice 4711 is ready. Open it in the portal.", footer="Link valid for 7 days",
        display_text="Open invoice", url="https://erp.example.com/i/4711"),
    "interactive_cta_url_image_header": lambda: CtaUrlMessage(
        to=TO, body="Spring sale: see what is new in the portal.", display_text="See offers",
        url="https://erp.example.com/offers",
        header_media=MediaHeader(kind="image", link="https://cdn.example.com/banner/spring.png")),
    "interactive_location_request": lambda: LocationRequestMessage(
        to=TO, body="Where should we deliver? Share your location."),
    "interactive_flow_navigate": lambda: FlowMessage(
        to=TO, header="Delivery survey", body="How did your delivery go?", footer="Takes one minute",
        flow_cta="Rate delivery", flow_id="1186439012755531", flow_token="order-4711-survey", screen="RATE",
        data={"order": "4711"}),
    "interactive_flow_data_exchange": lambda: FlowMessage(
        to=TO, body="Book a service appointment", flow_cta="Book now", flow_name="service_booking",
        flow_token="booking-0815", flow_action="data_exchange", mode="draft"),
    "template_carousel": lambda: TemplateMessage(
        to=TO, name="spring_offers", language="en_US",
        components=[BodyComponent(parameters=[TextParameter(text="Noor")]),
                    CarouselComponent(cards=[_card(0, {"id": "1479537139650973"}, "20%"),
                                             _card(1, {"link": "https://cdn.example.com/p/200.png"}, "15%")])]),
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_model_builds_the_documented_body_and_the_sandbox_accepts_it(name):
    body = BUILT[name]().to_request()
    assert body == fixture(name)
    req = parse_send(body)
    assert req.wa_id == "16505550147" and req.type == body["type"]


def test_a_navigate_flow_without_a_screen_starts_at_the_entry_screen():
    body = FlowMessage(to=TO, body="b", flow_cta="Open", flow_id="1").to_request()
    assert "flow_action_payload" not in body["interactive"]["action"]["parameters"]
    parse_send(body)


def test_every_outbound_fixture_has_a_builder():
    assert sorted(p.stem for p in OUT.glob("*.json")) == sorted(BUILT)


@pytest.mark.parametrize("build,why", [
    (lambda: CtaUrlMessage(to=TO, body="b", display_text="x" * 21, url="https://e.com"), "display_text"),
    (lambda: CtaUrlMessage(to=TO, body="b", display_text="Go", url="javascript:alert(1)"), "http"),
    (lambda: FlowMessage(to=TO, body="b", flow_cta="Go", screen="S"), "exactly one"),
    (lambda: FlowMessage(to=TO, body="b", flow_cta="Go", flow_id="1", flow_name="n", screen="S"), "exactly one"),
    (lambda: FlowMessage(to=TO, body="b", flow_cta="Go", flow_id="1", data={"a": 1}), "screen"),
    (lambda: FlowMessage(to=TO, body="b", flow_cta="Go", flow_id="1", flow_action="data_exchange", screen="S"), "data_exchange"),
    (lambda: FlowMessage(to=TO, body="b", flow_cta="Go", flow_id="1", screen="S", data={}), "non-empty"),
    (lambda: FlowMessage(to=TO, body="b", flow_cta="x" * 31, flow_id="1", screen="S"), "flow_cta"),
    (lambda: LocationRequestMessage(to=TO, body=""), "body"),
    (lambda: CtaUrlMessage(to=TO, body="b", display_text="Go", url="https://e.com", header="h",
                           header_media=MediaHeader(kind="image", link="https://e.com/a.png")), "one header"),
    (lambda: MediaHeader(kind="image", link="file:///etc/passwd"), "http"),
    (lambda: CarouselComponent(cards=[_card(0, {"id": "1"}, "1"), _card(0, {"id": "2"}, "2")]), "unique"),
    (lambda: CarouselComponent(cards=[_card(i % 10, {"id": "1"}, "1") for i in range(11)]), "10"),
    (lambda: CarouselComponent(cards=[_card(0, {"id": "1"}, "1"),
                                      CarouselCard(card_index=1, header=MediaParameter(kind="image", id="2"))]), "same"),
    (lambda: CarouselCard(card_index=0, header=MediaParameter(kind="document", id="1")), "image or a video"),
    (lambda: CarouselCard(card_index=0, header=MediaParameter(kind="image", id="1"),
                          buttons=[ButtonComponent(sub_type="copy_code", index=0)]), "quick_reply or url"),
    (lambda: TemplateMessage(to=TO, name="t", language="en_US", components=[
        CarouselComponent(cards=[_card(0, {"id": "1"}, "1")]), CarouselComponent(cards=[_card(0, {"id": "1"}, "1")])]),
     "one carousel"),
])
def test_bad_shapes_are_refused_with_a_reason(build, why):
    with pytest.raises((ValidationError, ValueError)) as exc:
        build()
    assert why in str(exc.value)


def _mutate(body: dict, path: list, value) -> dict:
    body = json.loads(json.dumps(body))
    obj = body
    for key in path[:-1]:
        obj = obj[key]
    if value is KeyError:
        obj.pop(path[-1])
    else:
        obj[path[-1]] = value
    return body


@pytest.mark.parametrize("name,path,value,code", [
    ("interactive_cta_url", ["interactive", "action", "parameters", "display_text"], "x" * 21, 131009),
    ("interactive_cta_url", ["interactive", "action", "parameters", "url"], "ftp://x", 131009),
    ("interactive_cta_url", ["interactive", "action", "parameters"], KeyError, 131008),
    ("interactive_cta_url", ["interactive", "body"], KeyError, 131008),
    ("interactive_location_request", ["interactive", "action", "name"], "cta_url", 100),
    ("interactive_cta_url", ["interactive", "header", "text"], "x" * 61, 131009),
    ("interactive_cta_url", ["interactive", "header", "type"], "sticker", 100),
    ("interactive_cta_url_image_header", ["interactive", "header", "image"], {}, 131008),
    ("interactive_location_request", ["interactive", "header"], {"type": "image", "image": {"link": "https://e.com/a"}}, 100),
    ("interactive_flow_navigate", ["interactive", "action", "parameters", "flow_message_version"], "2", 100),
    ("interactive_flow_navigate", ["interactive", "action", "parameters", "flow_action_payload", "screen"], KeyError, 131008),
    ("interactive_flow_navigate", ["interactive", "action", "parameters", "flow_cta"], "x" * 31, 131009),
    ("interactive_flow_navigate", ["interactive", "action", "parameters", "flow_name"], "n", 131009),
    ("interactive_flow_navigate", ["interactive", "action", "parameters", "flow_cta"], "", 131008),
    ("interactive_flow_data_exchange", ["interactive", "action", "parameters", "flow_action"], "open", 100),
    ("template_carousel", ["template", "components", 1, "cards", 1, "card_index"], 0, 131009),
    ("template_carousel", ["template", "components", 1, "cards", 0, "components", 0, "parameters", 0, "type"], "document", 131009),
    ("template_carousel", ["template", "components", 1, "cards", 1, "components", 3], {"type": "body"}, 131009),
    ("template_carousel", ["template", "components", 1, "cards"], [], 131008),
])
def test_sandbox_refuses_bad_shapes_like_meta(name, path, value, code):
    with pytest.raises(GraphError) as exc:
        parse_send(_mutate(fixture(name), path, value))
    assert exc.value.code == code


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cta=_text, body=_text, url=st.one_of(st.just("https://e.com/x"), _text), screen=st.one_of(st.none(), _text),
       flow_action=st.sampled_from(["navigate", "data_exchange"]))
def test_what_the_models_accept_the_sandbox_accepts(cta, body, url, screen, flow_action):
    """Property: a message the models build is never refused by the (Meta-faithful) sandbox
    validator, and what they refuse is refused with a ValueError, never another exception."""
    for build in (lambda: CtaUrlMessage(to=TO, body=body, display_text=cta, url=url),
                  lambda: FlowMessage(to=TO, body=body, flow_cta=cta, flow_id="1", flow_action=flow_action, screen=screen),
                  lambda: LocationRequestMessage(to=TO, body=body)):
        try:
            msg = build()
        except ValueError:
            continue
        parse_send(msg.to_request())


# --- inbound nfm_reply ---------------------------------------------------------------------------
def test_nfm_reply_parses_into_its_model_with_the_flow_token():
    env = W.parse_webhook((HOOKS / "inbound_interactive_nfm_reply.json").read_bytes())
    [item] = list(W.iter_messages(env))
    msg = item.message
    assert isinstance(msg, W.InteractiveMessage) and msg.interactive.type == "nfm_reply"
    reply = msg.interactive.nfm_reply
    assert isinstance(reply, W.NfmReply) and reply.name == "flow" and reply.body == "Sent"
    assert reply.flow_token == "order-4711-survey"
    assert reply.response == {"flow_token": "order-4711-survey", "rating": "4", "comment": "Parcel arrived dented"}
    assert msg.context is not None and msg.context.id.startswith("wamid.")
    assert msg.interactive.reply is None  # not a button or list reply


def test_location_shared_after_a_request_is_an_ordinary_location():
    env = W.parse_webhook((HOOKS / "inbound_location_shared.json").read_bytes())
    [item] = list(W.iter_messages(env))
    assert isinstance(item.message, W.LocationMessage)
    assert (item.message.location.latitude, item.message.location.longitude) == (52.520008, 13.404954)


def _nfm(response_json) -> bytes:
    doc = json.loads((HOOKS / "inbound_interactive_nfm_reply.json").read_bytes())
    doc["entry"][0]["changes"][0]["value"]["messages"][0]["interactive"]["nfm_reply"]["response_json"] = response_json
    return json.dumps(doc).encode()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.none(),
                 st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers()), max_size=4).map(json.dumps),
                 st.lists(st.integers(), max_size=3).map(json.dumps)))
def test_any_response_json_parses_and_is_kept_as_sent(raw):
    """Property: whatever Meta puts in response_json (not JSON, a list, absent), the webhook still
    parses, the string is kept exactly, and ``response`` is a dict or None — never an error."""
    env = W.parse_webhook(_nfm(raw))
    [item] = list(W.iter_messages(env))
    reply = item.message.interactive.nfm_reply
    assert reply.response_json == raw
    assert reply.response is None or isinstance(reply.response, dict)
    if reply.response is not None:
        assert reply.response == json.loads(raw)
