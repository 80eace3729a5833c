"""Kafka security against a real broker with SASL_SSL and mTLS listeners (issue 21 #4): each SASL
mechanism and mTLS work for the librdkafka and aiokafka clients, a wrong password or a missing
client certificate is refused with a message that names it (CLI and service exit 1, no hang),
and the whole pipeline (`wapipe demo`: ingress → normaliser → send worker → sandbox → sink →
ClickHouse) runs over SASL_SSL with SCRAM-SHA-512 and the password read from a file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.integration.secure_kafka import CLIENT_KEY_PASSWORD, USERS, secure_broker
from wapipe.config import Settings
from wapipe.app.bootstrap import resolve_bootstrap
from wapipe.kafka import consumer, producer
from wapipe.kafka_edge import KafkaAuthError, KafkaEndpoint, KafkaSecurity, aiokafka_kwargs, check_access

pytestmark = pytest.mark.integration

TOPIC = "wa.audit"  # any declared topic: applied by secure_broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with secure_broker(tmp_path_factory.mktemp("secure")) as b:
        yield b


def _settings(env: dict[str, str], tmp_path) -> Settings:
    mp = pytest.MonkeyPatch()
    try:
        for k, v in env.items():
            mp.setenv(k, v)
        return Settings(state_dir=tmp_path / "state")
    finally:
        mp.undo()


def _roundtrip(ep: KafkaEndpoint) -> bytes:
    """Produce one record (librdkafka) and read it back with librdkafka and with aiokafka."""
    key = uuid.uuid4().hex.encode()
    p = producer(ep)
    delivered = []
    p.produce(TOPIC, key=key, value=b"over " + ep.security.protocol.encode(), on_delivery=lambda e, m: delivered.append((e, m)))
    assert p.flush(30) == 0
    err, msg = delivered[0]
    assert err is None
    from confluent_kafka import TopicPartition

    c = consumer(ep, f"sec-{uuid.uuid4().hex}")
    try:
        c.assign([TopicPartition(TOPIC, msg.partition(), msg.offset())])
        got = c.poll(30)
        assert got is not None and got.error() is None and got.key() == key
    finally:
        c.close()

    async def aio() -> bytes:
        from aiokafka import AIOKafkaConsumer
        from aiokafka import TopicPartition as ATP

        ac = AIOKafkaConsumer(**aiokafka_kwargs(ep), enable_auto_commit=False, group_id=None)
        await ac.start()
        try:
            tp = ATP(TOPIC, msg.partition())
            ac.assign([tp])
            ac.seek(tp, msg.offset())
            rec = await asyncio.wait_for(ac.getone(), 30)
            assert rec.key == key
            return rec.value
        finally:
            await ac.stop()

    return asyncio.run(aio())


@pytest.mark.parametrize("mechanism", list(USERS))
def test_each_sasl_mechanism_over_tls(broker, tmp_path, mechanism):
    s = _settings(broker.sasl_env(mechanism, tmp_path / "pw"), tmp_path)
    ep = resolve_bootstrap(s)
    assert ep.bootstrap == broker.sasl_ssl and ep.security.sasl_mechanism == mechanism
    assert _roundtrip(ep) == b"over SASL_SSL"


def test_mtls_client_with_an_encrypted_key(broker, tmp_path):
    s = _settings(broker.mtls_env(), tmp_path)
    ep = resolve_bootstrap(s)
    assert ep.security.ssl_key_password == CLIENT_KEY_PASSWORD
    assert _roundtrip(ep) == b"over SSL"


def test_refusals_are_named_quickly(broker):
    ca = str(broker.certs.ca)
    cases = {
        "wrong password": (broker.sasl_ssl, KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                                                          sasl_username=USERS["SCRAM-SHA-256"][0], sasl_password="nope",
                                                          ssl_ca_file=ca), "authentication failed"),
        "unknown user": (broker.sasl_ssl, KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN",
                                                        sasl_username="mallory", sasl_password="x", ssl_ca_file=ca),
                         "authentication failed"),
        "no client certificate": (broker.mtls, KafkaSecurity(protocol="SSL", ssl_ca_file=ca),
                                  "authentication failed (TLS handshake)"),
        "broker not trusted": (broker.sasl_ssl, KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN",
                                                              sasl_username=USERS["PLAIN"][0],
                                                              sasl_password=USERS["PLAIN"][1]),
                               "certificate verify failed"),
    }
    for name, (boot, sec, says) in cases.items():
        t0 = time.monotonic()
        with pytest.raises(KafkaAuthError, match=r"refused this client") as exc:
            check_access(KafkaEndpoint(boot, sec), timeout=20)
        assert says in str(exc.value), (name, str(exc.value))
        assert time.monotonic() - t0 < 10, name
        assert "nope" not in str(exc.value)


def _run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wapipe", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_and_service_with_a_wrong_password_exit_with_the_reason(broker, tmp_path):
    env = {**broker.sasl_env("SCRAM-SHA-512", tmp_path / "pw", password="not-the-password"),
           "WAPIPE_STATE_DIR": str(tmp_path / "state"), "WAPIPE_PROBE_ENABLED": "false"}
    for args in (["topics", "apply"], ["sink"], ["normalise"], ["stack", "up"], ["demo", "--messages", "10"]):
        t0 = time.monotonic()
        proc = _run(args, env)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, (args, out[-3000:])
        assert "authentication failed" in out and "SCRAM-SHA-512" in out, (args, out[-3000:])
        assert "Traceback" not in out and "not-the-password" not in out, (args, out[-3000:])
        assert time.monotonic() - t0 < 45, args
    # the same command with the right password works
    ok = _run(["topics", "apply"], {**broker.sasl_env("SCRAM-SHA-512", tmp_path / "pw2"),
                                    "WAPIPE_STATE_DIR": str(tmp_path / "state")})
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.slow
def test_the_whole_pipeline_runs_over_sasl_ssl(broker, tmp_path):
    """`wapipe demo` is given the SASL_SSL listener alone: every service (Faust apps, librdkafka
    and aiokafka clients) must authenticate; the report read back from ClickHouse equals what the
    sandbox saw."""
    unique = uuid.uuid4().hex[:8]
    env = {**os.environ, **broker.sasl_env("SCRAM-SHA-512", tmp_path / "pw"),
           "WAPIPE_STATE_DIR": str(tmp_path / "state"), "WAPIPE_REPORTS_DIR": str(tmp_path / "reports"),
           "WAPIPE_SEND_APP_ID": f"sec-send-{unique}", "WAPIPE_NORMALISE_APP_ID": f"sec-normalise-{unique}",
           "WAPIPE_SINK_GROUP": f"sec-sink-{unique}", "COLUMNS": "160"}
    cmd = [sys.executable, "-m", "wapipe", "demo", "--messages", "120", "--transactional", "20", "--invalid", "4",
           "--failing", "4", "--duplicates", "2", "--timeout", "240"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
    out = proc.stdout + proc.stderr
    files = sorted((tmp_path / "state" / "demo").glob("summary-*.json"))
    assert files, out[-6000:]
    summary = json.loads(files[-1].read_text())
    from tests.integration.test_demo import assert_all_stopped

    assert_all_stopped(summary)
    assert proc.returncode == 0, out[-6000:]
    assert broker.sasl_ssl in out and broker.plaintext not in out
    report, seen, sandbox = summary["report_totals"], summary["sandbox_scope_totals"], summary["sandbox"]
    assert report["requested"] == 120 + 20 + 4 + 2
    assert report["accepted"] == seen["accepted"] == sandbox["accepted"] == 140
    assert seen["delivered"] == report["delivered"] == sandbox["statuses"].get("delivered", 0) > 0
    assert seen["failed"] == sum(sandbox["failed_async"].values()) == 4
    assert report["rejected"] == 4 and report["duplicate"] == 2 and report["pending"] == 0


def test_a_running_client_refused_later_says_so_once(broker):
    """Credentials rotated under a running service: its librdkafka clients log `kafka.refused`."""
    from structlog.testing import capture_logs

    sec = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username=USERS["SCRAM-SHA-256"][0],
                        sasl_password="rotated-away", ssl_ca_file=str(broker.certs.ca))
    c = consumer(KafkaEndpoint(broker.sasl_ssl, sec), f"sec-{uuid.uuid4().hex}", log_level=0)
    try:
        with capture_logs() as logs:
            c.subscribe([TOPIC])
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not logs:
                c.poll(0.5)
            for _ in range(4):  # more refusals: still one line
                c.poll(0.5)
    finally:
        c.close()
    refused = [e for e in logs if e["event"] == "kafka.refused"]
    assert len(refused) == 1, logs
    assert refused[0]["reason"].startswith("authentication failed: ") and "SCRAM-SHA-256" in refused[0]["reason"]
    assert "rotated-away" not in str(logs)


@pytest.mark.slow
def test_the_send_worker_runs_over_mtls(broker, tmp_path):
    """Faust with SSLCredentials, aiokafka followers and librdkafka clients with a client
    certificate: the worker prints READY only once its partitions are assigned."""
    from wapipe.app.services import ServiceSpec, Supervisor

    unique = uuid.uuid4().hex[:8]
    env = {**os.environ, **broker.mtls_env(), "WAPIPE_STATE_DIR": str(tmp_path / "state"),
           "WAPIPE_SEND_APP_ID": f"sec-mtls-{unique}", "WAPIPE_SEND_OFFSET_RESET": "latest"}
    with Supervisor(tmp_path / "logs", env=env) as sup:
        svc = sup.start(ServiceSpec("worker", ("worker",), ready_timeout=150))
        time.sleep(3)
        assert svc.alive(), svc.tail()[-3000:]
    text = (tmp_path / "logs" / "worker.log").read_text()
    assert "kafka.refused" not in text and "READY worker" in text
