"""The privacy admin HTTP API: per-tenant keys, the operator key, clear 4xx, requests recorded."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from wapipe.edge.clients import producer
from wapipe.privacy.api import create_app
from wapipe.privacy.service import PrivacyService
from wapipe.tenants.models import Tenant, hash_api_key
from wapipe.tenants.registry import TenantRegistry
from wapipe.tenants.store import publish_tenant

pytestmark = pytest.mark.integration


@pytest.fixture
def api(settings, topics, unique):
    s = settings.model_copy(update={"operator_api_key": SecretStr("op-key-" + unique)})
    tenant = Tenant(tenant_id=f"t-{unique}", api_key_sha256=hash_api_key("tenant-key-" + unique))
    other = Tenant(tenant_id=f"u-{unique}", api_key_sha256=hash_api_key("other-key-" + unique))
    p = producer(topics)
    publish_tenant(p, tenant)
    publish_tenant(p, other)
    svc = PrivacyService(s, topics).start()
    reg = TenantRegistry(s, topics).start()
    reg.wait_ready(30)
    try:
        with TestClient(create_app(s, svc, reg)) as client:
            yield client, tenant.tenant_id, other.tenant_id, unique, svc
    finally:
        reg.close()
        svc.close()


def test_keys_scope_and_requests(api):
    client, t, u, unique, svc = api
    mine = {"Authorization": f"Bearer tenant-key-{unique}"}
    body = {"kind": "restriction", "wa_id": "+1 555 010 0042"}
    assert client.post(f"/privacy/{t}/requests", json=body).status_code == 401
    assert client.post(f"/privacy/{u}/requests", json=body, headers=mine).status_code == 403  # another tenant
    r = client.post(f"/privacy/{t}/requests", json=body, headers=mine)
    assert r.status_code == 202, r.text
    code = r.json()["confirmation_code"]
    assert r.json()["status"] == "RECEIVED" and svc.registry.is_restricted(r.json()["subject_id"])
    got = client.get(f"/privacy/{t}/requests/{code}", headers=mine)
    assert got.status_code == 200 and got.json()["kind"] == "RESTRICTION"
    # the other tenant cannot see it even with the operator key on its own path
    assert client.get(f"/privacy/{u}/requests/{code}", headers={"X-API-Key": f"op-key-{unique}"}).status_code == 404
    op = client.post(f"/privacy/{t}/requests", json={"kind": "erasure", "wa_id": "+1 555 010 0042"},
                     headers={"X-API-Key": f"op-key-{unique}"})
    assert op.status_code == 202 and op.json()["kind"] == "ERASURE"
    # a subject id nobody holds is a 404, for the operator too (cross-tenant ids: test_tenant_isolation.py)
    op = client.post(f"/privacy/{t}/requests", json={"kind": "erasure", "subject_id": "abc"},
                     headers={"X-API-Key": f"op-key-{unique}"})
    assert op.status_code == 404


def test_bad_input_gets_a_clear_400(api):
    client, t, _, unique, _ = api
    h = {"Authorization": f"Bearer tenant-key-{unique}"}
    r = client.post(f"/privacy/{t}/requests", json={"kind": "delete-everything", "wa_id": "1555"}, headers=h)
    assert r.status_code == 400 and "kind must be one of" in r.json()["error"]
    r = client.post(f"/privacy/{t}/requests", json={"kind": "erasure"}, headers=h)
    assert r.status_code == 400 and "wa_id" in r.json()["error"]
    r = client.post(f"/privacy/{t}/requests", content=b"{not json", headers=h)
    assert r.status_code == 400
    r = client.post(f"/privacy/{t}/corrections", json={"wa_id": "1555", "field": "profile_name"}, headers=h)
    assert r.status_code == 400


def test_correction_and_export(api):
    client, t, _, unique, _ = api
    h = {"Authorization": f"Bearer tenant-key-{unique}"}
    r = client.post(f"/privacy/{t}/corrections", json={"wa_id": "15550100777", "field": "profile_name", "value": "Zed"}, headers=h)
    assert r.status_code == 202 and "Zed" not in r.text
    r = client.get(f"/privacy/{t}/export", params={"wa_id": "15550100777"}, headers=h)
    assert r.status_code == 200, r.text
    kinds = {q["kind"] for q in r.json()["requests"]}
    assert {"CORRECTION", "ACCESS"} <= kinds
