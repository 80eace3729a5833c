"""The curated public surface of connectors.meta (changing it is a deliberate act)."""

import connectors.meta as meta


def test_public_api_is_pinned():
    assert sorted(meta.__all__) == sorted([
        "CallTiming", "GraphClient", "PhoneNumberInfo", "SendAccepted", "TemplateCreated", "TemplateInfo",
        "TokenExchange", "TokenInfo", "MediaInfo", "MediaTooLarge", "UploadSession",
        "CODES", "AuthError", "MetaError", "NumberBlocked", "PairRateLimited", "Permanent", "RecipientError",
        "SpamLimited", "TemplateError", "Throttled", "Transient", "UnknownOutcome", "WindowClosed", "error_for",
        "from_response",
        "AudioMessage", "BodyComponent", "Button", "ButtonComponent", "ButtonsMessage", "CurrencyParameter",
        "DateTimeParameter", "DocumentMessage", "HeaderComponent", "ImageMessage", "ListMessage", "ListRow",
        "ListSection", "LocationMessage", "MediaParameter", "OutboundMessage", "PayloadParameter", "ReactionMessage", "ReadReceipt",
        "StickerMessage", "TemplateMessage", "TextMessage", "TextParameter", "VideoMessage", "quick_reply_button", "url_button",
        "CarouselCard", "CarouselComponent", "CtaUrlMessage", "FlowMessage", "LocationRequestMessage", "MediaHeader",
        "InvalidWebhook", "WebhookEnvelope", "iter_errors", "iter_messages", "iter_other_changes", "iter_statuses",
        "parse_webhook",
        "sign", "verify", "verify_any",
    ])


def test_every_public_name_resolves():
    for name in meta.__all__:
        assert getattr(meta, name) is not None, name
