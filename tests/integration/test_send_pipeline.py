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
from wapipe.app.services import ServiceSpec, Supervisor
from wapipe.topics import CAMPAIGN_CONTROL
from tests.harness import make_settings

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
    warm_keys: set = field(default_factory=set)

    # --- the worker --------------------------------------------------------------------------
    def start_worker(self, name: str = "worker", *, warm: bool = True, **env: str):
        spec = ServiceSpec(name, ("worker",), env={**self.env, **env}, ready_timeout=90, stop_timeout=20)
        self.worker = self.supervisor.start(spec)
        if warm:
            self.warm_up()
        return self.worker

    def warm_up(self) -> None:
        """A new consumer group starts at the end of the topics (WAPIPE_SEND_OFFSET_RESET=latest:
        the session's broker holds every earlier test's commands). Send one command per lane
        topic, again until it is answered, so the worker is positioned before the test begins."""
        for lane in (Lane.TRANSACTIONAL, Lane.CAMPAIGN):
            for attempt in range(15):
                key = f"warm-{lane.value}-{attempt}"
                self.send(template(self.recipient(99_000 + attempt), "hello_world"),
                          self.routing(key, number=len(self.numbers) - 1, lane=lane,
                                       campaign="warm-up" if lane == Lane.CAMPAIGN else None))
                if self.reader.wait_final([(self.tenant_id, key)], timeout=4):
                    break
            else:
                raise AssertionError(f"the worker never answered on the {lane.value} lane")
        self.warm_keys = {k for k in self.sent_by_key(check=False)}

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

    def ref(self, wamid: str) -> str:
        """The keyed ref the pipeline keeps instead of a wamid (wapipe/privacy/wamids.py)."""
        from wapipe.privacy.wamids import WamidRefs

        return WamidRefs.from_settings(self.settings)(wamid)

    def inbound(self, wa_id: str, number: int = 0, *, hours_ago: float = 0.0) -> None:
        """A user wrote to our number: the sandbox opens its window, and the InboundMessage the
        normaliser would publish lands on wa.inbound.messages (written here directly)."""
        from wapipe.avro import AvroSerde
        from wapipe.edge.clients import producer as make_producer
        from wapipe.topics import INBOUND_MESSAGES

        pnid = self.numbers[number]
        if not hours_ago:
            self.sandbox.control.inbound(pnid, wa_id, "hi")
        at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)
        rec = {"event_id": uuid.uuid4().hex, "tenant_id": self.tenant_id, "waba_id": self.sandbox.waba_id,
               "phone_number_id": pnid, "message_id": f"wamid.in{uuid.uuid4().hex}", "type": "text", "timestamp": at,
               "subject_id": self.subject(wa_id), "pii": None, "context_message_id": None, "received_at": at,
               "extra": "{}"}
        p, landed = make_producer(self.bootstrap), []
        p.produce(INBOUND_MESSAGES, key=pnid.encode(), value=AvroSerde().encode("InboundMessage", rec),
                  on_delivery=lambda err, m: landed.append((err, m.partition(), m.offset())))
        assert p.flush(10) == 0 and landed and landed[0][0] is None, landed
        if self.worker is not None and self.worker.proc.poll() is None:  # (else the worker reads it as it starts)
            self.followed(INBOUND_MESSAGES, *landed[0][1:])

    def followed_to_end(self, topic: str) -> None:
        """Return once the running worker's view of ``topic`` has read every record on it now."""
        from wapipe.edge.scan import end_offsets

        for partition, end in end_offsets(self.bootstrap, topic).items():
            if end > 0:
                self.followed(topic, partition, end - 1)

    def followed(self, topic: str, partition: int, offset: int, timeout: float = 60.0) -> None:
        """Return once the running worker's view of ``topic`` has read the record at ``offset``
        (``wapipe_follower_position`` on its /metrics), not after a guess of how long that takes."""
        name = f'wapipe_follower_position{{partition="{partition}",topic="{topic}"}}'  # labels as /metrics sorts them
        deadline = time.monotonic() + timeout
        while _scrape(self).get(name, -1) <= offset:
            assert time.monotonic() < deadline, (f"the worker's view of {topic} did not read offset {offset} in "
                                                 f"{timeout:g} s", {k: v for k, v in _scrape(self).items()
                                                                    if k.startswith("wapipe_follower_position")})
            time.sleep(0.05)

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
        """Every result of this tenant read so far, after ``timeout`` s without a new one."""
        for _ in self.reader.iter(timeout=timeout):
            pass
        return [r for r in self.reader.seen if r["tenant_id"] == self.tenant_id]

    def campaign_under_way(self, campaign: str, n: int, *, accepted: int) -> list[str]:
        """Publish a campaign of ``n`` template commands spread over the world's numbers; return its
        keys once the sandbox accepted ``accepted`` messages from them (within 60 s)."""
        keys = [f"{campaign}-{i}" for i in range(n)]
        self.publish([(template(self.recipient(i), "hello_world"),
                       self.routing(k, number=i % len(self.numbers), lane=Lane.CAMPAIGN, campaign=campaign))
                      for i, k in enumerate(keys)])
        deadline = time.monotonic() + 60
        while self.accepted() < accepted:
            assert time.monotonic() < deadline, "the campaign did not start"
            time.sleep(0.05)
        return keys

    def accepted(self) -> int:
        """Messages the sandbox accepted from the world's numbers so far."""
        counters = self.sandbox.control.counters()["numbers"]
        return sum(counters.get(n, {}).get("accepted", 0) for n in self.numbers)

    def settled_at_most_once(self, keys, timeout: float) -> tuple[dict[str, dict], Counter, Counter]:
        """After a fault: every key has a final result, ACCEPTED or UNKNOWN; none was sent twice, and
        each ACCEPTED one exactly once (sandbox counters). Fails naming the keys without a result and
        how often each was sent. Returns the results, the sends per key and the outcome counts."""
        final = self.final(keys, timeout=timeout)
        sent = self.sent_by_key()
        missing = {k: sent[f"{self.tenant_id}/{k}"] for k in keys if k not in final}
        assert not missing, f"{len(missing)} commands have no final result (key: times sent): {missing}"
        outcomes = Counter(r["outcome"] for r in final.values())
        assert set(outcomes) <= {"ACCEPTED", "UNKNOWN"}, outcomes
        assert max(sent.values()) == 1, {k: c for k, c in sent.items() if c > 1}  # never twice
        for k, r in final.items():
            if r["outcome"] == "ACCEPTED":
                assert sent[f"{self.tenant_id}/{k}"] == 1, (k, r)
        return final, sent, outcomes

    def sent_by_key(self, check: bool = True) -> Counter:
        """What the sandbox accepted, per biz_opaque_callback_data (= tenant/idempotency key),
        without the warm-up commands."""
        msgs = self.sandbox.control.messages()
        return Counter(m["biz_opaque_callback_data"] for m in msgs
                       if m["phone_number_id"] in self.numbers and m.get("biz_opaque_callback_data")
                       and not (check and m["biz_opaque_callback_data"] in self.warm_keys))


def _digits(n: int) -> str:
    return str(random.randint(10 ** (n - 1), 10 ** n - 1))


@pytest.fixture
def send_world(tmp_path, kafka, topics, meta_sandbox, request):
    from wapipe.edge.clients import producer as make_producer
    from wapipe.privacy.kek import load_kek
    from wapipe.tenants.models import PhoneNumber, Template, Tenant, TenantStatus
    from wapipe.tenants.store import publish_template, publish_tenant

    marker = request.node.get_closest_marker("send_world")
    opts = dict(marker.kwargs) if marker else {}
    # per number: (the throughput our registry believes, the throughput the sandbox enforces)
    rates = opts.get("rates", [(200, 200)])
    numbers = ["39" + _digits(8) for _ in rates]
    s = make_settings(tmp_path / "state", kafka_bootstrap_servers=kafka, kek=SecretStr(SESSION_KEK),
                      subject_pepper=SecretStr(SESSION_PEPPER), meta_graph_url=meta_sandbox.url)
    sb = meta_sandbox
    for n, (_, enforced) in zip(numbers, rates):
        sb.control.add_number(n, sb.waba_id, throughput=enforced)
    sb.control.configure(limits={"pair_burst": opts.get("pair_burst", 45), "pair_interval_s": opts.get("pair_interval_s", 6.0)})
    tenant_id = f"t{uuid.uuid4().hex[:8]}"
    kek = load_kek(s)
    tenant = Tenant(tenant_id=tenant_id, status=TenantStatus.ACTIVE, display_name="test", business_id=sb.business_id,
                    waba_id=sb.waba_id,
                    numbers=tuple(PhoneNumber(phone_number_id=n, throughput_mps=believed)
                                  for n, (believed, _) in zip(numbers, rates)),
                    messaging_limit=opts.get("messaging_limit", 10_000)).with_token(kek, sb.token)
    p = make_producer(kafka)
    publish_tenant(p, tenant)
    # the categories the sandbox has (connectors/meta/sandbox/fixture.py): the worker's opt-out check reads them
    for name, params, status, category in (("hello_world", 0, "APPROVED", "UTILITY"),
                                           ("order_update", 2, "APPROVED", "UTILITY"),
                                           ("promo", 0, "APPROVED", "MARKETING"), ("paused_one", 0, "PAUSED", "UTILITY")):
        publish_template(p, Template(tenant_id=tenant_id, waba_id=sb.waba_id, name=name, language="en_US",
                                     status=status, category=category, body_parameter_count=params))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka, "WAPIPE_STATE_DIR": str(tmp_path / "state"), "WAPIPE_KEK": SESSION_KEK,
        "WAPIPE_SUBJECT_PEPPER": SESSION_PEPPER, "WAPIPE_META_GRAPH_URL": sb.url,
        "WAPIPE_SEND_APP_ID": f"wapipe-send-{tenant_id}", "WAPIPE_SEND_RETRY_BASE_S": "0.2",
        "WAPIPE_SEND_GRAPH_TIMEOUT_S": "2", "WAPIPE_TOPIC_PARTITIONS": str(s.topic_partitions),
        "WAPIPE_LOG_LEVEL": "INFO", "WAPIPE_SEND_OFFSET_RESET": "latest",
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
    w.inbound(w.recipient(2))  # opens recipient 2's window (the worker's view has read it when this returns)
    w.send(template(w.recipient(1), "order_update", "en_US", body=["A-1", "shipped"]), w.routing("k1"))
    w.send(text(w.recipient(2), "your invoice is ready"), w.routing("k2"))
    w.send(template(w.recipient(3), "hello_world"), w.routing("k3"))
    final = w.final(["k1", "k2", "k3"])
    assert {k: r["outcome"] for k, r in final.items()} == {"k1": "ACCEPTED", "k2": "ACCEPTED", "k3": "ACCEPTED"}, final
    assert final["k1"]["wamid"].startswith("wref.")  # the keyed ref, never the wamid (it embeds the number)
    assert w.sent_by_key() == Counter({f"{w.tenant_id}/k{i}": 1 for i in (1, 2, 3)})


def _publish_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    from wapipe.edge.clients import JAVA_PARTITIONER, producer as make_producer

    p = make_producer(bootstrap, partitioner=JAVA_PARTITIONER)
    p.produce(topic, key=key, value=value)
    assert p.flush(10) == 0


def _dead_letters(bootstrap: str) -> list[dict]:
    from tests.integration.kafka_helpers import read_all
    from wapipe.avro import AvroSerde
    from wapipe.topics import SEND_DEAD

    serde = AvroSerde()
    return [serde.decode(m.value(), "DeadLetter") for m in read_all(bootstrap, SEND_DEAD)]


def test_every_validation_failure_is_a_clear_result_and_nothing_is_sent(send_world):
    from wapipe.edge.clients import producer as make_producer
    from wapipe.tenants.models import PhoneNumber, Tenant, TenantStatus
    from wapipe.tenants.store import publish_tenant
    from wapipe.topics import SEND_REQUESTED

    w = send_world
    suspended = Tenant(tenant_id=w.tenant_id + "s", status=TenantStatus.SUSPENDED, waba_id=w.sandbox.waba_id,
                       numbers=(PhoneNumber(phone_number_id="39" + _digits(8)),))
    publish_tenant(make_producer(w.bootstrap), suspended)
    w.start_worker()
    w.inbound(w.recipient(7), hours_ago=25)  # a window that closed an hour ago
    r = w.recipient
    soon_past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    cases = {
        "unknown-tpl": (template(r(1), "no_such_template"), {}),
        "paused-tpl": (template(r(1), "paused_one"), {}),
        "param-count": (template(r(1), "order_update", body=["only one"]), {}),
        "no-window": (text(r(2), "hello"), {}),
        "closed-window": (text(r(7), "hello"), {}),
        "expired": (template(r(1), "hello_world"), {"valid_until": soon_past}),
    }
    for key, (msg, kw) in cases.items():
        w.send(msg, w.routing(key, **kw))
    w.send(template(r(1), "hello_world"), Routing(tenant_id="nobody-" + w.tenant_id, phone_number_id=w.numbers[0],
                                                   idempotency_key="unknown-tenant"))
    w.send(template(r(1), "hello_world"), Routing(tenant_id=w.tenant_id, phone_number_id="3911111111",
                                                   idempotency_key="foreign-number"))
    w.send(template(r(1), "hello_world"), Routing(tenant_id=suspended.tenant_id,
                                                   phone_number_id=suspended.numbers[0].phone_number_id,
                                                   idempotency_key="suspended"))
    garbage = b"not an avro record " + uuid.uuid4().hex.encode()
    _publish_raw(w.bootstrap, SEND_REQUESTED, w.tenant_id.encode(), garbage)

    final = w.final(cases)
    reasons = {k: (v["outcome"], v["reason"]) for k, v in final.items()}
    assert reasons["unknown-tpl"][0] == "REJECTED" and "not known" in reasons["unknown-tpl"][1]
    assert reasons["paused-tpl"][0] == "REJECTED" and "PAUSED" in reasons["paused-tpl"][1]
    assert reasons["param-count"][0] == "REJECTED" and "takes 2 body parameter" in reasons["param-count"][1]
    assert reasons["no-window"][0] == "REJECTED" and "window" in reasons["no-window"][1]
    assert reasons["closed-window"][0] == "REJECTED" and "outside the 24 h" in reasons["closed-window"][1]
    assert reasons["expired"][0] == "EXPIRED"
    others = w.reader.wait_final([("nobody-" + w.tenant_id, "unknown-tenant"), (w.tenant_id, "foreign-number"),
                                  (suspended.tenant_id, "suspended")], timeout=30)
    by_key = {k[1]: (v["outcome"], v["reason"]) for k, v in others.items()}
    assert by_key["unknown-tenant"][0] == "REJECTED" and "unknown tenant" in by_key["unknown-tenant"][1]
    assert by_key["foreign-number"][0] == "REJECTED" and "does not belong" in by_key["foreign-number"][1]
    assert by_key["suspended"][0] == "REJECTED" and "SUSPENDED" in by_key["suspended"][1]
    deadline = time.monotonic() + 20
    while not any(d["value"] == garbage for d in _dead_letters(w.bootstrap)) and time.monotonic() < deadline:
        time.sleep(0.5)
    dead = [d for d in _dead_letters(w.bootstrap) if d["value"] == garbage]
    assert dead and "not an Avro record" in dead[0]["reason"] and dead[0]["error_type"] == "SerdeError"
    assert w.sent_by_key() == Counter()  # Meta saw none of them
    assert w.worker.alive()


def test_duplicates_get_the_original_result_and_are_sent_once(send_world):
    w = send_world
    w.start_worker()
    first = w.send(template(w.recipient(1), "hello_world"), w.routing("dup-1"))
    assert w.final(["dup-1"])["dup-1"]["outcome"] == "ACCEPTED"
    # the ERP sends the same key again later (new command id) ...
    w.send(template(w.recipient(1), "hello_world"), w.routing("dup-1"))
    # ... two commands with one key at once, and one record delivered twice (same command id)
    w.publish([(template(w.recipient(2), "hello_world"), w.routing("dup-2")),
               (template(w.recipient(2), "hello_world"), w.routing("dup-2"))])
    again = w.erp.command(template(w.recipient(3), "hello_world"), w.routing("dup-3"))
    w.erp.publish([again, again])
    assert {k: v["outcome"] for k, v in w.final(["dup-2", "dup-3"]).items()} == {"dup-2": "ACCEPTED", "dup-3": "ACCEPTED"}
    # ... and delivered once more after it was sent, then a later command on the same number (so
    # on the same partitions, read after it): its result shows the redelivery was read by then
    w.erp.publish([again])
    w.send(template(w.recipient(4), "hello_world"), w.routing("dup-4"))
    assert w.final(["dup-4"])["dup-4"]["outcome"] == "ACCEPTED"
    results = _by_key(w.results(timeout=4))
    dup1 = [r for r in results["dup-1"] if r["command_id"] != first["command_id"]]
    assert [(r["outcome"], r["original_outcome"]) for r in dup1] == [("DUPLICATE", "ACCEPTED")]
    assert dup1[0]["wamid"] == [r for r in results["dup-1"] if r["outcome"] == "ACCEPTED"][0]["wamid"]
    assert sorted(r["outcome"] for r in results["dup-2"]) == ["ACCEPTED", "DUPLICATE"]
    assert [r["outcome"] for r in results["dup-3"]] == ["ACCEPTED"]  # a redelivery is not a new command
    assert w.sent_by_key() == Counter({f"{w.tenant_id}/dup-{i}": 1 for i in (1, 2, 3, 4)})


def test_the_ledger_answers_a_duplicate_after_a_restart(send_world):
    """The ledger is the one dedup record (no Faust table): a restarted worker loads its number's
    ledger partition and answers a reused key DUPLICATE with the original's outcome, unsent."""
    w = send_world
    w.start_worker()
    w.send(template(w.recipient(5), "hello_world"), w.routing("restart-1"))
    assert w.final(["restart-1"])["restart-1"]["outcome"] == "ACCEPTED"
    w.supervisor.stop(w.worker)
    w.start_worker("worker-2")
    second = w.send(template(w.recipient(5), "hello_world"), w.routing("restart-1"))
    deadline = time.monotonic() + 30
    while not (mine := [r for r in w.results() if r["command_id"] == second["command_id"]]):
        assert time.monotonic() < deadline, "no result for the re-sent key"
    assert [(r["outcome"], r["original_outcome"], r["reason"]) for r in mine] == [
        ("DUPLICATE", "ACCEPTED", "idempotency key already dispatched")]
    assert w.sent_by_key(check=False)[f"{w.tenant_id}/restart-1"] == 1  # (the 2nd warm-up counts it as warm)


def test_a_command_keyed_otherwise_is_moved_once_to_its_numbers_partition(send_world):
    """An ERP not using the SDK keys its commands by tenant: each is re-keyed once to its number's
    partition (wa.send.accepted / .transactional), sent once, and answered like any other."""
    from confluent_kafka import Producer

    from processors.send.app import Partitions
    from tests.integration.kafka_helpers import read_all
    from wapipe.edge.clients import JAVA_PARTITIONER
    from wapipe.topics import SEND_ACCEPTED, SEND_ACCEPTED_TX, SEND_REQUESTED, SEND_REQUESTED_BULK

    w = send_world
    w.start_worker()
    parts = Partitions(w.settings.topic_partitions)
    # a tenant key whose partition is not the number's: the command arrives on the wrong one
    key = next(f"{w.tenant_id}-{i}" for i in range(1000)
               if Partitions(w.settings.topic_partitions).of(f"{w.tenant_id}-{i}") != parts.of(w.numbers[0]))
    tx = w.erp.command(template(w.recipient(6), "hello_world"), w.routing("rekey-tx"))
    bulk = w.erp.command(template(w.recipient(7), "hello_world"), w.routing("rekey-bulk", lane=Lane.CAMPAIGN,
                                                                              campaign="rk"))
    p = Producer({"bootstrap.servers": w.bootstrap, "partitioner": JAVA_PARTITIONER})
    for topic, cmd in ((SEND_REQUESTED, tx), (SEND_REQUESTED_BULK, bulk)):
        p.produce(topic, key=key.encode(), value=w.erp.serde.encode("SendCommand", cmd, topic=topic))
    assert p.flush(10) == 0
    final = w.final(["rekey-tx", "rekey-bulk"])
    assert {k: v["outcome"] for k, v in final.items()} == {"rekey-tx": "ACCEPTED", "rekey-bulk": "ACCEPTED"}
    moved = {t: [m for m in read_all(w.bootstrap, t) if m.key() == w.numbers[0].encode()]
             for t in (SEND_ACCEPTED_TX, SEND_ACCEPTED)}
    assert [m.partition() for m in moved[SEND_ACCEPTED_TX]] == [parts.of(w.numbers[0])]
    assert [m.partition() for m in moved[SEND_ACCEPTED]] == [parts.of(w.numbers[0])]
    assert w.sent_by_key(check=False)[f"{w.tenant_id}/rekey-tx"] == 1
    assert w.sent_by_key(check=False)[f"{w.tenant_id}/rekey-bulk"] == 1


def test_permanent_failures_are_failed_without_retry(send_world):
    w = send_world
    w.sandbox.control.set_template_status(w.sandbox.waba_id, "promo", "en_US", "PAUSED")  # Meta knows, we do not yet
    w.start_worker()
    w.send(template(w.recipient(1), "promo"), w.routing("perm-1"))
    res = w.final(["perm-1"])["perm-1"]
    assert (res["outcome"], res["error_code"], res["attempts"]) == ("FAILED", 132015, 1)
    assert "paused" in res["reason"].lower()
    snap = w.sandbox.control.counters()["numbers"][w.numbers[0]]
    assert snap["requests"] == len(w.warm_keys) + 1 and snap["rejected"] == {"132015": 1}


def _retrying(w: SendWorld, key: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while not (mine := [r for r in w.results(timeout=1) if r["idempotency_key"] == key]):
        assert time.monotonic() < deadline, f"no result for {key}"
    assert [r["outcome"] for r in mine] == ["RETRYING"], mine
    return mine[0]


@pytest.mark.send_world(messaging_limit=3)
def test_the_messaging_tier_holds_across_a_restart(send_world):
    """The tier (unique recipients of template messages per 24 h, per business) defers a new
    recipient once it is full, with a RETRYING result that says why; a restarted worker rebuilds
    it from the ledger's last day of sends, so it does not start counting from zero."""
    w = send_world
    w.start_worker()  # the warm-up messages one recipient: 1 of 3
    for i in (1, 2):
        w.send(template(w.recipient(i), "hello_world"), w.routing(f"tier-{i}"))
    assert {k: v["outcome"] for k, v in w.final(["tier-1", "tier-2"]).items()} == {"tier-1": "ACCEPTED",
                                                                                   "tier-2": "ACCEPTED"}
    w.send(template(w.recipient(3), "hello_world"), w.routing("tier-3"))
    assert "messaging tier of 3 unique recipients" in _retrying(w, "tier-3")["reason"]
    w.supervisor.stop(w.worker)
    w.start_worker("worker-2")  # its warm-up messages the same recipient as the first one's
    w.send(template(w.recipient(4), "hello_world"), w.routing("tier-4"))
    w.send(template(w.recipient(1), "hello_world"), w.routing("tier-1-again"))  # counted already: fits
    assert w.final(["tier-1-again"])["tier-1-again"]["outcome"] == "ACCEPTED"
    assert "messaging tier of 3 unique recipients" in _retrying(w, "tier-4")["reason"]
    sent = w.sent_by_key()
    assert sent[f"{w.tenant_id}/tier-3"] == 0 and sent[f"{w.tenant_id}/tier-4"] == 0


def _numbers(w: SendWorld) -> dict:
    return w.sandbox.control.counters()["numbers"]


# Pace at 90 % here: this shared 2-core box delays single requests by tens of ms, and a delay of d
# seconds can move rate x d messages into a neighbouring 1 s window (bench/dispatch.py measures the
# default 98.5 % pace).
@pytest.mark.send_world(rates=[(40, 40), (40, 40)], env={"WAPIPE_SEND_RATE_SAFETY": "0.9"})
def test_throughput_is_paced_under_the_limit_and_transactional_never_waits(send_world):
    w = send_world
    w.start_worker()
    campaign = [(template(w.recipient(i), "hello_world"), w.routing(f"c-{i}", lane=Lane.CAMPAIGN, campaign="big"))
                for i in range(160)]
    other = [(template(w.recipient(500 + i), "hello_world"),
              w.routing(f"o-{i}", number=1, lane=Lane.CAMPAIGN, campaign="other")) for i in range(40)]
    w.publish(campaign + other)
    time.sleep(1.5)  # the campaign is under way
    t0 = time.time()
    w.publish([(template(w.recipient(900 + i), "hello_world"), w.routing(f"tx-{i}")) for i in range(3)])
    keys = [f"c-{i}" for i in range(160)] + [f"o-{i}" for i in range(40)] + [f"tx-{i}" for i in range(3)]
    final = w.final(keys, timeout=60)
    assert len(final) == len(keys) and {r["outcome"] for r in final.values()} == {"ACCEPTED"}
    tx_done = max(final[f"tx-{i}"]["decided_at"].timestamp() for i in range(3))
    campaign_done = max(final[f"c-{i}"]["decided_at"].timestamp() for i in range(160))
    assert tx_done - t0 < 1.5, "the transactional lane waited"
    assert campaign_done - tx_done > 1.0, "transactional commands went out while the campaign still had work"
    nums = _numbers(w)
    for n in w.numbers:
        assert nums[n]["max_accepted_1s"] <= 40 and nums[n]["max_requests_1s"] <= 40, nums[n]
        assert nums[n]["rejected"] == {}, nums[n]
    # the paced number was used close to its limit: 163 messages at <= 40/s take >= ~4 s
    first = min(r["decided_at"].timestamp() for r in final.values())
    assert 163 / 40 * 0.9 < campaign_done - first < 163 / 36 * 1.5
    assert w.sent_by_key() == Counter({f"{w.tenant_id}/{k}": 1 for k in keys})
    # The worker's /metrics agree with what the sandbox counted (warm-up included).
    metrics = _scrape(w)
    for n in w.numbers:
        assert metrics[f'wapipe_number_calls_total{{number="{n}"}}'] == nums[n]["accepted"], n
        assert metrics[f'wapipe_number_limit_mps{{number="{n}"}}'] == 40
        assert metrics[f'wapipe_number_queue_depth{{number="{n}"}}'] == 0
        assert 0 <= metrics[f'wapipe_number_window_credit_seconds{{number="{n}"}}'] < 0.5
    accepted = sum(nums[n]["accepted"] for n in w.numbers)
    assert metrics['wapipe_send_outcomes_total{outcome="ACCEPTED"}'] == accepted
    assert metrics["wapipe_ledger_write_seconds_count"] >= accepted and metrics["wapipe_ledger_write_seconds_sum"] > 0


def _scrape(w: SendWorld) -> dict[str, float]:
    import json

    import httpx

    url = json.loads((w.settings.state_dir / "probes" / "worker.json").read_text())["url"]
    text = httpx.get(url + "/metrics", timeout=10).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


@pytest.mark.send_world(rates=[(1000, 1000)])
def test_transactional_commands_do_not_wait_behind_a_campaign_backlog(send_world):
    """A campaign backlog the worker needs seconds to read (its CPU is the limit here, not the number's
    1,000/s): a transactional command published meanwhile is sent within a second or two, not after
    the backlog. Under Faust's aiokafka fetcher it waited for the campaign's whole buffered fetch;
    under librdkafka's default fetch.queue.backoff.ms (1 s) for a second whenever its queue was full."""
    import copy

    w = send_world
    w.start_worker()
    protos = [w.erp.command(template(w.recipient(r), "hello_world"), w.routing("proto", lane=Lane.CAMPAIGN,
                                                                                 campaign="backlog"))
              for r in range(400)]
    campaign = []
    for i in range(8000):  # at the number's 1,000/s: 8 s of backlog
        c = copy.copy(protos[i // 20])  # 20 per recipient: well inside Meta's pair burst
        c["command_id"], c["idempotency_key"] = str(uuid.uuid4()), f"c-{i}"
        campaign.append(c)
    w.erp.publish(campaign)
    time.sleep(2.0)  # the backlog is being read
    waited = {}
    for i in range(3):
        t0 = time.time()
        w.send(template(w.recipient(900 + i), "hello_world"), w.routing(f"tx-{i}"))
        decided = w.final([f"tx-{i}"], timeout=60)[f"tx-{i}"]
        assert decided["outcome"] == "ACCEPTED"
        waited[f"tx-{i}"] = round(decided["decided_at"].timestamp() - t0, 2)
        time.sleep(0.5)
    t_tx = time.time()
    final = w.final([f"c-{i}" for i in range(8000)], timeout=120)
    assert len(final) == 8000 and {r["outcome"] for r in final.values()} == {"ACCEPTED"}
    after_tx = sum(1 for r in final.values() if r["decided_at"].timestamp() > t_tx)
    assert after_tx > 300, f"the campaign was nearly over before the transactional commands ({after_tx} left)"
    assert max(waited.values()) < 2.0, f"transactional commands waited behind the campaign: {waited}"
    assert w.sent_by_key() == Counter({f"{w.tenant_id}/{k}": 1 for k in [*final, *waited]})


@pytest.mark.send_world(rates=[(60, 20)], pair_burst=2, pair_interval_s=1.0)
def test_throttling_and_pair_rate_recover_without_duplicates(send_world):
    w = send_world
    w.start_worker()
    # the registry believes 60/s, Meta allows 20/s: Meta throttles, the worker slows down
    keys = [f"t-{i}" for i in range(60)]
    w.publish([(template(w.recipient(i), "hello_world"), w.routing(k)) for i, k in enumerate(keys)])
    # four messages to one recipient; Meta's pair burst here is 2
    pair = [f"p-{i}" for i in range(4)]
    w.publish([(template(w.recipient(999), "hello_world"), w.routing(k)) for k in pair])
    final = w.final(keys + pair, timeout=90)
    assert {k: r["outcome"] for k, r in final.items()} == {k: "ACCEPTED" for k in keys + pair}
    rejected = _numbers(w)[w.numbers[0]]["rejected"]
    assert rejected.get("130429", 0) > 0 and rejected.get("131056", 0) > 0, rejected
    assert _numbers(w)[w.numbers[0]]["max_accepted_1s"] <= 20
    assert w.sent_by_key() == Counter({f"{w.tenant_id}/{k}": 1 for k in keys + pair})


@pytest.mark.send_world(env={"WAPIPE_SEND_SPAM_PAUSE_S": "3"})
def test_a_number_restricted_for_spam_pauses_and_says_why(send_world):
    from connectors.meta.sandbox.models import Faults

    w = send_world
    w.start_worker()
    w.sandbox.control.set_faults(Faults(error_count=1, error_code=131048, phone_number_id=w.numbers[0]))
    w.send(template(w.recipient(1), "hello_world"), w.routing("spam-1"))
    deadline = time.monotonic() + 30
    while not (retrying := [r for r in w.results(timeout=0.3) if r["idempotency_key"] == "spam-1"]):
        assert time.monotonic() < deadline, "no result for spam-1"
    # the ERP hears at once why its message waits
    assert (retrying[0]["outcome"], retrying[0]["error_code"], retrying[0]["attempts"]) == ("RETRYING", 131048, 1)
    assert "131048" in retrying[0]["reason"]
    # a later command to the same number waits for the pause too, not only the refused one
    w.send(template(w.recipient(2), "hello_world"), w.routing("spam-2"))
    final = w.final(["spam-1", "spam-2"], timeout=60)
    assert {k: (r["outcome"], r["attempts"]) for k, r in final.items()} == {"spam-1": ("ACCEPTED", 2),
                                                                           "spam-2": ("ACCEPTED", 1)}
    for k in ("spam-1", "spam-2"):
        waited = (final[k]["decided_at"] - retrying[0]["decided_at"]).total_seconds()
        assert waited >= 2.5, (k, waited)
    assert _numbers(w)[w.numbers[0]]["rejected"].get("131048") == 1
    assert w.sent_by_key() == Counter({f"{w.tenant_id}/spam-1": 1, f"{w.tenant_id}/spam-2": 1})


@pytest.mark.send_world(env={"WAPIPE_SEND_MAX_ATTEMPTS": "3"})
def test_transient_errors_retry_then_dead_letter_and_unknown_outcomes_are_not_resent(send_world):
    from connectors.meta.sandbox.models import Faults

    w = send_world
    w.start_worker()
    ctl = w.sandbox.control
    # two transient errors, then success
    ctl.set_faults(Faults(error_count=2, error_code=131000, phone_number_id=w.numbers[0]))
    w.send(template(w.recipient(1), "hello_world"), w.routing("tr-ok"))
    assert w.final(["tr-ok"])["tr-ok"]["outcome"] == "ACCEPTED"
    # always failing: retried, then dead-lettered
    ctl.set_faults(Faults(error_p=1.0, error_code=2, phone_number_id=w.numbers[0]))
    w.send(template(w.recipient(2), "hello_world"), w.routing("tr-dead"))
    dead = w.final(["tr-dead"])["tr-dead"]
    assert (dead["outcome"], dead["attempts"], dead["error_code"]) == ("DEAD", 3, 2)
    # the request reaches Meta, the answer never comes back: unknown, never resent
    ctl.set_faults(Faults(timeout_count=1, timeout_hold_s=5.0, phone_number_id=w.numbers[0]))
    w.send(template(w.recipient(3), "hello_world"), w.routing("tr-unknown"))
    unknown = w.final(["tr-unknown"])["tr-unknown"]
    assert unknown["outcome"] == "UNKNOWN" and unknown["attempts"] == 1
    time.sleep(6)  # past the sandbox's hold: it accepted the message
    ctl.clear_faults()

    results = _by_key(w.results(timeout=3))
    assert [r["outcome"] for r in results["tr-ok"]] == ["RETRYING", "RETRYING", "ACCEPTED"]
    assert [r["outcome"] for r in results["tr-dead"]] == ["RETRYING", "RETRYING", "DEAD"]
    assert [r["outcome"] for r in results["tr-unknown"]] == ["UNKNOWN"]
    letters = [d for d in _dead_letters(w.bootstrap) if d["headers"].get("idempotency_key") == "tr-dead"
               and d["tenant_id"] == w.tenant_id]
    assert len(letters) == 1 and "3 attempts" in letters[0]["reason"] and letters[0]["value"]
    snap = _numbers(w)[w.numbers[0]]
    # every Graph call (after the warm-up), none repeated for the unknown one
    assert snap["requests"] == len(w.warm_keys) + 3 + 3 + 1
    sent = w.sent_by_key()
    assert sent[f"{w.tenant_id}/tr-ok"] == 1 and sent[f"{w.tenant_id}/tr-dead"] == 0
    assert sent[f"{w.tenant_id}/tr-unknown"] <= 1


@pytest.mark.send_world(rates=[(60, 60)])
def test_campaign_pause_resume_stop_and_progress(send_world):
    from processors.send.campaigns import progress, publish_control

    w = send_world
    w.start_worker()
    a = [(template(w.recipient(i), "hello_world"), w.routing(f"a-{i}", lane=Lane.CAMPAIGN, campaign=f"A{w.tenant_id}"))
         for i in range(300)]
    b = [(template(w.recipient(400 + i), "hello_world"), w.routing(f"b-{i}", lane=Lane.CAMPAIGN, campaign=f"B{w.tenant_id}"))
         for i in range(300)]
    w.publish(a + b)
    time.sleep(0.5)
    publish_control(w.bootstrap, f"A{w.tenant_id}", "PAUSED", tenant_id=w.tenant_id)
    w.followed_to_end(CAMPAIGN_CONTROL)  # the worker's view has it; then the calls under way finish
    time.sleep(1.5)  # honoured within a second
    before = w.sandbox.control.counters()["numbers"][w.numbers[0]]["accepted"]
    time.sleep(1.0)
    sent_a = sum(1 for k in w.sent_by_key() if "/a-" in k)
    assert w.sandbox.control.counters()["numbers"][w.numbers[0]]["accepted"] > before  # B goes on
    time.sleep(0.5)
    assert sum(1 for k in w.sent_by_key() if "/a-" in k) == sent_a  # A holds
    publish_control(w.bootstrap, f"B{w.tenant_id}", "STOPPED", tenant_id=w.tenant_id)
    publish_control(w.bootstrap, f"A{w.tenant_id}", "RUNNING", tenant_id=w.tenant_id)
    final = w.final([f"a-{i}" for i in range(300)] + [f"b-{i}" for i in range(300)], timeout=60)
    assert {final[f"a-{i}"]["outcome"] for i in range(300)} == {"ACCEPTED"}
    outcomes_b = Counter(final[f"b-{i}"]["outcome"] for i in range(300))
    assert set(outcomes_b) <= {"ACCEPTED", "CANCELLED"} and outcomes_b["CANCELLED"] > 0
    pa = progress(w.bootstrap, f"A{w.tenant_id}", tenant_id=w.tenant_id)
    assert (pa.queued, pa.sent, pa.failed, pa.remaining, pa.state) == (300, 300, 0, 0, "RUNNING")
    pb = progress(w.bootstrap, f"B{w.tenant_id}", tenant_id=w.tenant_id)
    assert (pb.queued, pb.sent, pb.cancelled, pb.remaining, pb.state) == (300, outcomes_b["ACCEPTED"],
                                                                            outcomes_b["CANCELLED"], 0, "STOPPED")
    assert sum(1 for k in w.sent_by_key() if "/b-" in k) == outcomes_b["ACCEPTED"]


def _status_event(w: SendWorld, msg: dict, status: str, errors: list | None = None) -> None:
    """The StatusEvent the normaliser publishes for the sandbox's status webhook of ``msg`` (a
    message the sandbox accepted), written to wa.status.events directly."""
    import hashlib

    from wapipe.avro import AvroSerde
    from wapipe.edge.clients import producer as make_producer
    from wapipe.topics import STATUS_EVENTS

    now = dt.datetime.now(dt.timezone.utc)
    ref = w.ref(msg["wamid"])  # the normaliser publishes the wamid's keyed ref, never the wamid
    ev = {"event_id": hashlib.sha256(f"{msg['phone_number_id']}{msg['wamid']}{status}".encode()).hexdigest(),
          "tenant_id": w.tenant_id, "waba_id": w.sandbox.waba_id, "phone_number_id": msg["phone_number_id"],
          "wamid": ref, "status": status, "timestamp": now, "subject_id": None, "pii": None,
          "biz_opaque_callback_data": msg["biz_opaque_callback_data"], "conversation_id": None,
          "conversation_origin": None, "conversation_expires_at": None, "pricing_billable": None,
          "pricing_model": None, "pricing_category": None, "pricing_type": None, "errors": errors or [],
          "received_at": now, "extra": "{}"}
    p = make_producer(w.bootstrap)
    p.produce(STATUS_EVENTS, key=ref.encode(), value=AvroSerde().encode("StatusEvent", ev))
    assert p.flush(10) == 0


def _outcomes_of(w: SendWorld, key: str, until: str, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _by_key(w.results(timeout=0.5)).get(key, [])
        if any(r["outcome"] == until for r in got):
            return got
    return _by_key(w.results(timeout=0.5)).get(key, [])


def test_unknown_outcomes_are_reconciled_from_status_webhooks_never_resent(send_world):
    from connectors.meta.sandbox.models import Faults

    w = send_world
    w.start_worker()
    ctl = w.sandbox.control
    # the request reaches the sandbox (it accepts it), the answer never comes back: UNKNOWN
    ctl.set_faults(Faults(timeout_count=2, timeout_hold_s=5.0, phone_number_id=w.numbers[0]))
    w.send(template(w.recipient(1), "hello_world"), w.routing("rc-ok"))
    w.send(template(w.recipient(2), "hello_world"), w.routing("rc-fail"))
    first = w.final(["rc-ok", "rc-fail"])
    assert first["rc-ok"]["outcome"] == "UNKNOWN" and first["rc-fail"]["outcome"] == "UNKNOWN"
    time.sleep(6)  # past the sandbox's hold: it accepted both messages
    ctl.clear_faults()
    msgs = {m["biz_opaque_callback_data"]: m for m in ctl.messages(w.numbers[0])}
    ok, fail = msgs[f"{w.tenant_id}/rc-ok"], msgs[f"{w.tenant_id}/rc-fail"]

    # sent, then duplicate and later statuses: one reconciliation, with the sandbox's wamid
    _status_event(w, ok, "sent")
    _status_event(w, ok, "sent")
    _status_event(w, ok, "delivered")
    _status_event(w, fail, "failed", [{"code": 131026, "title": "Message undeliverable", "message": None,
                                       "details": None}])
    got = _outcomes_of(w, "rc-ok", "ACCEPTED")
    failed = _outcomes_of(w, "rc-fail", "FAILED")
    time.sleep(3)  # room for a wrong second reconciliation
    res = _by_key(w.results(timeout=2))
    assert [r["outcome"] for r in res["rc-ok"]] == ["UNKNOWN", "ACCEPTED"], got
    acc = res["rc-ok"][1]
    assert acc["wamid"] == w.ref(ok["wamid"]) and acc["original_outcome"] == "UNKNOWN" and "status webhook" in acc["reason"]
    assert [r["outcome"] for r in res["rc-fail"]] == ["UNKNOWN", "FAILED"], failed
    assert res["rc-fail"][1]["error_code"] == 131026

    # a later duplicate command is answered with the reconciled outcome, and nothing is resent
    w.send(template(w.recipient(1), "hello_world"), w.routing("rc-ok"))
    dup = [r for r in _outcomes_of(w, "rc-ok", "DUPLICATE") if r["outcome"] == "DUPLICATE"]
    assert dup and dup[0]["original_outcome"] == "ACCEPTED" and dup[0]["wamid"] == w.ref(ok["wamid"])
    sent = w.sent_by_key()
    assert sent[f"{w.tenant_id}/rc-ok"] == 1 and sent[f"{w.tenant_id}/rc-fail"] == 1


def test_unknown_outcome_reconciled_through_the_sandboxs_webhooks_ingress_and_normaliser(send_world):
    """The whole path: the sandbox accepts the message but the answer times out (UNKNOWN); its
    signed status webhooks go to `wapipe ingress`, `wapipe normalise` turns them into StatusEvents,
    and the worker turns the UNKNOWN into ACCEPTED with the sandbox's wamid (and a failed
    recipient's into FAILED 131026). Each message reached the sandbox exactly once."""
    import json

    from connectors.meta.sandbox.models import Faults

    w = send_world
    sb, ctl = w.sandbox, w.sandbox.control
    apps = {"WAPIPE_META_APPS": json.dumps({sb.app_id: sb.app_secret})}
    (w.settings.state_dir).mkdir(parents=True, exist_ok=True)  # faust's data dir goes under it
    w.supervisor.start(ServiceSpec("normalise", ("normalise",), env={**w.env, **apps}, ready_timeout=90, stop_timeout=20))
    ingress = w.supervisor.start(ServiceSpec("ingress", ("ingress",), args=("--port", "0", "--host", "127.0.0.1"),
                                             env={**w.env, **apps}, ready_timeout=60, stop_timeout=20))
    ctl.set_webhook(ingress.ready_value.rstrip("/") + "/webhook", app_id=sb.app_id, app_secret=sb.app_secret)
    w.start_worker()
    ctl.set_invalid_recipients([w.recipient(2)])
    ctl.set_faults(Faults(timeout_count=2, timeout_hold_s=4.0, phone_number_id=w.numbers[0]))
    w.send(template(w.recipient(1), "hello_world"), w.routing("e2e-ok"))
    w.send(template(w.recipient(2), "hello_world"), w.routing("e2e-fail"))
    ok = _outcomes_of(w, "e2e-ok", "ACCEPTED", timeout=60)
    failed = _outcomes_of(w, "e2e-fail", "FAILED", timeout=60)
    ctl.clear_faults()
    msgs = {m["biz_opaque_callback_data"]: m for m in ctl.messages(w.numbers[0])}
    assert [r["outcome"] for r in ok] == ["UNKNOWN", "ACCEPTED"], ok
    assert ok[1]["wamid"] == w.ref(msgs[f"{w.tenant_id}/e2e-ok"]["wamid"])
    assert [r["outcome"] for r in failed] == ["UNKNOWN", "FAILED"] and failed[1]["error_code"] == 131026, failed
    sent = w.sent_by_key()
    assert sent[f"{w.tenant_id}/e2e-ok"] == 1 and sent[f"{w.tenant_id}/e2e-fail"] == 1


@pytest.mark.send_world(rates=[(200, 200)] * 4, env={"WAPIPE_SEND_MAX_IN_FLIGHT": "2"})
def test_a_full_pool_of_calls_in_flight_is_shared_between_tenants_in_turn(send_world):
    """Tenant A keeps four numbers busy with a campaign; tenant B, with one number, publishes its
    campaign after A's. With at most two calls in flight and 40 ms per call the pool is the limit:
    while both wait, B gets every other slot (served first come, A's four loops got four of five)."""
    from wapipe.edge.clients import producer as make_producer
    from wapipe.privacy.kek import load_kek
    from wapipe.tenants.models import PhoneNumber, Template, Tenant, TenantStatus
    from wapipe.tenants.store import publish_template, publish_tenant

    w, sb = send_world, send_world.sandbox
    b_number = "39" + _digits(8)
    sb.control.add_number(b_number, sb.waba_id, throughput=200)
    b = Tenant(tenant_id=w.tenant_id + "b", status=TenantStatus.ACTIVE, display_name="other", business_id=sb.business_id,
               waba_id=sb.waba_id, numbers=(PhoneNumber(phone_number_id=b_number, throughput_mps=200),),
               messaging_limit=10_000).with_token(load_kek(w.settings), sb.token)
    p = make_producer(w.bootstrap)
    publish_tenant(p, b)
    publish_template(p, Template(tenant_id=b.tenant_id, waba_id=sb.waba_id, name="hello_world", language="en_US",
                                 status="APPROVED", body_parameter_count=0))
    assert p.flush(10) == 0
    w.start_worker()
    latency = sb.control.config()["latency"]
    sb.control.set_latency(40)
    try:
        w.publish([(template(w.recipient(i), "hello_world"),
                    w.routing(f"fa-{i}", number=i % 4, lane=Lane.CAMPAIGN, campaign="fa")) for i in range(400)])
        b_keys = [f"fb-{i}" for i in range(60)]
        w.erp.publish([w.erp.command(template(w.recipient(5_000 + i), "hello_world"),
                                     Routing(tenant_id=b.tenant_id, phone_number_id=b_number, idempotency_key=k,
                                             lane=Lane.CAMPAIGN, campaign_id="fb"))
                       for i, k in enumerate(b_keys)])
        done = w.reader.wait_final([(b.tenant_id, k) for k in b_keys], timeout=90)
        assert {v["outcome"] for v in done.values()} == {"ACCEPTED"} and len(done) == 60
    finally:
        sb.control.configure(latency=latency)
    order = [m["phone_number_id"] for m in sb.control.messages()
             if m["phone_number_id"] in {*w.numbers, b_number} and m.get("biz_opaque_callback_data") not in w.warm_keys]
    first_b, last_b = order.index(b_number), len(order) - 1 - order[::-1].index(b_number)
    a_meanwhile = sum(n != b_number for n in order[first_b:last_b + 1])
    assert len(order) - first_b > 60 + 60, "tenant A's campaign was over before B's began: nothing was shared"
    assert a_meanwhile <= 90, f"tenant A sent {a_meanwhile} while tenant B sent its 60"
    print(f"\ntenant A sent {a_meanwhile} while tenant B sent its 60")


@pytest.mark.send_world(rates=[(200, 200)], env={"WAPIPE_SEND_BUFFER_PER_PARTITION": "100"})
def test_a_paused_campaign_does_not_hold_up_another_number_of_its_partition(send_world):
    """Two numbers on one partition: number A's campaign is paused with 600 commands held (six
    times the partition's buffer); number B's campaign, published after it on the same partition,
    is sent meanwhile. Before, the partition paused at 100 held commands and B waited for A."""
    from processors.send.app import Partitions
    from processors.send.campaigns import publish_control
    from wapipe.edge.clients import producer as make_producer
    from wapipe.privacy.kek import load_kek
    from wapipe.tenants.models import PhoneNumber, Tenant, TenantStatus
    from wapipe.tenants.store import publish_tenant

    w, sb = send_world, send_world.sandbox
    parts = Partitions(w.settings.topic_partitions)
    a = w.numbers[0]
    b = next(n for n in ("38" + _digits(8) for _ in range(100_000)) if parts.of(n) == parts.of(a))
    sb.control.add_number(b, sb.waba_id, throughput=200)
    w.numbers.append(b)  # counted by sent_by_key (and the warm-up sends from it)
    tenant = Tenant(tenant_id=w.tenant_id, status=TenantStatus.ACTIVE, display_name="test", business_id=sb.business_id,
                    waba_id=sb.waba_id, numbers=(PhoneNumber(phone_number_id=a, throughput_mps=200),
                                                 PhoneNumber(phone_number_id=b, throughput_mps=200)),
                    messaging_limit=10_000).with_token(load_kek(w.settings), sb.token)
    p = make_producer(w.bootstrap)
    publish_tenant(p, tenant)
    assert p.flush(10) == 0
    w.start_worker()
    held, other = f"X{w.tenant_id}", f"Y{w.tenant_id}"
    publish_control(w.bootstrap, held, "PAUSED", tenant_id=w.tenant_id)
    w.followed_to_end(CAMPAIGN_CONTROL)  # paused in the worker's view before its commands come
    w.publish([(template(w.recipient(i), "hello_world"), w.routing(f"x-{i}", lane=Lane.CAMPAIGN, campaign=held))
               for i in range(600)])
    w.erp.publish([w.erp.command(template(w.recipient(1000 + i), "hello_world"),
                                 Routing(tenant_id=w.tenant_id, phone_number_id=b, idempotency_key=f"y-{i}",
                                         lane=Lane.CAMPAIGN, campaign_id=other)) for i in range(100)])
    done = w.final([f"y-{i}" for i in range(100)], timeout=30)
    assert len(done) == 100 and {r["outcome"] for r in done.values()} == {"ACCEPTED"}
    assert not any("/x-" in k for k in w.sent_by_key(check=False)), "the paused campaign was sent"
    publish_control(w.bootstrap, held, "RUNNING", tenant_id=w.tenant_id)
    final = w.final([f"x-{i}" for i in range(600)], timeout=60)
    assert len(final) == 600 and {r["outcome"] for r in final.values()} == {"ACCEPTED"}
    assert w.sent_by_key() == Counter({f"{w.tenant_id}/{k}": 1 for k in [*final, *done]})
