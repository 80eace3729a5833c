"""Outbound message builders: the exact bodies Meta expects, and Meta's limits enforced."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connectors.meta import messages as M

TO = "+4915112345678"


def test_text_body_and_envelope():
    body = M.TextMessage(to=TO, body="Hello", preview_url=True, biz_opaque_callback_data="cmd-1", reply_to="wamid.IN").to_request()
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "4915112345678",
        "type": "text",
        "text": {"body": "Hello", "preview_url": True},
        "context": {"message_id": "wamid.IN"},
        "biz_opaque_callback_data": "cmd-1",
    }


def test_text_limits():
    assert M.TextMessage(to=TO, body="x" * 4096).to_request()["text"]["body"] == "x" * 4096
    with pytest.raises(ValidationError, match="4096"):
        M.TextMessage(to=TO, body="x" * 4097)
    with pytest.raises(ValidationError):
        M.TextMessage(to=TO, body="")


@pytest.mark.parametrize("bad", ["", "abc", "+12", "49 151 abc", "1" * 16])
def test_recipient_must_be_a_phone_number(bad):
    with pytest.raises(ValidationError, match="international format"):
        M.TextMessage(to=bad, body="x")


def test_recipient_is_normalised():
    assert M.TextMessage(to="+49 151-123 45678", body="x").to == "4915112345678"


def test_opaque_callback_data_limit():
    M.TextMessage(to=TO, body="x", biz_opaque_callback_data="a" * 512)
    with pytest.raises(ValidationError):
        M.TextMessage(to=TO, body="x", biz_opaque_callback_data="a" * 513)


@pytest.mark.parametrize("cls", [M.ImageMessage, M.VideoMessage, M.DocumentMessage])
def test_media_with_caption_by_id_or_link(cls):
    by_id = cls(to=TO, id="1479537139650973", caption="c" * 1024).to_request()
    assert by_id["type"] == cls.type and by_id[cls.type] == {"id": "1479537139650973", "caption": "c" * 1024}
    by_link = cls(to=TO, link="https://example.com/a.jpg").to_request()
    assert by_link[cls.type] == {"link": "https://example.com/a.jpg"}
    with pytest.raises(ValidationError, match="1024"):
        cls(to=TO, id="1", caption="c" * 1025)
    with pytest.raises(ValidationError, match="exactly one"):
        cls(to=TO, id="1", link="https://example.com/a.jpg")
    with pytest.raises(ValidationError, match="exactly one"):
        cls(to=TO)
    with pytest.raises(ValidationError, match="http"):
        cls(to=TO, link="ftp://example.com/a.jpg")


def test_document_filename_and_audio_without_caption():
    doc = M.DocumentMessage(to=TO, id="9", caption="Invoice", filename="inv.pdf").to_request()
    assert doc["document"] == {"id": "9", "caption": "Invoice", "filename": "inv.pdf"}
    assert M.AudioMessage(to=TO, id="7").to_request()["audio"] == {"id": "7"}
    with pytest.raises(ValidationError):
        M.AudioMessage(to=TO, id="7", caption="no captions on audio")


def test_reply_buttons():
    msg = M.ButtonsMessage(
        to=TO, header="Delivery", body="Confirm your slot?", footer="Reply STOP to opt out",
        buttons=[M.Button(id="yes", title="Yes"), M.Button(id="no", title="No")],
    )
    assert msg.to_request()["interactive"] == {
        "type": "button",
        "header": {"type": "text", "text": "Delivery"},
        "body": {"text": "Confirm your slot?"},
        "footer": {"text": "Reply STOP to opt out"},
        "action": {"buttons": [
            {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
            {"type": "reply", "reply": {"id": "no", "title": "No"}},
        ]},
    }


def test_reply_button_limits():
    three = [M.Button(id=str(i), title=f"B{i}") for i in range(3)]
    M.ButtonsMessage(to=TO, body="b", buttons=three)
    with pytest.raises(ValidationError, match="at most 3"):
        M.ButtonsMessage(to=TO, body="b", buttons=[*three, M.Button(id="4", title="B4")])
    with pytest.raises(ValidationError):
        M.Button(id="x", title="t" * 21)
    M.Button(id="x", title="t" * 20)
    with pytest.raises(ValidationError, match="unique"):
        M.ButtonsMessage(to=TO, body="b", buttons=[M.Button(id="a", title="Same"), M.Button(id="b", title="Same")])
    with pytest.raises(ValidationError):
        M.ButtonsMessage(to=TO, body="b", buttons=[])


def _rows(n, prefix="r"):
    return [M.ListRow(id=f"{prefix}{i}", title=f"Row {i}") for i in range(n)]


def test_list_message_body():
    msg = M.ListMessage(to=TO, body="Pick a slot", button="Slots", sections=[
        M.ListSection(title="Morning", rows=[M.ListRow(id="0900", title="09:00", description="Tomorrow")]),
        M.ListSection(title="Evening", rows=[M.ListRow(id="1800", title="18:00")]),
    ])
    assert msg.to_request()["interactive"] == {
        "type": "list",
        "body": {"text": "Pick a slot"},
        "action": {"button": "Slots", "sections": [
            {"title": "Morning", "rows": [{"id": "0900", "title": "09:00", "description": "Tomorrow"}]},
            {"title": "Evening", "rows": [{"id": "1800", "title": "18:00"}]},
        ]},
    }


def test_list_limits():
    M.ListMessage(to=TO, body="b", button="Go", sections=[M.ListSection(title="A", rows=_rows(5, "a")), M.ListSection(title="B", rows=_rows(5, "b"))])
    with pytest.raises(ValidationError, match="at most 10 rows"):
        M.ListMessage(to=TO, body="b", button="Go", sections=[M.ListSection(title="A", rows=_rows(6, "a")), M.ListSection(title="B", rows=_rows(5, "b"))])
    with pytest.raises(ValidationError, match="title"):
        M.ListMessage(to=TO, body="b", button="Go", sections=[M.ListSection(rows=_rows(1, "a")), M.ListSection(rows=_rows(1, "b"))])
    with pytest.raises(ValidationError, match="unique"):
        M.ListMessage(to=TO, body="b", button="Go", sections=[M.ListSection(title="A", rows=_rows(2)), M.ListSection(title="B", rows=_rows(2))])
    with pytest.raises(ValidationError):
        M.ListMessage(to=TO, body="b", button="b" * 21, sections=[M.ListSection(rows=_rows(1))])
    with pytest.raises(ValidationError):
        M.ListRow(id="x", title="t" * 25)


def test_reaction_and_read_receipt():
    assert M.ReactionMessage(to=TO, message_id="wamid.IN", emoji="\U0001F44D").to_request()["reaction"] == {
        "message_id": "wamid.IN", "emoji": "\U0001F44D"}
    assert M.ReactionMessage(to=TO, message_id="wamid.IN", emoji="").to_request()["reaction"]["emoji"] == ""
    assert M.ReadReceipt(message_id="wamid.IN").to_request() == {
        "messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"}
    assert M.ReadReceipt(message_id="wamid.IN", typing_indicator=True).to_request()["typing_indicator"] == {"type": "text"}


def test_template_positional():
    msg = M.TemplateMessage(
        to=TO, name="order_shipped", language="en_US", biz_opaque_callback_data="cmd-9",
        components=[
            M.HeaderComponent(parameters=[M.MediaParameter(kind="document", id="55", filename="label.pdf")]),
            M.BodyComponent(parameters=[
                M.TextParameter(text="Kerry"),
                M.CurrencyParameter(fallback_value="€12.50", code="EUR", amount_1000=12500),
                M.DateTimeParameter(fallback_value="Friday"),
            ]),
            M.url_button(0, "A-1042/track?x=1 2"),
            M.quick_reply_button(1, "STOP"),
        ],
    )
    assert msg.to_request() == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "4915112345678",
        "type": "template",
        "template": {
            "name": "order_shipped",
            "language": {"code": "en_US"},
            "components": [
                {"type": "header", "parameters": [{"type": "document", "document": {"id": "55", "filename": "label.pdf"}}]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": "Kerry"},
                    {"type": "currency", "currency": {"fallback_value": "€12.50", "code": "EUR", "amount_1000": 12500}},
                    {"type": "date_time", "date_time": {"fallback_value": "Friday"}},
                ]},
                {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "A-1042%2Ftrack%3Fx%3D1%202"}]},
                {"type": "button", "sub_type": "quick_reply", "index": "1", "parameters": [{"type": "payload", "payload": "STOP"}]},
            ],
        },
        "biz_opaque_callback_data": "cmd-9",
    }


def test_template_named_parameters():
    msg = M.TemplateMessage(to=TO, name="welcome", language="de", components=[
        M.BodyComponent(parameters=[M.TextParameter(text="Jana", parameter_name="first_name"),
                                    M.TextParameter(text="A-1", parameter_name="order_id")]),
    ])
    params = msg.to_request()["template"]["components"][0]["parameters"]
    assert params == [{"type": "text", "text": "Jana", "parameter_name": "first_name"},
                      {"type": "text", "text": "A-1", "parameter_name": "order_id"}]


def test_template_without_components():
    assert M.TemplateMessage(to=TO, name="hello_world", language="en_US").to_request()["template"] == {
        "name": "hello_world", "language": {"code": "en_US"}}


def test_template_validation():
    with pytest.raises(ValidationError, match="mix of named and positional"):
        M.BodyComponent(parameters=[M.TextParameter(text="a", parameter_name="x"), M.TextParameter(text="b")])
    with pytest.raises(ValidationError, match="duplicate"):
        M.BodyComponent(parameters=[M.TextParameter(text="a", parameter_name="x"), M.TextParameter(text="b", parameter_name="x")])
    for bad in ("two\nlines", "tab\there", "five     spaces"):
        with pytest.raises(ValidationError, match="newlines, tabs"):
            M.BodyComponent(parameters=[M.TextParameter(text=bad)])
    M.BodyComponent(parameters=[M.TextParameter(text="four    spaces ok")])
    with pytest.raises(ValidationError, match="60"):
        M.HeaderComponent(parameters=[M.TextParameter(text="h" * 61)])
    with pytest.raises(ValidationError):
        M.TemplateMessage(to=TO, name="Bad-Name", language="en_US")
    with pytest.raises(ValidationError, match="one header"):
        M.TemplateMessage(to=TO, name="t", language="en", components=[
            M.BodyComponent(parameters=[M.TextParameter(text="a")]), M.BodyComponent(parameters=[M.TextParameter(text="b")])])
    with pytest.raises(ValidationError, match="same index"):
        M.TemplateMessage(to=TO, name="t", language="en", components=[M.url_button(0, "a"), M.url_button(0, "b")])
    with pytest.raises(ValidationError):
        M.url_button(10, "x")
    with pytest.raises(ValidationError, match="filename"):
        M.MediaParameter(kind="image", id="1", filename="x.png")


def test_models_are_frozen():
    msg = M.TextMessage(to=TO, body="x")
    with pytest.raises(ValidationError):
        msg.body = "changed"  # type: ignore[misc]


def test_sticker_and_location():
    assert M.StickerMessage(to=TO, id="77").to_request()["sticker"] == {"id": "77"}
    with pytest.raises(ValidationError):
        M.StickerMessage(to=TO, id="77", caption="no")
    loc = M.LocationMessage(to=TO, latitude=52.52, longitude=13.405, name="Depot", address="Alexanderplatz 1").to_request()
    assert loc["type"] == "location" and loc["location"] == {"latitude": 52.52, "longitude": 13.405, "name": "Depot", "address": "Alexanderplatz 1"}
    with pytest.raises(ValidationError):
        M.LocationMessage(to=TO, latitude=91, longitude=0)
