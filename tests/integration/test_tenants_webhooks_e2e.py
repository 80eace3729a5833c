"""The whole account-webhook path, every part real: the Meta sandbox changes a template's status and a
number's tier -> signed webhook -> `wapipe ingress` -> wa.webhook.raw -> `wapipe normalise` ->
wa.account.events -> `wapipe tenants follow` -> wa.templates / wa.tenants -> a live TenantRegistry
(as the send pipeline holds it) refuses the paused template and hears the new limit."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest

from tests.integration.test_tenants_lifecycle import eventually
from tests.integration.test_tenants_services import start
from wapipe.tenants.guard import refusal
from wapipe.tenants.models import PhoneNumber, Template
from wapipe.tenants.registry import TenantRegistry
from wapipe.tenants.service import TenantService

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sandbox_webhooks_reach_the_send_pipelines_registry(settings, topics, meta_sandbox, unique):
    sb, c = meta_sandbox, meta_sandbox.control
    n = int(unique[:6], 16)
    biz, waba, pn, display = f"15{n:08d}", f"25{n:08d}", f"35{n:08d}", f"1999{n % 10**7:07d}"
    c.add_business(biz, tier="TIER_250")
    c.add_waba(waba, biz)
    c.add_number(pn, waba, display_phone_number=display)
    c.add_template(waba, "invoice_due", body_params=1, body_text="Invoice {{1}}")

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_STATE_DIR": str(settings.state_dir),
           "WAPIPE_META_APPS": f'{{"{sb.app_id}": "{sb.app_secret}"}}',
           "WAPIPE_NORMALISE_APP_ID": f"normalise-{unique}"}
    with TenantService(settings, topics, actor="operator:test") as svc:
        tid = f"e2e-{unique}"
        svc.create(tid, waba_id=waba, token=sb.token,
                   numbers=[PhoneNumber(phone_number_id=pn, display_phone_number=display)])
        svc.save_template(Template(tenant_id=tid, waba_id=waba, name="invoice_due", language="en_US",
                                   status="APPROVED", body_parameter_count=1))

    procs = []
    reg = TenantRegistry(settings, topics).start()
    try:
        p, url = start(["ingress", "--port", "0"], env, group=())
        procs.append(p)
        procs.append(start(["normalise"], env, group=(), timeout=90)[0])
        procs.append(start(["follow"], env)[0])
        assert reg.wait_ready(20)
        c.set_webhook(f"{url}/webhook", app_id=sb.app_id, app_secret=sb.app_secret)

        limits = []
        heard = threading.Event()

        def listener(ch):
            if ch.kind == "tenant" and ch.key == tid and ch.new is not None and ch.new.messaging_limit == 2000:
                limits.append(ch.new)
                heard.set()
        reg.on_change(listener)

        assert refusal(reg, tid, pn, ("invoice_due", "en_US")) is None
        c.set_template_status(waba, "invoice_due", "en_US", "PAUSED")
        r = eventually(lambda: refusal(reg, tid, pn, ("invoice_due", "en_US")), timeout=60)
        assert r.reason == "template paused"

        c.set_tier(biz, "TIER_2K")  # -> phone_number_quality_update (UPGRADE, current_limit TIER_2K)
        assert heard.wait(60)
        assert limits[-1].number(pn).messaging_limit_tier == "TIER_2K"
    finally:
        c.set_webhook(None)
        for p in reversed(procs):  # other areas' services: stopped, their exit codes are their tests' business
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        reg.close()

