"""Meta's data-deletion callback end to end: a signed_request POSTed to the real ingress process
becomes a request the privacy processor completes; Meta's status URL then says COMPLETED."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from producers.ingress import signed_request
from producers.ingress.process import IngressProcess, wait_until
from wapipe.privacy.processor import PrivacyProcessor

pytestmark = pytest.mark.integration

APP, SECRET = "app-privacy", "privacy-app-secret"


def test_deletion_callback_reaches_completed_on_the_status_page(settings, topics, tmp_path, unique):
    env = {"KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_META_APPS": json.dumps({APP: SECRET}),
           "WAPIPE_VERIFY_TOKEN": "v", "WAPIPE_LOG_LEVEL": "INFO", "WAPIPE_STATE_DIR": str(settings.state_dir)}
    ingress = IngressProcess(env, log_path=tmp_path / "ingress.log").start()
    processor = PrivacyProcessor(settings, topics, group=f"privacy-cb-{unique}", check_interval_s=0.2).start()
    try:
        with httpx.Client(base_url=ingress.url, timeout=10) as http:
            sr = signed_request.encode(SECRET.encode(), {"algorithm": "HMAC-SHA256", "issued_at": int(time.time()),
                                                         "user_id": f"77{int(unique, 16) % 10**12}"})
            r = http.post("/meta/data-deletion", data={"signed_request": sr})
            assert r.status_code == 200, r.text
            code = r.json()["confirmation_code"]
            status_path = r.json()["url"].split("://", 1)[1].split("/", 1)[1]
            assert http.get("/" + status_path).json()["status"] == "RECEIVED"

            def completed() -> bool:
                processor.tick()
                return http.get("/" + status_path).json()["status"] == "COMPLETED"

            assert wait_until(completed, 30), http.get("/" + status_path).json()
            rec = processor.registry.by_code(code)
            assert rec.details["outcome"] == "no data held" and rec.source == "meta_deletion_callback"
    finally:
        processor.close()
        ingress.stop()


def test_deletion_and_deauthorize_callbacks_reach_the_users_tenants(settings, topics, tmp_path, unique):
    """Issue 18: the app-scoped Meta user id from onboarding was discarded, so a deletion callback
    never found data, and the deauthorize callback's DISCONNECT was consumed by nothing. Now the
    tenants that user connected lose the token and the user id and are disconnected, through the
    real ingress; a tenant of another user is untouched."""
    from wapipe.privacy.kek import load_kek
    from wapipe.tenants.models import Tenant, TenantStatus
    from wapipe.tenants.service import TenantService

    n = int(unique, 16) % 10**12
    erase_user, deauth_user, other_user = f"71{n}", f"72{n}", f"73{n}"
    kek = load_kek(settings)
    tenants = {u: f"cb-{i}-{unique}" for i, u in enumerate((erase_user, deauth_user, other_user))}
    with TenantService(settings, topics, actor="operator:test") as svc:
        for user, tid in tenants.items():
            t = Tenant(tenant_id=tid, status=TenantStatus.ACTIVE, waba_id=f"w{tid}", meta_user_id=user)
            svc.save(t.with_token(kek, f"EAAG{tid}"), "tenant.created")
    env = {"KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_META_APPS": json.dumps({APP: SECRET}),
           "WAPIPE_VERIFY_TOKEN": "v", "WAPIPE_LOG_LEVEL": "INFO", "WAPIPE_STATE_DIR": str(settings.state_dir)}
    ingress = IngressProcess(env, log_path=tmp_path / "ingress.log").start()
    processor = PrivacyProcessor(settings, topics, group=f"privacy-cb2-{unique}", check_interval_s=0.2).start()
    try:
        with httpx.Client(base_url=ingress.url, timeout=10) as http:
            codes = {}
            for path, user in (("/meta/data-deletion", erase_user), ("/meta/deauthorize", deauth_user)):
                sr = signed_request.encode(SECRET.encode(), {"algorithm": "HMAC-SHA256", "issued_at": int(time.time()),
                                                             "user_id": user})
                r = http.post(path, data={"signed_request": sr})
                assert r.status_code == 200, r.text
                codes[user] = r.json().get("confirmation_code")

            def done() -> bool:
                processor.tick()
                recs = [processor.registry.by_code(c) for c in codes.values() if c]
                return all(r and r.status == "COMPLETED" for r in recs) and all(
                    processor.tenants.registry.tenant(tenants[u]).status == TenantStatus.DISCONNECTED
                    for u in (erase_user, deauth_user))

            assert wait_until(done, 60), [processor.registry.by_code(c) for c in codes.values() if c]
            erased = processor.registry.by_code(codes[erase_user])
            assert erased.details["outcome"].startswith("token and Meta user id deleted from 1 tenant")
        reg = processor.tenants.registry
        for user in (erase_user, deauth_user):
            t = reg.tenant(tenants[user])
            assert (t.status, t.token, t.meta_user_id) == (TenantStatus.DISCONNECTED, None, None), t
        other = reg.tenant(tenants[other_user])
        assert other.status == TenantStatus.ACTIVE and other.meta_user_id == other_user
        assert other.open_token(kek) == f"EAAG{tenants[other_user]}"
    finally:
        processor.close()
        ingress.stop()
