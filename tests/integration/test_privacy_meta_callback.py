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
            assert rec["details"]["outcome"] == "no data held" and rec["source"] == "meta_deletion_callback"
    finally:
        processor.close()
        ingress.stop()
