"""The tenants admin API refuses bad input with a clear 400/413 and changes nothing (the ASGI app
through starlette's TestClient, with its real TenantService on the real broker)."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.testclient import TestClient

from tests.strategies import ANY_JSON, IDS, dumps
from wapipe.edge.clients import producer
from wapipe.tenants.api import create_app
from wapipe.tenants.models import PhoneNumber, Tenant
from wapipe.tenants.store import publish_tenant

pytestmark = pytest.mark.integration

OPERATOR = "op-key-bad-input"
BIG = 10**30
FIVE_MB = "x" * (5 * 1024 * 1024)


@pytest.fixture
def admin(settings, topics, unique):
    s = settings.model_copy(update={"operator_api_key": SecretStr(OPERATOR), "meta_graph_url": "http://127.0.0.1:9"})
    tid = f"bad-{unique}"
    publish_tenant(producer(topics), Tenant(tenant_id=tid, display_name="before",
                                            numbers=(PhoneNumber(phone_number_id=f"PN{unique}"),)))
    with TestClient(create_app(s, topics), headers={"Authorization": f"Bearer {OPERATOR}"}) as client:
        deadline = time.monotonic() + 30
        while client.get(f"/admin/tenants/{tid}").status_code != 200:
            assert time.monotonic() < deadline, "the tenant never showed up"
            time.sleep(0.1)
        yield client, tid, f"PN{unique}"


def _cases(pn: str) -> list[tuple[str, str, dict, int, str]]:
    """(method, path under /admin/tenants, request kwargs, status, words of the error)."""
    T = "{tid}"
    return [
        ("PATCH", T, {"json": {"messaging_limit": BIG}}, 400, "messaging_limit"),
        ("PATCH", T, {"json": {"messaging_limit": -1}}, 400, "messaging_limit"),
        ("PATCH", T, {"json": {"throughput_mps": {pn: BIG}}}, 400, "throughput_mps"),
        ("PATCH", T, {"json": {"throughput_mps": {pn: 0}}}, 400, "throughput_mps"),
        ("PATCH", T, {"json": {"throughput_mps": {"../../etc/passwd": 5}}}, 400, "throughput_mps"),
        ("PATCH", T, {"json": {"retention_days": {"content": BIG}}}, 400, "retention_days.content"),
        ("PATCH", T, {"json": {"retention_days": {"content": 0}}}, 400, "retention_days.content"),
        ("PATCH", T, {"json": {"retention_days": {"bogus": 3}}}, 400, "retention_days"),
        ("PATCH", T, {"json": {"display_name": "x" * 300}}, 400, "display_name"),
        ("PATCH", T, {"json": {"display_name": FIVE_MB}}, 413, "too large"),
        ("PATCH", T, {"content": iter([b'{"display_name": "', b"x" * 70_000, b'"}'])}, 413, "too large"),  # chunked
        ("PATCH", T, {"json": {"status": "S" * 100}}, 400, "status"),
        ("PATCH", T, {"json": {"status": "DISCONNECTED"}}, 400, "disconnect"),
        ("PATCH", T, {"json": {"nope": 1}}, 400, "nope"),
        ("PATCH", T, {"content": b"[" * 100_000}, 413, "too large"),  # over 64 KiB
        ("PATCH", T, {"content": b"[" * 60_000}, 400, "not valid JSON"),  # nested past the parser's depth
        ("PATCH", T, {"content": b"\xff\xfe"}, 400, "not valid JSON"),
        ("PATCH", T, {"content": b'{"messaging_limit": 1'}, 400, "not valid JSON"),
        ("PATCH", T, {"content": b"[]"}, 400, "body"),
        ("POST", "onboard", {"json": {"tenant_id": "../../etc/passwd", "code": "c"}}, 400, "tenant_id"),
        ("POST", "onboard", {"json": {"tenant_id": "a/b", "code": "c"}}, 400, "tenant_id"),
        ("POST", "onboard", {"json": {"tenant_id": "t" * 65, "code": "c"}}, 400, "tenant_id"),
        ("POST", "onboard", {"json": {"tenant_id": "ok", "code": "c" * 5000}}, 400, "code"),
        ("POST", "onboard", {"json": {"tenant_id": "ok", "code": "c", "pin": "12"}}, 400, "pin"),
        ("POST", "onboard", {"json": {"tenant_id": "ok", "code": "c", "waba_id": "a/b"}}, 400, "waba_id"),
        ("POST", "onboard", {"json": {"tenant_id": "ok", "code": "c", "app_id": "x" * 65}}, 400, "app_id"),
        ("POST", "onboard", {"json": {"tenant_id": "ok", "code": FIVE_MB}}, 413, "too large"),
        ("POST", f"{T}/resume", {"json": {"pin": "1234567"}}, 400, "pin"),
        ("POST", f"{T}/disconnect", {"json": {"reason": "r" * 2000}}, 400, "reason"),
        ("GET", "-x", {}, 400, "tenant_id"),
        ("GET", "bad%20id", {}, 400, "tenant_id"),
    ]


def test_bad_input_table(admin):
    client, tid, pn = admin
    before = client.get(f"/admin/tenants/{tid}").json()
    for method, path, kwargs, status, words in _cases(pn):
        url = "/admin/tenants/" + path.format(tid=tid)
        r = client.request(method, url, **kwargs)
        label = f"{method} {path} {str(kwargs)[:80]}"
        assert r.status_code == status, (label, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert words.lower() in error.lower(), (label, error)
        assert len(error) < 500, (label, "the message must not echo the input")
    after = client.get(f"/admin/tenants/{tid}").json()
    assert after == before  # nothing refused changed the tenant


def test_any_patch_body_is_applied_or_refused_never_a_500(admin):
    """Hostile PATCH bodies: 200 (then the tenant reads back with what was asked), or 400/413."""
    client, tid, pn = admin
    values = st.one_of(ANY_JSON, IDS, st.integers(min_value=-BIG, max_value=BIG))
    bodies = st.fixed_dictionaries({}, optional={
        "messaging_limit": values | st.integers(min_value=0, max_value=2**31 - 1),
        "display_name": values | st.text(max_size=300),
        "status": values | st.sampled_from(["SUSPENDED", "suspended", "ONBOARDING", "ACTIVE"]),
        "retention_days": values | st.dictionaries(st.sampled_from(["content", "audit", "x"]), values, max_size=2),
        "throughput_mps": values | st.dictionaries(st.sampled_from([pn, "../x"]), values | st.integers(1, 1000),
                                                   max_size=2),
    }).map(dumps) | ANY_JSON.map(dumps) | st.binary(max_size=60)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=bodies)
    @example(raw=b'{"messaging_limit": 1000000000000000000000000000000}')
    @example(raw=b'{"messaging_limit": 2147483647}')
    def run(raw):
        r = client.patch(f"/admin/tenants/{tid}", content=raw)
        assert r.status_code in (200, 400, 413), (raw[:200], r.status_code, r.text[:300])
        if r.status_code == 200:
            asked = json.loads(raw)
            got = r.json()
            if asked.get("messaging_limit") is not None:
                assert got["messaging_limit"] == asked["messaging_limit"]
        else:
            assert r.json()["error"]

    run()
    assert client.get(f"/admin/tenants/{tid}").status_code == 200  # still readable

