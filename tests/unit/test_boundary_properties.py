"""Property tests of the pure parts of the HTTP boundaries: whatever a caller sends, each either
accepts it or refuses it with its own error type — never another exception (which the servers
turn into a 500)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from connectors.meta.signature import sign, verify, verify_any
from producers.ingress import signed_request as sr
from producers.ingress.envelope import KEY_MAX, Malformed, routing_key
from tests.strategies import ANY_BODIES, ANY_JSON, IDS, JSON_BODIES, SIGNATURE_HEADERS, WEBHOOK, dumps
from wapipe.http_input import BadInput, parse_json
from wapipe.privacy.api import CorrectionIn, RequestIn
from wapipe.tenants.api import DisconnectBody, OnboardBody, PatchBody, ResumeBody
from wapipe.tenants.models import AVRO_INT_MAX, HIGH_MPS, RETENTION_MAX_DAYS

SECRETS = {"app-a": b"secret-a", "app-b": b"secret-b"}
PROPS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- X-Hub-Signature-256 ---------------------------------------------------------------------
@PROPS
@given(body=ANY_BODIES, header=SIGNATURE_HEADERS)
@example(body=b"{}", header="sha256=\xe9".encode("latin-1"))  # the fuzzed 500: non-ASCII, unsigned
@example(body=b"{}", header=b"sha256=" + "é".encode() * 32)
def test_any_signature_header_is_a_yes_or_no(body, header):
    right = {app for app, secret in SECRETS.items() if hmac.compare_digest(
        header.strip().lower(), sign(secret, body).encode())}
    for value in (header.decode("latin-1"), header):  # as a str (latin-1, as servers decode), or bytes
        got = verify_any(SECRETS, body, value)
        assert got is None if not right else got in right
        assert verify(SECRETS["app-a"], body, value) == ("app-a" in right)


@PROPS
@given(body=ANY_BODIES, secret=st.binary(min_size=1, max_size=40), upper=st.booleans())
def test_a_real_signature_always_verifies(body, secret, upper):
    header = sign(secret, body)
    header = "sha256=" + (header[7:].upper() if upper else header[7:])
    assert verify_any({"app": secret}, body, header) == "app"
    assert verify_any({"app": secret}, body + b" ", header) is None


# --- the webhook envelope ------------------------------------------------------------------------
def _check_routing(body: bytes) -> None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = Malformed
    try:
        routing = routing_key(body)
    except Malformed:
        assert doc is Malformed or not isinstance(doc, dict)
        return
    assert isinstance(doc, dict)
    assert routing.key_kind in ("phone_number_id", "waba_id", "none")
    assert (routing.key is None) == (routing.key_kind == "none")
    if routing.key is not None:
        assert 1 <= len(routing.key.decode()) <= KEY_MAX


@PROPS
@given(body=ANY_BODIES)
@example(body=b'{"entry":[{"changes":5}]}')  # the fuzzed 500: "changes" not a list
@example(body=b'{"entry":[{"id":"1","changes":{"value":1}}]}')
@example(body=b"[" * 100_000)
def test_any_body_is_routed_or_malformed(body):
    _check_routing(body)


@PROPS
@given(doc=WEBHOOK)
def test_any_webhook_shaped_object_is_routed(doc):
    routing = routing_key(dumps(doc)) if _fits_orjson(doc) else None
    if routing is not None:
        _check_routing(dumps(doc))


@PROPS
@given(pnid=st.from_regex(r"\A[0-9]{1,20}\Z"), waba=IDS, other=ANY_JSON)
def test_a_real_phone_number_id_is_the_key_whatever_else_is_there(pnid, waba, other):
    doc = {"object": other, "entry": [{"id": waba, "changes": [
        {"field": "messages", "value": other}, {"field": "messages", "value": {"metadata": {"phone_number_id": pnid}}}]}]}
    assume(_fits_orjson(doc))
    routing = routing_key(dumps(doc))
    assert (routing.key, routing.key_kind) == (pnid.encode(), "phone_number_id")


def _fits_orjson(doc: object) -> bool:
    """orjson (the ingress's parser) takes integers up to 64 bits; a body with a bigger one is
    dead-lettered as malformed, which the first property covers."""
    try:
        orjson.loads(dumps(doc))
        return True
    except orjson.JSONDecodeError:
        return False


# --- signed_request ------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _signed(payload: bytes, secret: bytes = SECRETS["app-a"]) -> str:
    enc = _b64(payload)
    return f"{_b64(hmac.new(secret, enc.encode(), hashlib.sha256).digest())}.{enc}"


def _parse(value: str | None) -> sr.SignedRequest | None:
    try:
        got = sr.parse(value, SECRETS, max_age_s=3600, now=1_800_000_000)
    except sr.InvalidSignedRequest as exc:
        assert str(exc)  # a reason to show
        return None
    assert got.app_id in SECRETS and 1 <= len(got.user_id) <= sr.USER_ID_MAX
    return got


@PROPS
@given(value=st.text(max_size=200) | st.none()
       | st.tuples(st.text(max_size=60), st.text(max_size=120)).map(".".join))
@example(value="é.é")
@example(value="\x00.\x00")
def test_any_signed_request_string_parses_or_is_refused(value):
    assert _parse(value) is None  # not signed with our secrets: never accepted


PAYLOADS = st.fixed_dictionaries(
    {"algorithm": st.sampled_from(["HMAC-SHA256", "hmac-sha256"]) | ANY_JSON},
    optional={"issued_at": ANY_JSON | st.integers(), "expires": ANY_JSON | st.integers(),
              "user_id": IDS, "extra": ANY_JSON})


@PROPS
@given(payload=PAYLOADS | ANY_JSON)
@example(payload={"algorithm": "HMAC-SHA256", "user_id": "1", "issued_at": "9" * 5000})
@example(payload={"algorithm": "HMAC-SHA256", "user_id": {"a": 1}})
@example(payload={"algorithm": "HMAC-SHA256", "user_id": "../../etc/passwd"})
def test_any_signed_payload_parses_or_is_refused(payload):
    got = _parse(_signed(dumps(payload)))
    if got is not None:
        assert isinstance(payload, dict) and str(payload["user_id"]) == got.user_id


@PROPS
@given(payload=st.binary(max_size=200))
def test_signed_garbage_is_refused(payload):
    assume(not payload.lstrip().startswith(b"{"))
    assert _parse(_signed(payload)) is None


def test_a_valid_signed_request_still_parses():
    now = int(time.time())
    got = sr.parse(_signed(dumps({"algorithm": "HMAC-SHA256", "issued_at": now, "user_id": "10158000000001"})),
                   SECRETS, max_age_s=3600)
    assert (got.app_id, got.user_id, got.issued_at) == ("app-a", "10158000000001", now)


# --- admin and privacy request models ------------------------------------------------------------
MODELS = (OnboardBody, ResumeBody, PatchBody, DisconnectBody, RequestIn, CorrectionIn)
FIELDS = st.sampled_from(["tenant_id", "code", "app_id", "waba_id", "pin", "display_name", "retention_days",
                          "throughput_mps", "status", "messaging_limit", "reason", "kind", "wa_id",
                          "subject_id", "field", "value"])
HOSTILE = (ANY_JSON | IDS | st.integers(min_value=-(10**30), max_value=10**30)
           | st.dictionaries(st.text(max_size=70) | st.sampled_from(["content", "audit", "123"]),
                             st.integers(min_value=-(10**30), max_value=10**30), max_size=3)
           | st.builds(lambda n: "x" * n, st.integers(min_value=0, max_value=20_000)))
BODIES = st.dictionaries(FIELDS, HOSTILE, max_size=6).map(dumps) | JSON_BODIES | st.binary(max_size=100)


def _bounded(value: object) -> None:
    """Every string, number and collection a model accepted is within the documented bounds."""
    if isinstance(value, str):
        assert len(value) <= 4096
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        assert -1 < value <= AVRO_INT_MAX
    elif isinstance(value, dict):
        assert len(value) <= 1000
        for k, v in value.items():
            _bounded(k)
            _bounded(v)
    else:
        raise AssertionError(f"unexpected {type(value).__name__}")


@PROPS
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@given(raw=BODIES)
@example(raw=b'{"messaging_limit": 1000000000000000000000000000000}')
@example(raw=b'{"throughput_mps": {"123": 1000000000000000000000000000000}}')
@example(raw=b'{"retention_days": {"content": 1000000000000000000000000000000}}')
@example(raw=b"[" * 100_000)
@example(raw=b'{"tenant_id": "../../etc/passwd", "code": "c"}')
def test_request_models_accept_only_bounded_values(model, raw):
    try:
        body = parse_json(raw, model)
    except BadInput as exc:
        assert exc.status == 400 and str(exc)
        return
    data = body.model_dump()
    for value in data.values():
        _bounded(value)
    if model is PatchBody:
        assert all(1 <= d <= RETENTION_MAX_DAYS for d in (body.retention_days or {}).values())
        assert all(1 <= m <= HIGH_MPS for m in (body.throughput_mps or {}).values())
    for name in ("tenant_id", "app_id", "waba_id", "subject_id"):
        assert "/" not in str(data.get(name) or "")


# --- the privacy export reads every stored raw body ----------------------------------------------
@PROPS
@given(body=ANY_BODIES | WEBHOOK.map(dumps))
@example(body=b"[" * 100_000)  # dead-lettered by the ingress; made every export a 500
@example(body=b'{"entry":[{"changes":[{"value":{"metadata":{"phone_number_id":"1"},"messages":[{"from":5}]}}]}]}')
def test_the_export_reads_any_stored_raw_body(body):
    from wapipe.privacy.export import own_raw_items

    items = own_raw_items(body, subject_id="s", subject_of=lambda wa: "s" if wa == "15550001" else "x",
                          owns_number=lambda pnid: True)
    assert isinstance(items, list)
