"""The send pipeline end to end: real broker, the Meta sandbox over HTTP, `wapipe worker` as a
subprocess. Each test uses its own tenant and its own sandbox numbers, so tests sharing the
session's broker never see each other's commands dispatched."""

from __future__ import annotations

import base64
import datetime as dt
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr

from connectors.meta.messages import TemplateMessage
from producers.erp import ErpProducer, Lane, ResultReader, Routing, template, text
from wapipe.services import ServiceSpec, Supervisor
from wapipe.testing import make_settings

pytestmark = pytest.mark.integration

# One KEK and pepper for the session: every worker and producer of every test can read what the
# others sealed (they share the broker's wa.subject.keys).
SESSION_KEK = base64.b64encode(os.urandom(32)).decode()
SESSION_PEPPER = base64.b64encode(os.urandom(32)).decode()


@dataclass
class SendWorld:
    settings: object
    bootstrap: str
    sandbox: object
    tenant_id: str
    numbers: list[str]
    supervisor: Supervisor
    env: dict
    erp: ErpProducer
    reader: ResultReader
    base: str = field(default_factory=lambda: _digits(3))
    worker: object = None

    # --- the worker --------------------------------------------------------------------------
    def start_worker(self, name: str = "worker", **env: str):
        spec = ServiceSpec(name, ("worker",), env={**self.env, **env}, ready_timeout=90, stop_timeout=20)
        self.worker = self.supervisor.start(spec)
        return self.worker

    def kill_worker(self) -> None:
        import signal

        os.killpg(self.worker.proc.pid, signal.SIGKILL)
        self.worker.proc.wait(10)

    # --- commands ----------------------------------------------------------------------------
    def routing(self, key: str, *, number: int = 0, lane: Lane = Lane.TRANSACTIONAL, campaign: str | None = None,
                **kw) -> Routing:
        return Routing(tenant_id=self.tenant_id, phone_number_id=self.numbers[number], idempotency_key=key, lane=lane,
                       campaign_id=campaign, **kw)

    def recipient(self, i: int) -> str:
        return f"4915{self.base}{i:05d}"

    def subject(self, wa_id: str) -> str:
        from wapipe.privacy.subjects import pepper_from, subject_id

        return subject_id(pepper_from(self.settings), self.tenant_id, wa_id)

    def inbound(self, wa_id: str, number: int = 0, *, hours_ago: float = 0.0) -> None:
        """A user wrote to our number: the sandbox opens its window, and the InboundMessage the
        normaliser would publish lands on wa.inbound.messages (written here directly)."""
        from wapipe.avro import AvroSerde
        from wapipe.kafka import producer as make_producer
        from wapipe.topics import INBOUND_MESSAGES

        pnid = self.numbers[number]
        if not hours_ago:
            self.sandbox.control.inbound(pnid, wa_id, "hi")
        at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)
        rec = {"event_id": uuid.uuid4().hex, "tenant_id": self.tenant_id, "waba_id": self.sandbox.waba_id,
               "phone_number_id": pnid, "message_id": f"wamid.in{uuid.uuid4().hex}", "type": "text", "timestamp": at,
               "subject_id": self.subject(wa_id), "pii": None, "context_message_id": None, "received_at": at,
               "extra": "{}"}
        p = make_producer(self.bootstrap)
        p.produce(INBOUND_MESSAGES, key=pnid.encode(), value=AvroSerde().encode("InboundMessage", rec))
        assert p.flush(10) == 0

    def send(self, message, routing: Routing, **kw) -> dict:
        return self.erp.send(message, routing, **kw)

    def publish(self, pairs) -> list[dict]:
        cmds = [self.erp.command(m, r) for m, r in pairs]
        self.erp.publish(cmds)
        return cmds

    def final(self, keys, timeout: float = 60.0) -> dict[str, dict]:
        got = self.reader.wait_final([(self.tenant_id, k) for k in keys], timeout=timeout)
        return {k[1]: v for k, v in got.items()}

    def results(self, timeout: float = 3.0) -> list[dict]:
        return [r for r in self.reader.iter(tenant_id=self.tenant_id, timeout=timeout)]

    def sent_by_key(self) -> Counter:
        """What the sandbox accepted, per biz_opaque_callback_data (= tenant/idempotency key)."""
        snap = self.sandbox.control.counters()
        msgs = self.sandbox.control.messages()
        c = Counter(m["biz_opaque_callback_data"] for m in msgs
                    if m["phone_number_id"] in self.numbers and m.get("biz_opaque_callback_data"))
        assert sum(c.values()) == sum(snap["numbers"].get(n, {}).get("accepted", 0) for n in self.numbers)
        return c


def _digits(n: int) -> str:
    return str(random.randint(10 ** (n - 1), 10 ** n - 1))


@pytest.fixture
def send_world(tmp_path, kafka, topics, meta_sandbox, request):
    from wapipe.kafka import producer as make_producer
    from wapipe.privacy.kek import load_kek
    from wapipe.tenants.models import PhoneNumber, Template, Tenant, TenantStatus
    from wapipe.tenants.store import publish_template, publish_tenant

    marker = request.node.get_closest_marker("send_world")
    opts = dict(marker.kwargs) if marker else {}
    throughput = opts.get("throughput", 200)
    numbers = ["39" + _digits(8) for _ in range(opts.get("numbers", 1))]
    s = make_settings(tmp_path / "state", kafka_bootstrap_servers=kafka, kek=SecretStr(SESSION_KEK),
                      subject_pepper=SecretStr(SESSION_PEPPER), meta_graph_url=meta_sandbox.url)
    sb = meta_sandbox
    for n in numbers:
        sb.control.add_number(n, sb.waba_id, throughput=throughput)
    sb.control.configure(limits={"pair_burst": opts.get("pair_burst", 45), "pair_interval_s": opts.get("pair_interval_s", 6.0)})
    tenant_id = f"t{uuid.uuid4().hex[:8]}"
    kek = load_kek(s)
    tenant = Tenant(tenant_id=tenant_id, status=TenantStatus.ACTIVE, display_name="test", business_id=sb.business_id,
                    waba_id=sb.waba_id,
                    numbers=tuple(PhoneNumber(phone_number_id=n, throughput_mps=throughput) for n in numbers),
                    messaging_limit=opts.get("messaging_limit", 10_000)).with_token(kek, sb.token)
    p = make_producer(kafka)
    publish_tenant(p, tenant)
    for name, params, status in (("hello_world", 0, "APPROVED"), ("order_update", 2, "APPROVED"),
                                 ("promo", 0, "APPROVED"), ("paused_one", 0, "PAUSED")):
        publish_template(p, Template(tenant_id=tenant_id, waba_id=sb.waba_id, name=name, language="en_US",
                                     status=status, body_parameter_count=params))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka, "WAPIPE_STATE_DIR": str(tmp_path / "state"), "WAPIPE_KEK": SESSION_KEK,
        "WAPIPE_SUBJECT_PEPPER": SESSION_PEPPER, "WAPIPE_META_GRAPH_URL": sb.url,
        "WAPIPE_SEND_APP_ID": f"wapipe-send-{tenant_id}", "WAPIPE_SEND_RETRY_BASE_S": "0.2",
        "WAPIPE_SEND_GRAPH_TIMEOUT_S": "2", "WAPIPE_TOPIC_PARTITIONS": str(s.topic_partitions),
        "WAPIPE_LOG_LEVEL": "INFO",
    }
    env.update(opts.get("env", {}))
    erp = ErpProducer.from_settings(s, kafka)
    reader = ResultReader(kafka)
    sup = Supervisor(tmp_path / "logs")
    world = SendWorld(s, kafka, sb, tenant_id, numbers, sup, env, erp, reader)
    try:
        yield world
    finally:
        sup.stop_all()
        reader.close()
        erp.close()


def _by_key(results: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(r["idempotency_key"], []).append(r)
    return out


# --- tests ---------------------------------------------------------------------------------------
def test_template_and_session_messages_are_sent_once(send_world):
    w = send_world
    w.start_worker()
    w.inbound(w.recipient(2))  # opens recipient 2's window
    time.sleep(0.5)
    w.send(template(w.recipient(1), "order_update", "en_US", body=["A-1", "shipped"]), w.routing("k1"))
    w.send(text(w.recipient(2), "your invoice is ready"), w.routing("k2"))
    w.send(template(w.recipient(3), "hello_world"), w.routing("k3"))
    final = w.final(["k1", "k2", "k3"])
    assert {k: r["outcome"] for k, r in final.items()} == {"k1": "ACCEPTED", "k2": "ACCEPTED", "k3": "ACCEPTED"}, final
    assert final["k1"]["wamid"].startswith("wamid.")
    assert w.sent_by_key() == Counter({f"{w.tenant_id}/k{i}": 1 for i in (1, 2, 3)})
