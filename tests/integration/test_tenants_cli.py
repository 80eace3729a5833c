"""`wapipe tenants create|list|show|update` against the real broker; the token never printed or in clear."""

from __future__ import annotations


import json

import pytest
from typer.testing import CliRunner

from tests.harness import quiet_configure
from tests.integration.kafka_helpers import read_all
from wapipe.app.cli import app
from wapipe.privacy.kek import load_kek
from wapipe.tenants.registry import TenantRegistry
from wapipe.topics import AUDIT, TENANTS

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(settings, topics, monkeypatch):
    # the CLI callback configures structlog onto CliRunner's stderr, which closes after invoke;
    # cached loggers would then write to a closed file in later tests
    monkeypatch.setattr("wapipe.log.configure", quiet_configure)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", topics)
    monkeypatch.setenv("WAPIPE_STATE_DIR", str(settings.state_dir))
    runner = CliRunner()

    def run(*args, ok=True):
        r = runner.invoke(app, ["tenants", *args])
        if ok:
            assert r.exit_code == 0, r.output
        else:
            assert r.exit_code != 0, r.output
        return r
    return run


def test_create_show_update_list(cli, settings, topics, tmp_path, unique):
    token = f"EAAG-secret-{unique}-token"
    tf = tmp_path / "token"
    tf.write_text(token + "\n")
    tid = f"acme-{unique}"
    pn1, pn2 = f"1{unique[:8].encode().hex()[:12]}", f"2{unique[:8].encode().hex()[:12]}"
    r = cli("create", "--tenant-id", tid, "--waba-id", f"9{pn1}", "--number", f"{pn1}:+1 555 0100:80",
            "--number", f"{pn2}::1000", "--token-file", str(tf), "--messaging-limit", "1000", "--json")
    shown = json.loads(r.output)
    assert shown["status"] == "ACTIVE" and shown["messaging_limit"] == 1000
    assert [n["throughput_mps"] for n in shown["numbers"]] == [80, 1000]
    assert shown["token"].startswith("sealed (kek:") and token not in r.output

    # the stored token opens with the KEK and the tenant id, and only so
    reg = TenantRegistry(settings, topics).start()
    try:
        assert reg.wait_ready(20)
        t = reg.tenant(tid)
        assert t.open_token(load_kek(settings)) == token
        other = t.model_copy(update={"tenant_id": f"other-{unique}"})
        with pytest.raises(Exception, match="authenticate"):
            other.open_token(load_kek(settings))  # a sealed token moved to another tenant does not open
    finally:
        reg.close()

    # duplicates and number theft are refused with a clear message
    r = cli("create", "--tenant-id", tid, ok=False)
    assert "already exists" in r.output
    r = cli("create", "--tenant-id", f"thief-{unique}", "--number", f"{pn1}::80", ok=False)
    assert f"already belongs to tenant {tid}" in r.output
    r = cli("create", "--tenant-id", f"x-{unique}", "--number", "abc", ok=False)
    assert "must be digits" in r.output

    r = cli("update", tid, "--retention", "content=7", "--retention", "audit=3650", "--throughput", f"{pn1}=1000",
            "--status", "suspended", "--json")
    up = json.loads(r.output)
    assert up["retention_days"]["content"] == 7 and up["retention_days"]["audit"] == 3650
    assert up["retention_days"]["metadata"] == 365  # untouched kinds keep their value
    assert up["numbers"][0]["throughput_mps"] == 1000 and up["status"] == "SUSPENDED" and up["version"] == 2
    assert "unknown retention" in cli("update", tid, "--retention", "bogus=3", ok=False).output
    assert "no phone number 42" in cli("update", tid, "--throughput", "42=10", ok=False).output
    assert "tenants disconnect" in cli("update", tid, "--status", "DISCONNECTED", ok=False).output

    r = cli("show", tid)
    assert tid in r.output and token not in r.output and "SUSPENDED" in r.output
    listed = json.loads(cli("list", "--json").output)
    assert tid in [t["tenant_id"] for t in listed] and token not in str(listed)
    assert "no tenant" in cli("show", f"nope-{unique}", ok=False).output

    # nothing on wa.tenants or wa.audit carries the token in clear
    for topic in (TENANTS, AUDIT):
        for m in read_all(topics, topic):
            assert token.encode() not in (m.value() or b"")
    actions = [m.value() for m in read_all(topics, AUDIT) if m.key() == tid.encode()]
    assert len(actions) == 2  # created, updated
    trail = json.loads(cli("audit", tid, "--json").output)
    assert [(e["action"], e["actor"]) for e in trail] == [("tenant.created", "operator:cli"),
                                                          ("tenant.updated", "operator:cli")]
    assert trail[1]["details"]["status"] == "ACTIVE->SUSPENDED" and token not in str(trail)
