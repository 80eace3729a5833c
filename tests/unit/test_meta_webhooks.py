"""Webhook parsing of every fixture; unknown fields, fields and types kept, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.meta import webhooks as W

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))
PNID = "106540352242922"
WABA = "102290129340398"


def load(name: str) -> W.WebhookEnvelope:
    return W.parse_webhook((FIXTURES / f"{name}.json").read_bytes())


def _walk_keys(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*path, k)
            yield from _walk_keys(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_keys(v, (*path, i))


def test_there_is_a_fixture_per_variant():
    expected = {
        "status_sent", "status_delivered", "status_read", "status_failed", "status_played", "status_pricing_pmp",
        "status_conversation_v23", "inbound_text", "inbound_image", "inbound_audio", "inbound_video", "inbound_document",
        "inbound_sticker", "inbound_location", "inbound_contacts", "inbound_interactive_button_reply",
        "inbound_interactive_list_reply", "inbound_interactive_nfm_reply", "inbound_location_shared", "inbound_button", "inbound_reaction", "inbound_order", "inbound_system",
        "inbound_unsupported", "batch_mixed", "template_approved", "template_rejected", "template_paused",
        "template_disabled", "quality_flagged", "quality_throughput_upgrade", "account_partner_added",
        "account_violation", "unknown_field", "unknown_extra_keys",
    }
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_every_fixture_parses_and_round_trips_without_loss(name):
    raw = json.loads((FIXTURES / f"{name}.json").read_text())
    env = load(name)
    assert env.object == "whatsapp_business_account"
    dumped = env.model_dump(mode="json", by_alias=True, exclude_unset=True)
    # every key Meta sent is still there after parsing (known or not)
    assert set(_walk_keys(raw)) <= set(_walk_keys(dumped))


@pytest.mark.parametrize(
    ("name", "status"),
    [("status_sent", "sent"), ("status_delivered", "delivered"), ("status_read", "read"), ("status_played", "played")],
)
def test_statuses(name, status):
    [item] = list(W.iter_statuses(load(name)))
    assert item.waba_id == WABA and item.metadata.phone_number_id == PNID
    assert item.status.status == status and item.status.id.startswith("wamid.")
    assert item.status.recipient_id == "16505551234" and item.status.biz_opaque_callback_data == "cmd-7f3a2c"
    assert isinstance(item.status.timestamp, int) and item.status.timestamp > 1_700_000_000
    assert not item.status.errors


def test_status_with_conversation_and_pricing():
    s = next(W.iter_statuses(load("status_sent"))).status
    assert s.conversation.id == "a75d17ad06104c51166f948319b03c6a"
    assert s.conversation.origin.type == "utility" and s.conversation.expiration_timestamp == 1750943820
    assert (s.pricing.billable, s.pricing.pricing_model, s.pricing.category) == (True, "CBP", "utility")
    v23 = next(W.iter_statuses(load("status_conversation_v23"))).status
    assert v23.conversation.origin.type == "marketing"


def test_status_pricing_pmp():
    s = next(W.iter_statuses(load("status_pricing_pmp"))).status
    assert s.conversation is None
    assert (s.pricing.pricing_model, s.pricing.type, s.pricing.billable) == ("PMP", "free_customer_service", False)


def test_status_failed_with_errors():
    s = next(W.iter_statuses(load("status_failed"))).status
    assert s.status == "failed"
    [err] = s.errors
    assert err.code == 131049 and "ecosystem" in err.title and "healthy ecosystem" in err.details
    assert next(W.iter_statuses(load("status_failed_rate_limit"))).status.errors[0].code == 130429


def test_value_level_errors():
    [item] = list(W.iter_errors(load("value_errors")))
    assert item.error.code == 130429 and item.metadata.phone_number_id == PNID
    assert not list(W.iter_statuses(load("value_errors"))) and not list(W.iter_messages(load("value_errors")))


def _only_message(name):
    [item] = list(W.iter_messages(load(name)))
    return item


def test_inbound_text_with_contact():
    item = _only_message("inbound_text")
    assert isinstance(item.message, W.TextMessage)
    assert item.message.from_ == "16505551234" and item.message.text.body.startswith("Hi")
    assert item.contact.wa_id == "16505551234" and item.contact.profile.name == "Kerry Fisher"
    assert item.message.context is None
    reply = _only_message("inbound_text_reply").message
    assert reply.context.id.startswith("wamid.") and reply.context.from_ == "15550783881"


@pytest.mark.parametrize(
    ("name", "kind", "check"),
    [
        ("inbound_image", "image", lambda m: m.caption == "The damaged box" and m.mime_type == "image/jpeg"),
        ("inbound_audio", "audio", lambda m: m.voice is True and m.caption is None),
        ("inbound_video", "video", lambda m: m.mime_type == "video/mp4"),
        ("inbound_document", "document", lambda m: m.filename == "invoice-2025-0142.pdf"),
        ("inbound_sticker", "sticker", lambda m: m.animated is False and m.mime_type == "image/webp"),
    ],
)
def test_inbound_media(name, kind, check):
    msg = _only_message(name).message
    assert isinstance(msg, W.MediaMessage) and msg.type == kind
    assert msg.media is getattr(msg, kind) and msg.media.id and msg.media.sha256
    assert check(msg.media)


def test_inbound_location_contacts_reaction_order_system():
    loc = _only_message("inbound_location").message
    assert isinstance(loc, W.LocationMessage) and loc.location.latitude == pytest.approx(37.483307)
    shared = _only_message("inbound_contacts").message
    assert isinstance(shared, W.ContactsMessage)
    assert shared.contacts[0].name["formatted_name"] == "Barbara J. Johnson" and shared.contacts[0].phones[0]["wa_id"] == "16505551234"
    reaction = _only_message("inbound_reaction").message
    assert isinstance(reaction, W.ReactionMessage) and reaction.reaction.message_id.startswith("wamid.")
    order = _only_message("inbound_order").message
    assert isinstance(order, W.OrderMessage) and order.order.catalog_id == "194836987003835"
    assert [(p.product_retailer_id, p.quantity, p.item_price) for p in order.order.product_items] == [("SKU-1001", 2, 12.5), ("SKU-2002", 1, 30.0)]
    system = _only_message("inbound_system")
    assert isinstance(system.message, W.SystemMessage) and system.message.system.type == "user_changed_number"
    assert system.message.system.new_wa_id == "16505559999" and system.contact is None


def test_inbound_interactive_and_button():
    button_reply = _only_message("inbound_interactive_button_reply").message
    assert isinstance(button_reply, W.InteractiveMessage)
    assert button_reply.interactive.type == "button_reply" and button_reply.interactive.reply.id == "confirm-yes"
    list_reply = _only_message("inbound_interactive_list_reply").message
    assert list_reply.interactive.reply.id == "slot-0900" and list_reply.interactive.reply.description == "Tomorrow morning"
    quick = _only_message("inbound_button").message
    assert isinstance(quick, W.ButtonMessage) and quick.button.payload == "STOP_PROMOTIONS"
    assert quick.context.id.startswith("wamid.")


def test_inbound_unsupported_and_unknown_type():
    unsupported = _only_message("inbound_unsupported").message
    assert isinstance(unsupported, W.UnsupportedMessage) and unsupported.errors[0].code == 131051
    other = _only_message("unknown_message_type").message
    assert isinstance(other, W.OtherMessage) and other.type == "request_welcome"


def test_batch_matches_contacts_and_keeps_order():
    env = load("batch_mixed")
    statuses = list(W.iter_statuses(env))
    assert [(s.status.status, s.status.biz_opaque_callback_data) for s in statuses] == [
        ("sent", "cmd-0001"), ("read", "cmd-0002"), ("delivered", "cmd-0001"), ("failed", "cmd-0003")]
    assert statuses[-1].waba_id == "209876543210987" and statuses[-1].metadata.phone_number_id == "301234567890123"
    assert statuses[-1].status.errors[0].code == 131026
    messages = list(W.iter_messages(env))
    assert [(m.message.text.body, m.contact.profile.name) for m in messages] == [
        ("first", "Kerry Fisher"), ("zweite Nachricht", "Jana Schmidt")]


def _only_other(name):
    [item] = list(W.iter_other_changes(load(name)))
    assert item.waba_id == WABA
    return item


def test_template_status_updates():
    approved = _only_other("template_approved")
    assert approved.field == "message_template_status_update" and isinstance(approved.value, W.TemplateStatusUpdate)
    assert approved.value.event == "APPROVED" and approved.value.message_template_id == "594425479261596"  # int in payload
    assert approved.value.message_template_name == "order_shipped" and approved.value.message_template_language == "en_US"
    assert _only_other("template_rejected").value.reason == "INVALID_FORMAT"
    paused = _only_other("template_paused").value
    assert paused.event == "PAUSED" and paused.other_info["title"] == "FIRST_PAUSE" and paused.reason is None
    assert _only_other("template_disabled").value.event == "DISABLED"


def test_quality_updates():
    flagged = _only_other("quality_flagged").value
    assert isinstance(flagged, W.QualityUpdate) and flagged.event == "FLAGGED" and flagged.limit == "TIER_2K"
    upgrade = _only_other("quality_throughput_upgrade").value
    assert upgrade.event == "THROUGHPUT_UPGRADE" and upgrade.limit == "TIER_UNLIMITED"
    assert _only_other("quality_limit_upgrade").value.old_limit == "TIER_2K"


def test_account_updates():
    added = _only_other("account_partner_added").value
    assert isinstance(added, W.AccountUpdate) and added.event == "PARTNER_ADDED"
    assert added.waba_info.waba_id == WABA and added.waba_info.partner_app_id == "987654321098765"
    violation = _only_other("account_violation").value
    assert violation.event == "ACCOUNT_VIOLATION" and violation.violation_info["violation_type"] == "SCAM"
    assert _only_other("account_restriction").value.restriction_info[0]["restriction_type"].startswith("RESTRICTED")


def test_unknown_field_is_kept():
    item = _only_other("unknown_field")
    assert item.field == "business_capability_update" and isinstance(item.value, W.GenericValue)
    assert item.value.model_extra == {"max_daily_conversation_per_phone": 2000, "max_phone_numbers_per_business": 2,
                                      "max_daily_conversations_per_business": "TIER_2K"}
    assert not list(W.iter_statuses(load("unknown_field")))


def test_unknown_keys_are_retrievable_everywhere():
    env = load("unknown_extra_keys")
    assert env.model_extra == {"envelope_version": 2}
    assert env.entry[0].model_extra == {"extra_entry_key": "kept too"}
    value = env.entry[0].changes[0].value
    assert value.model_extra == {"brand_new_value_key": "kept"}
    # BSUID fields are named since username users (issue 20): read, not left in extras
    assert value.contacts[0].model_extra == {} and value.contacts[0].user_id == "US.13491208655302741918"
    assert value.contacts[0].profile.model_extra == {} and value.contacts[0].profile.username == "@kerry"
    status = value.statuses[0]
    assert status.recipient_type == "individual"
    assert status.recipient_user_id == "US.13491208655302741918"
    assert status.model_extra == {"new_status_field": {"nested": [1, 2, 3]}}
    message = value.messages[0]
    assert message.model_extra == {"future_flag": True} and message.text.model_extra == {"markup": "plain"}


def test_models_are_frozen():
    status = next(W.iter_statuses(load("status_sent"))).status
    with pytest.raises(Exception):
        status.status = "read"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "not a webhook envelope"),
        (b'{"entry": []}', "object"),
        (b'{"object": "whatsapp_business_account", "entry": [{"changes": []}]}', "entry.0.id"),
        (b'{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {"statuses": []}}]}]}',
         "metadata"),
    ],
)
def test_invalid_bodies_give_a_short_reason(raw, reason):
    with pytest.raises(W.InvalidWebhook) as info:
        W.parse_webhook(raw)
    assert reason in info.value.reason and isinstance(info.value, ValueError)


def test_reason_never_quotes_payload_content():
    raw = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "1"},
                                         "messages": [{"from": "16505551234", "type": "text", "text": {"body": "secret text"}}]}}]}]})
    with pytest.raises(W.InvalidWebhook) as info:
        W.parse_webhook(raw)
    assert "secret text" not in info.value.reason and "16505551234" not in info.value.reason


def test_window_closed_failure_and_account_ban():
    s = next(W.iter_statuses(load("status_failed_window_closed"))).status
    assert s.status == "failed" and s.errors[0].code == 131047 and "24 hours" in s.errors[0].details
    ban = _only_other("account_disabled").value
    assert ban.event == "DISABLED_UPDATE" and ban.ban_info["waba_ban_state"] == ["DISABLE"]
