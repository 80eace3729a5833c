"""Kafka security from the one Settings object, in the terms of each client library (issue 21 #4)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

from wapipe.config import REPO_ROOT, Settings
from wapipe.kafka_edge import (
    KafkaEndpoint, KafkaSecurity, NoKafka, RefusalLog, aiokafka_kwargs, confluent_conf, endpoint, endpoint_for,
    faust_app_kwargs,
)

ENV_NAMES = ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME",
             "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CA_FILE", "KAFKA_SSL_CERT_FILE", "KAFKA_SSL_KEY_FILE",
             "KAFKA_SSL_KEY_PASSWORD")


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENV_NAMES:
        for n in (name, f"WAPIPE_{name}", f"{name}_FILE", f"WAPIPE_{name}_FILE"):
            monkeypatch.delenv(n, raising=False)
    return monkeypatch


def test_sasl_ssl_scram_from_the_environment_with_the_password_from_a_file(clean_env, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "b1:9093, b2:9093")
    clean_env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    clean_env.setenv("KAFKA_SASL_USERNAME", "wapipe")
    clean_env.setenv("KAFKA_SASL_PASSWORD_FILE", str(pw))
    clean_env.setenv("KAFKA_SSL_CA_FILE", str(ca))
    s = Settings()
    ep = KafkaEndpoint.from_settings(s, s.kafka_bootstrap_servers)
    conf = confluent_conf(ep, **{"group.id": "g"})
    assert isinstance(conf.pop("error_cb"), RefusalLog)
    assert conf == {
        "bootstrap.servers": "b1:9093, b2:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "wapipe", "sasl.password": "s3cret", "ssl.ca.location": str(ca), "group.id": "g"}
    assert "s3cret" not in repr(ep) and "s3cret" not in repr(s)
    assert str(ep) == "b1:9093, b2:9093" and ep.hosts == ["b1:9093", "b2:9093"]


def test_mtls_in_each_library(clean_env, tmp_path):
    from tests.integration.secure_kafka import CLIENT_KEY_PASSWORD, make_certs

    certs = make_certs(tmp_path)
    sec = KafkaSecurity(protocol="SSL", ssl_ca_file=str(certs.ca), ssl_cert_file=str(certs.client_cert),
                        ssl_key_file=str(certs.client_key), ssl_key_password=CLIENT_KEY_PASSWORD)
    ep = KafkaEndpoint("127.0.0.1:9093", sec)
    conf = confluent_conf(ep)
    assert conf["security.protocol"] == "SSL" and conf["ssl.certificate.location"] == str(certs.client_cert)
    assert conf["ssl.key.location"] == str(certs.client_key) and conf["ssl.key.password"] == CLIENT_KEY_PASSWORD
    kw = aiokafka_kwargs(ep)
    assert kw["security_protocol"] == "SSL" and kw["bootstrap_servers"] == "127.0.0.1:9093"
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    fk = faust_app_kwargs(ep)
    assert fk["broker"] == ["kafka://127.0.0.1:9093"]
    assert type(fk["broker_credentials"]).__name__ == "SSLCredentials"
    # a wrong key password is the client's own error, named at once
    bad = KafkaSecurity(protocol="SSL", ssl_ca_file=str(certs.ca), ssl_cert_file=str(certs.client_cert),
                        ssl_key_file=str(certs.client_key), ssl_key_password="wrong")
    with pytest.raises(ssl.SSLError):
        bad.ssl_context()


def test_faust_gets_sasl_credentials_of_the_mechanism():
    for mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        sec = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism=mech, sasl_username="u", sasl_password="p")
        cred = faust_app_kwargs(KafkaEndpoint("h:1", sec))["broker_credentials"]
        assert cred.mechanism.value == mech and cred.protocol.value == "SASL_SSL"
        assert cred.username == "u" and cred.password == "p"
        kw = aiokafka_kwargs(KafkaEndpoint("h:1", sec))
        assert (kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == (mech, "u", "p")
    plain = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    assert faust_app_kwargs(KafkaEndpoint("h:1", plain))["broker_credentials"].protocol.value == "SASL_PLAINTEXT"
    assert "ssl_context" not in aiokafka_kwargs(KafkaEndpoint("h:1", plain))


def test_a_bare_string_is_plaintext_and_endpoint_for_adds_the_settings_security(clean_env):
    assert confluent_conf("h:1") == {"bootstrap.servers": "h:1", "security.protocol": "PLAINTEXT"}  # no error_cb
    assert faust_app_kwargs("h:1")["broker_credentials"] is None
    s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u",
                 kafka_sasl_password="p")
    assert endpoint_for(s, "h:1").security.sasl_username == "u"
    ep = KafkaEndpoint("h:2")
    assert endpoint_for(s, ep) is ep and endpoint(ep) is ep


@pytest.mark.parametrize("kw, says", [
    ({"protocol": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256"}, "KAFKA_SASL_USERNAME"),
    ({"protocol": "SSL", "sasl_username": "u"}, "SASL settings are given"),
    ({"protocol": "PLAINTEXT", "ssl_ca_file": "/etc/hostname"}, "TLS files are given"),
    ({"protocol": "SSL", "ssl_cert_file": "/etc/hostname"}, "both KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE"),
    ({"protocol": "SSL", "ssl_ca_file": "/no/such/ca.pem"}, "KAFKA_SSL_CA_FILE=/no/such/ca.pem: cannot read it"),
    ({"protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS'"),
])
def test_settings_that_do_not_fit_together_are_named(kw, says):
    with pytest.raises(NoKafka, match=re.escape(says)):
        KafkaSecurity(**kw)


def test_resolve_bootstrap_reports_bad_security_settings_as_no_kafka(clean_env):
    from wapipe.app.bootstrap import resolve_bootstrap

    s = Settings(kafka_bootstrap_servers="h:1", kafka_security_protocol="SASL_SSL")
    with pytest.raises(NoKafka, match="KAFKA_SASL_MECHANISM"):
        resolve_bootstrap(s)
    assert resolve_bootstrap(Settings(kafka_bootstrap_servers="h:1")) == KafkaEndpoint("h:1")


opt = st.one_of(st.none(), st.text(min_size=1, max_size=8))


@hsettings(max_examples=300, deadline=None)
@given(protocol=st.sampled_from(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", "sasl_ssl", ""]),
       mechanism=st.one_of(st.none(), st.sampled_from(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"])),
       user=opt, password=opt, ca=st.sampled_from([None, "/etc/hostname", "/nonexistent"]),
       cert=st.sampled_from([None, "/etc/hostname"]), key=st.sampled_from([None, "/etc/hostname"]))
def test_any_combination_is_a_coherent_config_or_a_named_error(protocol, mechanism, user, password, ca, cert, key):
    try:
        sec = KafkaSecurity(protocol=protocol, sasl_mechanism=mechanism, sasl_username=user, sasl_password=password,
                            ssl_ca_file=ca, ssl_cert_file=cert, ssl_key_file=key)
    except NoKafka as exc:
        assert str(exc).startswith(("KAFKA_", "SASL settings", "TLS files", "mTLS needs"))
        return
    conf = confluent_conf(KafkaEndpoint("h:1", sec))
    conf.pop("error_cb", None)
    assert conf["security.protocol"] == protocol
    assert ("sasl.mechanism" in conf) == protocol.startswith("SASL_")
    if protocol.startswith("SASL_"):
        assert conf["sasl.username"] == user and conf["sasl.password"] == password and user
    assert ("ssl.certificate.location" in conf) == (cert is not None) == ("ssl.key.location" in conf)
    if not sec.tls:
        assert not any(k.startswith("ssl.") for k in conf)


# Every client is configured through the edge: no module builds one from a bare bootstrap string.
BARE = [re.compile(r'"bootstrap\.servers"\s*:'), re.compile(r"\bbootstrap_servers\s*="),
        re.compile(r"\bbroker\s*=\s*(?!None)"), re.compile(r"\bAdminClient\(\{(?!\*\*confluent_conf)")]


def test_no_client_is_built_outside_the_edge():
    offenders = []
    for folder in ("wapipe", "processors", "sinks", "producers", "connectors"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path.name == "kafka_edge.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if any(p.search(code) for p in BARE):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_a_setting_with_a_bad_value_is_named_by_the_cli_without_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "WAPIPE_KAFKA_"))}
    env.update({"KAFKA_SECURITY_PROTOCOL": "TLS", "KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "hunter2", "WAPIPE_STATE_DIR": str(tmp_path)})
    proc = subprocess.run([sys.executable, "-m", "wapipe", "topics", "apply"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: setting KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT'" in proc.stderr
    assert "error: setting KAFKA_SASL_MECHANISM: Input should be 'PLAIN'" in proc.stderr
    assert "Traceback" not in proc.stderr and "hunter2" not in proc.stderr + proc.stdout


def test_a_secured_client_logs_a_refusal_once_and_nothing_else():
    from confluent_kafka import KafkaError
    from structlog.testing import capture_logs

    sec = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="pw-123")
    cb = confluent_conf(KafkaEndpoint("h:1", sec))["error_cb"]
    with capture_logs() as logs:
        cb(KafkaError(KafkaError._TRANSPORT, "h:1/bootstrap: Connection refused"))
        cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        for _ in range(3):
            cb(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials"))
    assert [(e["event"], e["log_level"]) for e in logs] == [("kafka.refused", "error")]
    assert logs[0]["reason"] == "authentication failed: SASL authentication error: invalid credentials"
    assert logs[0]["client"] == "SASL_SSL, PLAIN as 'u'" and "pw-123" not in str(logs)
