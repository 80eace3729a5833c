"""Meta error codes → typed errors, decided by code (not by HTTP status)."""

from __future__ import annotations

import json

import httpx
import pytest

from connectors.meta import errors as E

# What each code must mean for the caller, written out independently of errors.CODES (from
# meta-facts.md's table and Meta's error-code page). Adding a code to CODES without saying
# here what it means fails test_every_table_code_has_an_expectation.
EXPECTED: dict[int, type[E.MetaError]] = {
    # throttled: slow down, retry later
    130429: E.Throttled, 131056: E.PairRateLimited, 4: E.Throttled, 80007: E.Throttled, 131057: E.Throttled,
    17: E.Throttled, 32: E.Throttled, 613: E.Throttled, 132069: E.Throttled,
    133008: E.Throttled, 133009: E.Throttled, 133015: E.Throttled, 133016: E.Throttled,
    131048: E.SpamLimited,
    # transient: retry with backoff
    1: E.Transient, 2: E.Transient, 131000: E.Transient, 131016: E.Transient, 133004: E.Transient,
    # permanent
    131047: E.WindowClosed,
    131026: E.RecipientError, 131049: E.RecipientError, 131050: E.RecipientError, 131021: E.RecipientError, 131062: E.RecipientError,
    130472: E.RecipientError,
    131042: E.Permanent, 33: E.Permanent, 100: E.Permanent, 131008: E.Permanent, 131009: E.Permanent,
    131051: E.Permanent, 131052: E.Permanent, 131053: E.Permanent, 131055: E.Permanent, 131045: E.Permanent,
    131037: E.Permanent, 132068: E.Permanent, 133000: E.Permanent, 133005: E.Permanent, 133006: E.Permanent,
    135000: E.Permanent,
    132000: E.TemplateError, 132001: E.TemplateError, 132005: E.TemplateError, 132007: E.TemplateError,
    132012: E.TemplateError, 132015: E.TemplateError, 132016: E.TemplateError, 132018: E.TemplateError,
    # stop the number
    131031: E.NumberBlocked, 368: E.NumberBlocked, 130497: E.NumberBlocked, 133010: E.NumberBlocked,
    # stop the tenant
    190: E.AuthError, 10: E.AuthError, 200: E.AuthError, 0: E.AuthError, 3: E.AuthError, 131005: E.AuthError,
    **{c: E.AuthError for c in range(201, 300)},
}

RETRYABLE = {E.Throttled, E.PairRateLimited, E.SpamLimited, E.Transient}


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_code_maps_to_class(code):
    assert E.error_for(code) is EXPECTED[code]
    # and the status does not change the decision: throttling comes as 400 or 429
    for status in (400, 403, 429, 500):
        assert E.error_for(code, status) is EXPECTED[code]


def test_every_table_code_has_an_expectation():
    assert set(E.CODES) == set(EXPECTED)


@pytest.mark.parametrize("cls", sorted({*EXPECTED.values(), E.UnknownOutcome, E.MetaError}, key=lambda c: c.__name__))
def test_retryable_flag(cls):
    assert cls.retryable is (cls in RETRYABLE)


def test_hierarchy():
    assert issubclass(E.PairRateLimited, E.Throttled) and issubclass(E.SpamLimited, E.Throttled)
    for cls in (E.WindowClosed, E.TemplateError, E.RecipientError):
        assert issubclass(cls, E.Permanent)
    for cls in (E.Throttled, E.Transient, E.Permanent, E.NumberBlocked, E.AuthError, E.UnknownOutcome):
        assert issubclass(cls, E.MetaError) and issubclass(cls, Exception)
    assert not issubclass(E.UnknownOutcome, (E.Transient, E.Permanent))


@pytest.mark.parametrize(
    ("status", "cls"),
    [(429, E.Throttled), (500, E.Transient), (502, E.Transient), (503, E.Transient), (401, E.AuthError),
     (403, E.AuthError), (400, E.Permanent), (404, E.Permanent)],
)
def test_unknown_code_falls_back_on_status(status, cls):
    assert E.error_for(987654, status) is cls
    assert E.error_for(None, status) is cls


def _response(status: int, body, headers=None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers or {"content-type": "application/json"})


def _meta_error(code, message="(#x) msg", *, subcode=None, details=None, trace="AbCdEf123"):
    err = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": trace}
    if subcode is not None:
        err["error_subcode"] = subcode
    if details is not None:
        err["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return {"error": err}


def test_from_response_parses_all_fields():
    err = E.from_response(
        _response(400, _meta_error(131047, "(#131047) Re-engagement message", subcode=2494010, details="24 hours have passed")),
        endpoint="POST /{phone_number_id}/messages",
    )
    assert type(err) is E.WindowClosed
    assert (err.code, err.subcode, err.http_status, err.fbtrace_id) == (131047, 2494010, 400, "AbCdEf123")
    assert err.details == "24 hours have passed" and err.type == "OAuthException"
    assert err.message == "(#131047) Re-engagement message"
    assert "131047" in str(err) and "24 hours have passed" in str(err) and "AbCdEf123" in str(err)
    assert err.retryable is False
    record = err.to_dict()
    assert record["error_class"] == "WindowClosed" and record["code"] == 131047 and record["retryable"] is False


@pytest.mark.parametrize("status", [400, 429])
def test_throttling_by_code_whatever_the_status(status):
    assert type(E.from_response(_response(status, _meta_error(130429)))) is E.Throttled
    assert type(E.from_response(_response(status, _meta_error(131056)))) is E.PairRateLimited
    assert type(E.from_response(_response(status, _meta_error(4)))) is E.Throttled
    assert type(E.from_response(_response(status, _meta_error(80007)))) is E.Throttled


def test_code_wins_over_status():
    # a 500 carrying a permanent code stays permanent; a 400 carrying a transient code is transient
    assert type(E.from_response(_response(500, _meta_error(132001)))) is E.TemplateError
    assert type(E.from_response(_response(400, _meta_error(131000)))) is E.Transient
    assert type(E.from_response(_response(400, _meta_error("190")))) is E.AuthError  # code as string


def test_bodies_without_an_error_object():
    html = _response(502, b"<html>Bad Gateway</html>", {"content-type": "text/html"})
    err = E.from_response(html)
    assert type(err) is E.Transient and err.code is None and err.http_status == 502 and "Bad Gateway" in str(err)
    assert type(E.from_response(_response(400, b""))) is E.Permanent
    assert type(E.from_response(_response(429, {"unexpected": True}))) is E.Throttled


def test_error_data_as_json_string():
    body = {"error": {"message": "m", "code": 100, "error_data": json.dumps({"details": "Param to is required"})}}
    assert E.from_response(_response(400, body)).details == "Param to is required"


def test_retry_after_from_headers():
    err = E.from_response(_response(429, _meta_error(130429), {"retry-after": "7", "content-type": "application/json"}))
    assert err.retry_after == 7.0
    usage = json.dumps({"102290129340398": [{"type": "whatsapp", "call_count": 100, "estimated_time_to_regain_access": 3}]})
    err = E.from_response(_response(400, _meta_error(80007), {"x-business-use-case-usage": usage}))
    assert err.retry_after == 180.0
    err = E.from_response(_response(400, _meta_error(80007), {"x-business-use-case-usage": "not json"}))
    assert err.retry_after is None


def test_pair_rate_backoff_is_four_to_the_x():
    assert [E.PairRateLimited.backoff(x) for x in (1, 2, 3)] == [4.0, 16.0, 64.0]
    assert E.PairRateLimited.backoff(0) == 4.0


@pytest.mark.parametrize(
    ("exc", "idempotent", "cls"),
    [
        (httpx.ConnectError("refused"), False, E.Transient),
        (httpx.ConnectTimeout("slow"), False, E.Transient),
        (httpx.PoolTimeout("pool"), False, E.Transient),
        (httpx.ReadTimeout("read"), False, E.UnknownOutcome),
        (httpx.WriteTimeout("write"), False, E.UnknownOutcome),
        (httpx.ReadError("reset"), False, E.UnknownOutcome),
        (httpx.WriteError("reset"), False, E.UnknownOutcome),
        (httpx.RemoteProtocolError("disconnected"), False, E.UnknownOutcome),
        (httpx.ReadTimeout("read"), True, E.Transient),
        (httpx.ConnectError("refused"), True, E.Transient),
    ],
)
def test_transport_errors(exc, idempotent, cls):
    err = E.from_transport_error(exc, idempotent=idempotent, endpoint="POST /{phone_number_id}/messages")
    assert type(err) is cls and err.code is None


def test_phone_numbers_in_meta_text_are_masked_in_str_repr_and_dict():
    body = _meta_error(100, "(#100) Invalid parameter", details="Invalid parameter: to. '+49 151-1234 5678' is not a valid WhatsApp phone number.")
    err = E.from_response(_response(400, body))
    for text in (str(err), repr(err), json.dumps(err.to_dict())):
        assert "+49" not in text and "1234 5678" not in text
    assert "<number>" in json.dumps(err.to_dict())
    assert "(100)" in str(err) and "<number>" in str(err)
    assert "+49 151-1234 5678" in err.details  # the raw text is still there for who needs it
    assert E.mask_numbers("(#131047) Re-engagement message") == "(#131047) Re-engagement message"
    assert E.mask_numbers("to 4915112345678 failed") == "to <number> failed"
