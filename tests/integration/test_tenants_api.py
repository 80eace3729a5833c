"""The admin HTTP API over a real socket (uvicorn on 127.0.0.1:<free port>), the real broker and the
Meta sandbox: operator and per-tenant keys, onboarding with a failure and the resume, disconnect."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from wapipe.net import free_port, wait_for_port
from wapipe.tenants.api import create_app

pytestmark = pytest.mark.integration

OPERATOR = "op-key-for-tests"


@pytest.fixture
def admin(settings, topics, meta_sandbox):
    s = settings.model_copy(update={
        "meta_graph_url": meta_sandbox.url, "operator_api_key": SecretStr(OPERATOR),
        "meta_apps": {meta_sandbox.app_id: SecretStr(meta_sandbox.app_secret)}})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(s, topics), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        th.join(15)


def op(**kw):
    return {"Authorization": f"Bearer {OPERATOR}", **kw}


def test_keys_onboarding_resume_and_disconnect(admin, meta_sandbox, unique):
    sb = meta_sandbox
    n = int(unique[:6], 16)
    biz, waba, pn = f"16{n:08d}", f"26{n:08d}", f"36{n:08d}"
    sb.control.add_business(biz, tier="TIER_10K")
    sb.control.add_waba(waba, biz)
    sb.control.add_number(pn, waba, registered=False, display_phone_number=f"1888{n % 10**7:07d}")
    tid = f"api-{unique}"

    assert admin.get("/admin/tenants").status_code == 401
    assert admin.get("/admin/tenants", headers={"X-API-Key": "wrong"}).status_code == 403
    r = admin.post("/admin/tenants/onboard", headers=op(), json={"tenant_id": tid})
    assert r.status_code == 400 and "code" in r.json()["error"]

    code = sb.control.signup_code(sb.app_id, [waba])
    r = admin.post("/admin/tenants/onboard", headers=op(), json={"tenant_id": tid, "code": code})
    assert r.status_code == 409, r.text
    assert r.json()["step"] == "registered" and r.json()["resume"] == f"POST /admin/tenants/{tid}/resume"
    assert admin.get(f"/admin/tenants/{tid}", headers=op()).json()["onboarding_step"] == "subscribed"

    r = admin.post(f"/admin/tenants/{tid}/resume", headers=op(), json={"pin": "654321"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant"]["status"] == "ACTIVE" and body["tenant"]["messaging_limit"] == 10_000
    tenant_key = body["api_key"]
    assert "token" in body["tenant"] and not str(body["tenant"]["token"]).startswith("EAA")

    # the tenant's own key: its own tenant only, and not operator routes
    mine = {"Authorization": f"Bearer {tenant_key}"}
    assert admin.get(f"/admin/tenants/{tid}", headers=mine).json()["tenant_id"] == tid
    assert admin.get("/admin/tenants", headers=mine).status_code == 403
    assert admin.patch(f"/admin/tenants/{tid}", headers=mine, json={"status": "SUSPENDED"}).status_code == 403
    assert admin.get(f"/admin/tenants/other-{unique}", headers=mine).status_code == 403
    assert admin.get(f"/admin/tenants/other-{unique}", headers=op()).status_code == 404
    assert [t["name"] for t in admin.get(f"/admin/tenants/{tid}/templates", headers=mine).json()] == []

    r = admin.patch(f"/admin/tenants/{tid}", headers=op(), json={"retention_days": {"content": 3}})
    assert r.status_code == 200 and r.json()["retention_days"]["content"] == 3
    r = admin.patch(f"/admin/tenants/{tid}", headers=op(), json={"retention_days": {"nope": 3}})
    assert r.status_code == 400 and "unknown retention" in r.json()["error"]

    r = admin.post(f"/admin/tenants/{tid}/disconnect", headers=mine, json={"reason": "moving on"})
    assert r.status_code == 200 and r.json()["status"] == "DISCONNECTED" and r.json()["token"] is None
    assert sb.app_id not in next(w for w in sb.control.state()["wabas"] if w["id"] == waba)["subscribed_apps"]
