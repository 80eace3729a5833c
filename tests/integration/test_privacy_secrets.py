"""Tokens, app secrets, the KEK and the pepper are never in clear: not in any log of a run (debug
level), not in any byte of any topic — while the token is really stored, sealed, on wa.tenants."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys

import pytest

from wapipe.avro import AvroSerde
from wapipe.privacy import Kek
from wapipe.edge.scan import scan
from wapipe.topics import TENANTS, TOPICS

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # six CLI processes


def test_no_secret_in_logs_or_topics(settings, topics, tmp_path, unique):
    token = "EAAG" + secrets.token_urlsafe(40)
    app_secret = secrets.token_hex(16)
    kek_raw = os.urandom(32)
    kek_b64 = base64.b64encode(kek_raw).decode()
    pepper = "pepper-" + secrets.token_hex(16)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_STATE_DIR": str(settings.state_dir),
           "WAPIPE_JARS_DIR": str(settings.jars_dir), "WAPIPE_KEK": kek_b64, "WAPIPE_SUBJECT_PEPPER": pepper,
           "WAPIPE_META_APPS": json.dumps({"app-1": app_secret}), "WAPIPE_LOG_LEVEL": "DEBUG"}
    token_file = tmp_path / "token"
    token_file.write_text(token)
    tenant = f"sec-{unique}"
    runs = [
        ["tenants", "create", "--tenant-id", tenant, "--waba-id", f"w-{unique}", "--number", f"9{int(unique, 16) % 10**9}:15550001:80",
         "--token-file", str(token_file)],
        ["tenants", "show", tenant],
        ["tenants", "audit", tenant],
        ["privacy", "correct", "--tenant", tenant, "--wa-id", "15550100123", "--field", "profile_name", "--value", "Ann"],
        ["privacy", "export", "--tenant", tenant, "--wa-id", "15550100123"],
        ["privacy", "erase", "--tenant", tenant, "--wa-id", "15550100123"],
    ]
    logs = []
    for args in runs:
        r = subprocess.run([sys.executable, "-m", "wapipe", *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{args}: {r.stderr[-2000:]}"
        logs.append(r.stdout + r.stderr)
    captured = "\n".join(logs)
    assert tenant in captured  # the runs did log/print something about this tenant
    for name, secret in (("token", token), ("app secret", app_secret), ("KEK", kek_b64), ("pepper", pepper)):
        assert secret not in captured, f"{name} in clear in the logs"

    needles = [token.encode(), app_secret.encode(), kek_b64.encode(), kek_raw, pepper.encode()]
    for t in TOPICS:
        for m in scan(topics, t.name):
            blob = (m.key() or b"") + (m.value() or b"")
            for n in needles:
                assert n not in blob, f"a secret in clear on {t.name}"

    # ...and the token is really stored, sealed with the KEK, bound to the tenant.
    serde = AvroSerde.from_settings(settings)
    recs = [serde.decode(m.value(), "TenantSettings") for m in scan(topics, TENANTS) if m.key() == tenant.encode() and m.value()]
    sealed = recs[-1]["token"]
    assert sealed["key_id"].startswith("kek:")
    from wapipe.tenants.models import token_aad

    assert Kek(kek_raw).unseal(sealed, token_aad(tenant)).decode() == token
