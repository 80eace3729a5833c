"""A service's probe: /metrics, /healthz from its loop's heartbeat, /readyz from its own check,
and consumer lag read from the real broker."""

from __future__ import annotations

import time

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from prometheus_client import Counter

from wapipe.probe import ConsumerLag, Probe
from wapipe.edge.clients import admin_client

pytestmark = pytest.mark.integration


def test_metrics_health_and_readiness():
    why = {"reason": "broker not answering"}
    probe = Probe("svc", ready=lambda: why["reason"], stale_after=0.5)
    sent = Counter("wapipe_test_things", "things", ["kind"], registry=probe.registry)
    sent.labels("a").inc(3)
    url = probe.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=5) as http:
            m = http.get("/metrics")
            assert m.status_code == 200 and 'wapipe_test_things_total{kind="a"} 3.0' in m.text
            assert http.get("/healthz").status_code == 200
            r = http.get("/readyz")
            assert r.status_code == 503 and "broker not answering" in r.text
            why["reason"] = None
            assert http.get("/readyz").status_code == 200
            time.sleep(0.7)  # no beat: the loop is wedged
            h = http.get("/healthz")
            assert h.status_code == 503 and "has not beaten" in h.text
            assert http.get("/readyz").status_code == 503
            probe.beat()
            assert http.get("/healthz").status_code == 200
            assert http.get("/nope").status_code == 404
    finally:
        probe.close()


def test_a_failing_readiness_check_is_a_503_not_a_dead_server():
    def boom() -> str | None:
        raise RuntimeError("no admin client")

    probe = Probe("svc", ready=boom)
    url = probe.start()
    try:
        r = httpx.get(url + "/readyz", timeout=5)
        assert r.status_code == 503 and "no admin client" in r.text
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    finally:
        probe.close()


def test_consumer_lag_per_partition(kafka, unique):
    topic = f"probe-{unique}"
    admin = admin_client(kafka)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": kafka, "acks": "all"})
    for i in range(5):
        p.produce(topic, value=b"x", partition=0)
    for i in range(2):
        p.produce(topic, value=b"y", partition=1)
    assert p.flush(30) == 0
    group = f"g-{unique}"
    c = Consumer({"bootstrap.servers": kafka, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    c.close()
    lag = ConsumerLag(kafka, group, (topic, "no-such-topic"), ttl=0)
    assert sorted(lag.lags()) == [(topic, 0, 3, 2), (topic, 1, 2, 0)]  # p1 never committed: both records due
    probe = Probe("svc")
    probe.registry.register(lag)
    url = probe.start()
    try:
        text = httpx.get(url + "/metrics", timeout=10).text
        assert f'wapipe_consumer_lag{{group="{group}",partition="0",topic="{topic}"}} 3.0' in text
        assert f'wapipe_consumer_committed_total{{group="{group}",partition="0",topic="{topic}"}} 2.0' in text
    finally:
        probe.close()
