"""The ingress's two parsers: Meta's signed_request and the webhook partition key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from producers.ingress import signed_request as sr
from producers.ingress.envelope import Malformed, routing_key

SECRETS = {"app-a": b"secret-a", "app-b": b"secret-b"}


def meta_style(secret: bytes, payload: dict) -> str:
    """Built independently of sr.encode, exactly as Meta documents it."""
    enc = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    sig = base64.urlsafe_b64encode(hmac.new(secret, enc.encode(), hashlib.sha256).digest()).decode().rstrip("=")
    return f"{sig}.{enc}"


def test_parses_a_meta_signed_request_and_names_the_app():
    now = int(time.time())
    got = sr.parse(meta_style(b"secret-b", {"algorithm": "HMAC-SHA256", "issued_at": now, "user_id": "218471"}),
                   SECRETS, max_age_s=3600)
    assert (got.app_id, got.user_id, got.issued_at) == ("app-b", "218471", now)


def test_encode_round_trips():
    s = sr.encode(b"secret-a", {"algorithm": "HMAC-SHA256", "user_id": "1"})
    assert sr.parse(s, SECRETS, max_age_s=60).user_id == "1"


@pytest.mark.parametrize("value, why", [
    (meta_style(b"other", {"algorithm": "HMAC-SHA256", "user_id": "1"}), "bad signature"),
    (meta_style(b"secret-a", {"algorithm": "HMAC-SHA1", "user_id": "1"}), "unsupported algorithm"),
    (meta_style(b"secret-a", {"user_id": "1"}), "unsupported algorithm"),
    (meta_style(b"secret-a", {"algorithm": "HMAC-SHA256", "user_id": "1", "expires": 1000}), "expired"),
    (meta_style(b"secret-a", {"algorithm": "HMAC-SHA256", "user_id": "1", "issued_at": 1000}), "expired"),
    (meta_style(b"secret-a", {"algorithm": "HMAC-SHA256"}), "no user_id"),
    ("abc", "not <signature>.<payload>"),
    ("a.b.c", "not <signature>.<payload>"),
    ("", "not <signature>.<payload>"),
])
def test_refuses(value, why):
    with pytest.raises(sr.InvalidSignedRequest, match=why):
        sr.parse(value, SECRETS, max_age_s=3600)


def test_a_signature_over_a_different_payload_is_refused():
    sig, _ = meta_style(b"secret-a", {"algorithm": "HMAC-SHA256", "user_id": "1"}).split(".")
    _, other = meta_style(b"secret-a", {"algorithm": "HMAC-SHA256", "user_id": "2"}).split(".")
    with pytest.raises(sr.InvalidSignedRequest, match="bad signature"):
        sr.parse(f"{sig}.{other}", SECRETS, max_age_s=3600)


def _env(*entries):
    return json.dumps({"object": "whatsapp_business_account", "entry": list(entries)}).encode()


def test_key_is_the_first_phone_number_id():
    body = _env({"id": "W1", "changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "P1"}}}]})
    assert routing_key(body).key == b"P1"


def test_key_falls_back_to_the_waba_id():
    body = _env({"id": "W9", "changes": [{"field": "message_template_status_update", "value": {"event": "APPROVED"}}]})
    r = routing_key(body)
    assert (r.key, r.key_kind) == (b"W9", "waba_id")


@pytest.mark.parametrize("body", [b'{"object": "x"}', b'{"entry": "x"}', b'{"entry": [1, {"changes": [2]}]}'])
def test_odd_but_valid_objects_are_kept_without_a_key(body):
    assert routing_key(body).key is None


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"s"', b"\xff\xfe"])
def test_not_a_json_object_is_malformed(body):
    with pytest.raises(Malformed):
        routing_key(body)
