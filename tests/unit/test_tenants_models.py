"""Tenant models: Avro round trips, the sealed token, limits mapping, parsing of operator input."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import SecretStr, ValidationError

from connectors.meta.client import PhoneNumberInfo
from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.privacy.kek import load_kek
from wapipe.tenants.limits import UNLIMITED, apply_number_info, limit_for_tier, mps_for_level
from wapipe.tenants.models import PhoneNumber, Template, Tenant, TenantStatus, body_parameter_count
from wapipe.tenants.onboarding import STEPS, next_step
from wapipe.tenants.service import TenantError, parse_number, parse_pairs


@pytest.fixture(scope="module")
def kek():
    return load_kek(Settings(kek=SecretStr(base64.b64encode(os.urandom(32)).decode())))


@pytest.fixture(scope="module")
def serde():
    return AvroSerde()


def tenant(**kw) -> Tenant:
    base = dict(tenant_id="acme", status=TenantStatus.ACTIVE, waba_id="200",
                numbers=(PhoneNumber(phone_number_id="300", display_phone_number="+1 555", throughput_mps=1000),))
    base.update(kw)
    return Tenant(**base)


def test_tenant_avro_round_trip_with_sealed_token(kek, serde):
    t = tenant().with_token(kek, "EAAG-very-secret")
    data = serde.encode("TenantSettings", t.to_avro())
    assert b"EAAG-very-secret" not in data
    back = Tenant.from_avro(serde.decode(data, "TenantSettings"))
    assert back == t and back.open_token(kek) == "EAAG-very-secret"
    assert "EAAG" not in repr(back) and "ciphertext" not in repr(back.token)


def test_token_is_bound_to_its_tenant_and_kek(kek):
    t = tenant().with_token(kek, "tok")
    with pytest.raises(Exception, match="authenticate"):
        t.model_copy(update={"tenant_id": "evil"}).open_token(kek)
    other = load_kek(Settings(kek=SecretStr(base64.b64encode(os.urandom(32)).decode())))
    with pytest.raises(Exception, match="neither the current nor a previous KEK"):
        t.open_token(other)
    with pytest.raises(LookupError):
        t.without_token().open_token(kek)


def test_evolve_validates_and_bumps_version():
    t = tenant()
    u = t.evolve(messaging_limit=2000)
    assert u.version == t.version + 1 and u.messaging_limit == 2000 and t.messaging_limit == 250
    with pytest.raises(ValidationError, match="unknown retention"):
        t.evolve(retention_days={"bogus": 3})
    with pytest.raises(ValidationError, match="at least 1 day"):
        t.evolve(retention_days={"content": 0})
    with pytest.raises(ValidationError):
        Tenant(tenant_id="has space")


def test_api_key_hash_only():
    t = tenant().with_api_key("wpk_abc")
    assert "wpk_abc" not in t.model_dump_json()
    assert t.api_key_matches("wpk_abc") and not t.api_key_matches("wpk_abd") and not tenant().api_key_matches("x")


def test_template_from_meta_and_sendable(serde):
    tpl = Template.from_meta("acme", "200", {"id": "77", "name": "order", "language": "en_US", "status": "approved",
                                             "category": "utility", "rejected_reason": "NONE",
                                             "components": [{"type": "BODY", "text": "Hi {{1}}, order {{2}} {{1}}"}]})
    assert tpl.sendable and tpl.body_parameter_count == 2 and tpl.reason is None and tpl.key == "200/order/en_US"
    assert Template.from_avro(serde.decode(serde.encode("TemplateInfo", tpl.to_avro()), "TemplateInfo")) == tpl
    assert not tpl.evolve(status="PAUSED").sendable
    assert body_parameter_count([{"type": "BODY", "text": "{{name}} and {{ order_id }}"}]) == 2


def test_limits_mapping_and_number_info():
    assert limit_for_tier("TIER_2K") == 2000 and limit_for_tier("tier_unlimited") == UNLIMITED
    assert limit_for_tier("TIER_NEW_UNKNOWN") is None and mps_for_level("HIGH") == 1000 and mps_for_level(None) is None
    t = tenant(numbers=(PhoneNumber(phone_number_id="300"),))
    info = PhoneNumberInfo.model_validate({"id": "300", "quality_rating": "YELLOW", "throughput": {"level": "HIGH"},
                                           "whatsapp_business_manager_messaging_limit": "TIER_10K"})
    u = apply_number_info(t, info)
    assert u.messaging_limit == 10_000 and u.number("300").throughput_mps == 1000
    assert u.number("300").quality_rating == "YELLOW" and u.number("300").messaging_limit_tier == "TIER_10K"
    assert apply_number_info(u, info) is u  # nothing new: no write


def test_parse_operator_input():
    n = parse_number("106540352242922:+1 555 0100:1000")
    assert (n.phone_number_id, n.display_phone_number, n.throughput_mps) == ("106540352242922", "+1 555 0100", 1000)
    assert parse_number("123").throughput_mps == 80
    for bad, msg in (("abc", "digits"), ("1:2:x", "whole number"), ("1:2:0", "at least 1"), ("1:2:3:4", "expected")):
        with pytest.raises(TenantError, match=msg):
            parse_number(bad)
    assert parse_pairs(["content=7", "audit=30"], "--retention") == {"content": 7, "audit": 30}
    with pytest.raises(TenantError, match="NAME=NUMBER"):
        parse_pairs(["content"], "--retention")


def test_onboarding_steps_order():
    assert next_step(None) == "started" and next_step("subscribed") == "registered"
    assert STEPS[-1] == "done"
    with pytest.raises(TenantError, match="complete"):
        next_step("done")


def test_template_staleness_and_v1_records(serde):
    import datetime as dt

    at = dt.datetime(2026, 11, 25, 10, 0, 5, 700000, tzinfo=dt.timezone.utc)
    tpl = Template(tenant_id="t", waba_id="w", name="n", language="en", status="APPROVED", status_at=at)
    assert tpl.is_stale(at - dt.timedelta(seconds=1))
    assert not tpl.is_stale(at.replace(microsecond=0))  # Meta's times are whole seconds: same second applies
    assert not tpl.is_stale(None) and not tpl.model_copy(update={"status_at": None}).is_stale(at)
    v1 = serde.encode("TemplateInfo", {k: v for k, v in tpl.to_avro().items() if k != "status_at"}, version=1)
    assert Template.from_avro(serde.decode(v1, "TemplateInfo")).status_at is None
