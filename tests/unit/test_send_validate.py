"""The validation rules, one refusal each, against the real tenant models."""

from __future__ import annotations

import datetime as dt

import pytest

from processors.send.records import Outcome
from processors.send.validate import validate
from tests.unit.commands import Registry, command
from wapipe.tenants.models import PhoneNumber, SealedToken, Template, Tenant, TenantStatus

NOW = 1_800_000_000_000


TOKEN = SealedToken(key_id="kek:x", nonce=b"n" * 12, ciphertext=b"c" * 20)
ACME = Tenant(tenant_id="acme", status=TenantStatus.ACTIVE, waba_id="w1", token=TOKEN,
              numbers=(PhoneNumber(phone_number_id="111"), PhoneNumber(phone_number_id="222", status="DISCONNECTED")))
REG = Registry(
    [ACME, ACME.model_copy(update={"tenant_id": "susp", "status": TenantStatus.SUSPENDED}),
     ACME.model_copy(update={"tenant_id": "notoken", "token": None})],
    [Template(tenant_id="acme", waba_id="w1", name="hello", language="en_US", status="APPROVED"),
     Template(tenant_id="acme", waba_id="w1", name="order", language="en_US", status="APPROVED", body_parameter_count=2),
     Template(tenant_id="acme", waba_id="w1", name="old", language="en_US", status="PAUSED")],
)


def cmd(**kw):
    base = {"command_id": "c1", "tenant_id": "acme", "idempotency_key": "k", "phone_number_id": "111",
            "subject_id": "s1", "kind": "TEMPLATE", "template": {"name": "hello", "language": "en_US", "parameter_count": 0},
            "valid_until": None}
    base.update(kw)
    return command(**base)


def check(c, last_inbound=lambda n, s: None, restricted=None):
    return validate(c, REG, now_ms=NOW, last_inbound=last_inbound, is_restricted=restricted)


def test_a_good_template_passes():
    assert check(cmd()) is None


@pytest.mark.parametrize("changes, outcome, words", [
    ({"idempotency_key": ""}, Outcome.REJECTED, "idempotency_key is empty"),
    ({"tenant_id": "nobody"}, Outcome.REJECTED, "unknown tenant"),
    ({"tenant_id": "susp"}, Outcome.REJECTED, "SUSPENDED, not ACTIVE"),
    ({"tenant_id": "notoken"}, Outcome.REJECTED, "no Graph API token"),
    ({"phone_number_id": "999"}, Outcome.REJECTED, "does not belong"),
    ({"phone_number_id": "222"}, Outcome.REJECTED, "DISCONNECTED"),
    ({"template": None}, Outcome.REJECTED, "without a template reference"),
    ({"template": {"name": "nope", "language": "en_US", "parameter_count": 0}}, Outcome.REJECTED, "not known"),
    ({"template": {"name": "hello", "language": "de_DE", "parameter_count": 0}}, Outcome.REJECTED, "not known"),
    ({"template": {"name": "old", "language": "en_US", "parameter_count": 0}}, Outcome.REJECTED, "PAUSED, not APPROVED"),
    ({"template": {"name": "order", "language": "en_US", "parameter_count": 1}}, Outcome.REJECTED, "takes 2 body parameter"),
    ({"valid_until": dt.datetime.fromtimestamp((NOW - 5000) / 1000, dt.timezone.utc)}, Outcome.EXPIRED, "valid_until passed"),
])
def test_each_refusal_has_a_clear_reason(changes, outcome, words):
    r = check(cmd(**changes))
    assert r is not None and r.outcome == outcome and words in r.reason


def test_session_messages_need_an_open_window():
    session = cmd(kind="TEXT", template=None)
    assert "never wrote" in check(session).reason
    assert "outside the 24 h" in check(session, last_inbound=lambda n, s: NOW - 25 * 3600_000).reason
    assert check(session, last_inbound=lambda n, s: NOW - 23 * 3600_000) is None


def test_restricted_recipients_are_refused():
    r = check(cmd(), restricted=lambda s: s == "s1")
    assert r is not None and "restricted" in r.reason
