"""The privacy API refuses bad input with a clear 400/413 and records nothing for it (the ASGI app
through starlette's TestClient, with the real PrivacyService and tenant registry on the broker)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.testclient import TestClient

from tests.integration.kafka_helpers import read_all
from tests.strategies import ANY_JSON, IDS, dumps
from wapipe.avro import AvroSerde
from wapipe.edge.clients import producer
from wapipe.privacy.api import create_app
from wapipe.privacy.service import PrivacyService
from wapipe.tenants.models import Tenant, hash_api_key
from wapipe.tenants.registry import TenantRegistry
from wapipe.tenants.store import publish_tenant
from wapipe.topics import PRIVACY_REQUESTS

pytestmark = pytest.mark.integration

BIG = 10**30
FIVE_MB = "x" * (5 * 1024 * 1024)
serde = AvroSerde()


@pytest.fixture
def api(settings, topics, unique):
    s = settings.model_copy(update={"operator_api_key": SecretStr("op-key-" + unique)})
    tenant = Tenant(tenant_id=f"t-{unique}", api_key_sha256=hash_api_key("tenant-key-" + unique))
    publish_tenant(producer(topics), tenant)
    svc = PrivacyService(s, topics).start()
    reg = TenantRegistry(s, topics).start()
    reg.wait_ready(30)
    try:
        with TestClient(create_app(s, svc, reg), headers={"Authorization": f"Bearer tenant-key-{unique}"}) as client:
            yield client, tenant.tenant_id, unique, svc
    finally:
        reg.close()
        svc.close()


def _cases() -> list[tuple[str, str, dict, int, str]]:
    """(method, path under /privacy/{tenant}, request kwargs, status, words of the error)."""
    R, C = "requests", "corrections"
    return [
        ("POST", R, {"json": {"kind": BIG, "wa_id": "15550100001"}}, 400, "kind"),
        ("POST", R, {"json": {"kind": "erasure", "wa_id": BIG}}, 400, "wa_id"),
        ("POST", R, {"json": {"kind": "erasure", "wa_id": FIVE_MB}}, 413, "too large"),
        ("POST", R, {"json": {"kind": "erasure", "wa_id": "1" * 40}}, 400, "wa_id"),
        ("POST", R, {"json": {"kind": "erasure", "wa_id": "abc"}}, 400, "wa_id"),  # no digits: was a 500
        ("POST", R, {"json": {"kind": "erasure", "wa_id": "+ - ( )"}}, 400, "digits"),
        ("POST", R, {"json": {"kind": "erasure", "wa_id": "1234567890123456"}}, 400, "digits"),
        ("POST", R, {"json": {"kind": "erasure", "subject_id": "../../etc/passwd"}}, 400, "subject_id"),
        ("POST", R, {"json": {"kind": "erasure", "subject_id": "a/b"}}, 400, "subject_id"),
        ("POST", R, {"json": {"kind": "erasure", "subject_id": "s" * 65}}, 400, "subject_id"),
        ("POST", R, {"json": {"kind": "k" * 5000, "wa_id": "1555"}}, 400, "kind"),
        ("POST", R, {"json": {"kind": "erasure", "wa_id": "1555", "extra": 1}}, 400, "extra"),
        ("POST", R, {"content": b"[" * 100_000}, 413, "too large"),
        ("POST", R, {"content": b"[" * 60_000}, 400, "not valid JSON"),
        ("POST", R, {"content": b"\xff"}, 400, "not valid JSON"),
        ("POST", R, {"content": b"7"}, 400, "body"),
        ("POST", R, {"content": iter([b'{"kind": "erasure", "wa_id": "', b"1" * 70_000, b'"}'])}, 413, "too large"),
        ("POST", C, {"json": {"wa_id": "1555", "field": "profile_name", "value": "v" * 5000}}, 400, "value"),
        ("POST", C, {"json": {"wa_id": "1555", "field": "a/b", "value": "v"}}, 400, "field"),
        ("POST", C, {"json": {"wa_id": "1555", "field": BIG, "value": "v"}}, 400, "field"),
        ("POST", C, {"json": {"wa_id": "1555", "field": "profile_name", "value": BIG}}, 400, "value"),
        ("GET", "requests/bad%20code", {}, 400, "code"),
        ("GET", "requests/" + "c" * 65, {}, 400, "code"),
        ("GET", "export?wa_id=abc", {}, 400, "wa_id"),
        ("GET", "export?subject_id=..%2F..%2Fetc%2Fpasswd", {}, 400, "subject_id"),
        ("GET", "export?wa_id=" + "1" * 40, {}, 400, "wa_id"),
        # a person named by business-scoped user id (username users, issue 20)
        ("POST", R, {"json": {"kind": "erasure", "user_id": "us.1349"}}, 400, "business-scoped user id"),
        ("POST", R, {"json": {"kind": "erasure", "user_id": "US.12 34"}}, 400, "business-scoped user id"),
        ("POST", R, {"json": {"kind": "erasure", "user_id": "15550100001"}}, 400, "business-scoped user id"),
        ("POST", R, {"json": {"kind": "erasure", "user_id": 123}}, 400, "user_id"),
        ("POST", R, {"json": {"kind": "erasure", "user_id": "US." + "1" * 300}}, 400, "user_id"),
        ("POST", R, {"json": {"kind": "erasure", "user_id": "US.1349", "wa_id": "1555"}}, 400, "not both"),
        ("POST", C, {"json": {"user_id": "US..1", "field": "profile_name", "value": "v"}}, 400, "business-scoped"),
        ("GET", "export?user_id=US.%00", {}, 400, "business-scoped user id"),
    ]


def _requests_of(bootstrap: str, tenant: str) -> list[dict]:
    return [r for r in (serde.decode(m.value(), "PrivacyRequest") for m in read_all(bootstrap, PRIVACY_REQUESTS)
                        if m.value()) if r["tenant_id"] == tenant]


def test_bad_input_table(api, topics):
    client, t, unique, svc = api
    for method, path, kwargs, status, words in _cases():
        r = client.request(method, f"/privacy/{t}/{path}", **kwargs)
        label = f"{method} {path[:40]} {str(kwargs)[:80]}"
        assert r.status_code == status, (label, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert words.lower() in error.lower(), (label, error)
        assert len(error) < 500, (label, "the message must not echo the input")
    # Control: one good request after the refused ones is on the topic, and it is the only one.
    r = client.post(f"/privacy/{t}/requests", json={"kind": "restriction", "wa_id": "+1 555 010 0042"})
    assert r.status_code == 202, r.text
    assert [q["confirmation_code"] for q in _requests_of(topics, t)] == [r.json()["confirmation_code"]]
    # and one named by BSUID: the BSUID's own subject in the tenant
    r2 = client.post(f"/privacy/{t}/requests", json={"kind": "restriction", "user_id": "US.13491208655302741918"})
    assert r2.status_code == 202, r2.text
    assert r2.json()["subject_id"] == svc.subject(t, "US.13491208655302741918") != r.json()["subject_id"]


def test_a_path_tenant_that_is_not_an_id_is_400(api):
    client, _, unique, _ = api
    op = {"Authorization": f"Bearer op-key-{unique}"}
    r = client.post("/privacy/-x/requests", json={"kind": "erasure", "wa_id": "1555"}, headers=op)
    assert r.status_code == 400 and "tenant" in r.json()["error"]
    r = client.post("/privacy/a%20b/requests", json={"kind": "erasure", "wa_id": "1555"})
    assert r.status_code == 403  # a tenant key: not its tenant, whatever the id


def test_any_request_body_is_accepted_or_refused_never_a_500(api):
    """Hostile bodies on /requests and /corrections: 202 (a request recorded), 400/413, or 404 for a
    well-formed subject id that is not this tenant's (docs/security.md, "Tenant isolation")."""
    client, t, _, _ = api
    values = st.one_of(ANY_JSON, IDS, st.integers(min_value=-BIG, max_value=BIG), st.text(max_size=40))
    bodies = st.fixed_dictionaries({}, optional={
        "kind": values | st.sampled_from(["erasure", "RESTRICTION", "unrestriction", "access"]),
        "wa_id": values | st.from_regex(r"\A\+?[0-9 ()-]{1,20}\Z"),
        "subject_id": values | st.from_regex(r"\A[a-f0-9]{32}\Z"),
        "field": values | st.just("profile_name"),
        "value": values,
    }).map(dumps) | ANY_JSON.map(dumps) | st.binary(max_size=60)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=bodies, path=st.sampled_from(["requests", "corrections"]))
    @example(raw=b'{"kind": "erasure", "wa_id": "abc"}', path="requests")
    @example(raw=b'{"wa_id": "()", "field": "profile_name", "value": "v"}', path="corrections")
    def run(raw, path):
        r = client.post(f"/privacy/{t}/{path}", content=raw)
        assert r.status_code in (202, 400, 404, 413), (raw[:200], r.status_code, r.text[:300])
        doc = r.json()
        assert ("confirmation_code" in doc) == (r.status_code == 202)

    run()
