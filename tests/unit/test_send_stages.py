"""The send path's stages, each against its contract, without Kafka: the pure decisions
(``intake.route``/``decide``, ``graph_call.classify``), the buffer's backpressure, admission, and
the stages wired together over a real ledger (on an in-memory topic) and a scripted Graph sender."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from connectors.meta import errors as E
from processors.send import intake as I
from processors.send.admission import Admission
from processors.send.buffer import Buffer, MessageRejected
from processors.send.dispatcher import Dispatcher
from processors.send.graph_call import PAIR, SPAM, THROTTLE, GraphCall, classify
from processors.send.intake import Intake
from processors.send.lanes import Job
from processors.send.ledger import Entry, Ledger
from processors.send.ledger_store import LedgerStore
from processors.send.numbers import Numbers, Work
from processors.send.outcomes import Answered, Outcomes, Results
from processors.send.scheduler import Scheduler
from processors.send.slots import FairSlots
from processors.send.stats import Stats
from processors.send.suppression import SuppressionList
from processors.send.views import CampaignStates
from processors.send.writes import LaneWriter
from tests.unit.commands import Registry, command
from tests.unit.ledger_topic import ListTopic
from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.messages.send import CAMPAIGN, DISPATCHING, DONE, RETRY, TRANSACTIONAL, DispatchEntry, Outcome, SendResult
from wapipe.tenants.models import PhoneNumber, SealedToken, Template, Tenant, TenantStatus

SETTINGS = Settings().model_copy(update={"send_buffer_per_partition": 10, "send_held_max": 100,
                                         "send_max_attempts": 3, "send_retry_base_s": 0.01,
                                         "send_retry_max_s": 0.05, "send_spam_pause_s": 60.0})
WINDOW_MS = 7 * 24 * 3600 * 1000
NOW_MS = 1_800_000_000_000
PROPS = settings(max_examples=300, deadline=None)


# --- intake: route and decide, pure --------------------------------------------------------------
def test_route_rekeys_only_a_command_read_off_its_numbers_partition():
    topics = {"TRANSACTIONAL": "tx", "CAMPAIGN": "bulk"}
    assert I.route(command(), partition=3, home=3, rekeyed=topics, default="tx") is None
    assert I.route(command(lane="CAMPAIGN"), partition=2, home=3, rekeyed=topics, default="tx") == I.Rekey("bulk")
    assert I.route(command(), partition=2, home=3, rekeyed=topics, default="tx") == I.Rekey("tx")


def _entry(state: str, command_id: str, age_ms: int, attempts: int = 1, outcome: str | None = None) -> Entry:
    return Entry(state, attempts, command_id, outcome, "wamid.ref" if outcome == "ACCEPTED" else None,
                 NOW_MS + 60_000 if state == RETRY else None, NOW_MS - age_ms)


@PROPS
@given(held=st.sampled_from([None, "same", "other"]), state=st.sampled_from([None, DISPATCHING, RETRY, DONE]),
       owner=st.sampled_from(["same", "other"]), age_ms=st.integers(0, 2 * WINDOW_MS), attempts=st.integers(0, 9),
       outcome=st.sampled_from(["ACCEPTED", "FAILED", "UNKNOWN"]), answered=st.booleans())
def test_decide_sends_a_key_at_most_once(held, state, owner, age_ms, attempts, outcome, answered):
    cmd = command(command_id="c1", idempotency_key="k")
    other = "c1" if owner == "same" else "c2"
    active = None if held is None else Job(key=cmd.key, cmd=command(command_id="c1" if held == "same" else "c0"),
                                          partition=0, lane=TRANSACTIONAL)
    entry = None if state is None else _entry(state, other, age_ms, attempts, outcome if state == DONE else None)
    seen = Answered()
    if answered and entry is not None:
        seen.add(cmd.key, other, str(entry.outcome))
    d = I.decide(cmd, active=active, entry=None if active else entry, answered=seen, now_ms=NOW_MS,
                 window_ms=WINDOW_MS)
    if active is not None:  # held here: never a second job for the key
        assert d == (I.JOIN if held == "same" else I.Duplicate("a command with this idempotency key is already queued",
                                                              "QUEUED"))
        return
    expired = entry is not None and state == DONE and age_ms > WINDOW_MS
    if entry is None or expired:
        assert d == I.Queue(0, 0.0)
    elif owner == "other":  # another command holds the key: a DUPLICATE, nothing sent
        assert type(d) is I.Duplicate
        assert d.original_outcome == (outcome if state == DONE else "RETRYING" if state == RETRY else "UNKNOWN")
    elif state == DISPATCHING:  # a call may have left: UNKNOWN, never resent
        assert d == I.Interrupted(attempts)
    elif state == RETRY:  # known not sent: sent again, its attempts counted on
        assert d == I.Queue(attempts, entry.not_before_ms / 1000)
    else:  # decided: answered again unless this process wrote that very result
        assert d == (I.SETTLED if answered else I.AnswerAgain(entry))


# --- graph call: classify, pure ------------------------------------------------------------------
@pytest.mark.parametrize("exc, attempt, expect", [
    (E.UnknownOutcome("timeout"), 1, dict(outcome=Outcome.UNKNOWN)),
    (E.PairRateLimited("pair", code=131056), 1, dict(outcome=None, pacing=PAIR, via_topic=False)),
    (E.SpamLimited("spam", code=131048), 1, dict(outcome=None, pacing=SPAM, via_topic=True, tell=True, retry_in=60.0)),
    (E.SpamLimited("spam", code=131048, retry_after=5), 1, dict(retry_in=5)),
    (E.Throttled("busy", code=130429, retry_after=300), 1, dict(outcome=None, pacing=THROTTLE, retry_in=60.0,
                                                                via_topic=False)),
    (E.Throttled("busy", code=130429), 1, dict(retry_in=1.0)),
    (E.Transient("5xx", code=2), 1, dict(outcome=None, via_topic=True, tell=True, pacing=None, retry_in=0.01)),
    (E.Transient("5xx", code=2), 2, dict(retry_in=0.02)),
    (E.Transient("5xx", code=2), 3, dict(outcome=Outcome.DEAD, dead=True)),
    (E.Permanent("bad", code=131026), 1, dict(outcome=Outcome.FAILED)),
    (E.AuthError("token", code=190), 1, dict(outcome=Outcome.FAILED)),
    (E.NumberBlocked("blocked", code=368), 1, dict(outcome=Outcome.FAILED)),
    (E.MetaError("?"), 1, dict(outcome=Outcome.FAILED)),
])
def test_classify_maps_each_answer_to_its_verdict(exc, attempt, expect):
    v = classify(exc, attempt, SETTINGS)
    assert {k: getattr(v, k) for k in expect} == expect


@PROPS
@given(cls=st.sampled_from([E.MetaError, E.Throttled, E.PairRateLimited, E.SpamLimited, E.Transient, E.Permanent,
                            E.WindowClosed, E.TemplateError, E.RecipientError, E.NumberBlocked, E.AuthError,
                            E.UnknownOutcome]),
       attempt=st.integers(1, 10), retry_after=st.one_of(st.none(), st.floats(0.001, 10_000)),
       jitter=st.floats(0.5, 1.5))
def test_classify_gives_every_answer_one_final_outcome_or_a_bounded_retry(cls, attempt, retry_after, jitter):
    v = classify(cls("x", retry_after=retry_after), attempt, SETTINGS, jitter=jitter)
    assert (v.outcome is None) != (v.outcome in (Outcome.UNKNOWN, Outcome.FAILED, Outcome.DEAD))
    assert v.dead == (v.outcome == Outcome.DEAD)
    if v.outcome is None and v.pacing != PAIR:
        assert 0 < v.retry_in <= max(SETTINGS.send_spam_pause_s, retry_after or 0, 60.0)
    if issubclass(cls, E.Transient) and attempt >= SETTINGS.send_max_attempts:
        assert v.dead


# --- buffer and admission: backpressure in one place ---------------------------------------------
class Calls:
    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []

    def pause(self, p: int) -> None:
        self.log.append(("pause", p))

    def resume(self, p: int) -> None:
        self.log.append(("resume", p))


def _campaign_job(i: int, partition: int = 0, pnid: str = "111") -> Job:
    cmd = command(idempotency_key=f"k{i}", command_id=f"c{i}", lane=CAMPAIGN, campaign_id="promo", phone_number_id=pnid)
    return Job(key=cmd.key, cmd=cmd, partition=partition, lane=CAMPAIGN)


def test_the_buffer_pauses_a_full_partition_once_and_resumes_it_at_half():
    calls = Calls()
    buf = Buffer(per_partition=4, most=100, pause=calls.pause, resume=calls.resume)
    jobs = [_campaign_job(i) for i in range(6)]
    for job in jobs:
        buf.take(job)
        if buf.full(job):
            buf.reject(MessageRejected(job.partition))
    assert calls.log == [("pause", 0)] and buf.total == 6 and buf.active("acme/k5") is jobs[5]
    for job in jobs[:3]:
        buf.release(job)
    assert calls.log == [("pause", 0)]  # 3 held: above half
    buf.release(jobs[3])
    assert calls.log == [("pause", 0), ("resume", 0)] and buf.active("acme/k3") is None


def test_a_revoked_partition_is_never_resumed_and_an_idle_number_resumes_its_own():
    calls = Calls()
    buf = Buffer(per_partition=2, most=100, pause=calls.pause, resume=calls.resume)
    jobs = [_campaign_job(i, partition=i % 2) for i in range(4)]
    for job in jobs:
        buf.take(job)
        buf.reject(MessageRejected(job.partition))
    assert calls.log == [("pause", 0), ("pause", 1)]
    buf.revoke({1})
    for job in jobs:
        buf.release(job)
    assert calls.log == [("pause", 0), ("pause", 1), ("resume", 0)]
    buf.reject(MessageRejected(0))
    buf.idle(0)
    assert calls.log[-1] == ("resume", 0) and 0 not in buf.paused


TOKEN = SealedToken(key_id="kek:x", nonce=b"n" * 12, ciphertext=b"c" * 20)
ACME = Tenant(tenant_id="acme", status=TenantStatus.ACTIVE, waba_id="w1", token=TOKEN,
              numbers=(PhoneNumber(phone_number_id="111", throughput_mps=80), PhoneNumber(phone_number_id="222")))
REG = Registry([ACME], [Template(tenant_id="acme", waba_id="w1", name="hello", language="en_US", status="APPROVED"),
                        Template(tenant_id="acme", waba_id="w1", name="promo", language="en_US", status="APPROVED",
                                 category="MARKETING")])


def _admission(calls: Calls, **kw) -> tuple[Admission, Buffer, Numbers]:
    s = SETTINGS.model_copy(update=kw)
    buf = Buffer(per_partition=s.send_buffer_per_partition, most=s.send_held_max, pause=calls.pause,
                 resume=calls.resume)
    numbers = Numbers(s, registry=REG, buffer=buf, slots=FairSlots(4))

    class NoLoops:  # the scheduler's loops are not under test here
        def watch(self, number) -> None:
            pass

    return Admission(numbers=numbers, buffer=buf, scheduler=NoLoops(), campaigns=CampaignStates()), buf, numbers


def test_admission_rejects_when_full_unless_a_number_of_the_partition_would_starve():
    calls = Calls()
    adm, buf, numbers = _admission(calls, send_buffer_per_partition=10, send_held_max=10_000)
    rejected = []
    for i in range(10):  # number 222 holds a little, 111 nothing yet: pausing would starve 222
        try:
            adm.submit(_campaign_job(i, pnid="222"))
        except MessageRejected as r:
            rejected.append(r.partition)
    assert rejected == [] and numbers.get("222").queue.size == 10
    enough = numbers.enough(numbers.get("222"))  # 2 s of its sending
    for i in range(10, 400):
        try:
            adm.submit(_campaign_job(i, pnid="222"))
        except MessageRejected as r:
            rejected.append(r.partition)
    assert set(rejected) == {0} and len(rejected) == 400 - enough + 1


def test_admission_rejects_once_the_worker_holds_its_most_whatever_the_numbers_hold():
    adm, buf, _ = _admission(Calls(), send_buffer_per_partition=10, send_held_max=100)
    for i in range(99):
        adm.submit(_campaign_job(i, partition=i % 10, pnid="222"))
    with pytest.raises(MessageRejected):
        adm.submit(_campaign_job(99, partition=9, pnid="222"))


# --- the stages wired together over a real ledger, Graph scripted --------------------------------
class Kek:
    def unseal(self, sealed, aad):  # noqa: ARG002 - the tenant's token, as Kek.unseal opens it
        return b"token"


class ClearRing:
    def opens_now(self, key_id) -> bool:  # noqa: ARG002 - every key in memory
        return True

    def open(self, key_id, nonce, ciphertext):  # noqa: ARG002 - cleartext Sealed (the SDK's dev mode)
        return json.loads(ciphertext)


class LateRing(ClearRing):
    """A key ring that has not read a key yet: its ``open`` reads the topic to its end first,
    blocking its caller for ``catch_up_s`` (as KeyRing._data_key does)."""

    def __init__(self, catch_up_s: float) -> None:
        self.catch_up_s = catch_up_s
        self.known: set[str] = set()

    def opens_now(self, key_id) -> bool:
        return key_id in self.known

    def open(self, key_id, nonce, ciphertext):
        if key_id not in self.known:
            time.sleep(self.catch_up_s)
            self.known.add(key_id)
        return super().open(key_id, nonce, ciphertext)


@dataclasses.dataclass
class Accepted:
    wamid: str
    message_status: str = "accepted"


class Sender:
    """Meta's answers in order: an exception to raise, or a wamid."""

    def __init__(self, answers) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, dict]] = []

    async def send(self, pnid, body, *, token, timeout, trace):  # noqa: ARG002
        self.calls.append((pnid, json.loads(body)))
        trace.written_at = time.monotonic()
        answer = self.answers.pop(0) if self.answers else "wamid.ok"
        if isinstance(answer, Exception):
            raise answer
        return Accepted(answer)


class World:
    def __init__(self, tmp: Path, answers=(), most: int = 100, ring=None) -> None:
        self.topic = ListTopic()
        self.records: list[tuple[str, bytes | None, bytes | None]] = []
        self.serde = AvroSerde()
        self.acked: list[str] = []
        self.sender = Sender(answers)
        self.calls = Calls()

        async def send(topic, key, value, *, partition=None, headers=None):  # noqa: ARG001
            self.records.append((topic, key, value))

        async def write_one(key: str, partition: int, value: bytes) -> int:
            return await self.topic.write(key, partition, value)

        async def write_many(records):
            out = []
            for topic, value, key, _, partition in records:
                if topic == "wa.send.ledger":
                    offset = await self.topic.write(key.decode(), partition, value)
                    out.append(type("D", (), {"offset": offset})())
                else:
                    self.records.append((topic, key, value))
                    out.append(None)
            return out

        s = SETTINGS
        self.buffer = Buffer(per_partition=10, most=most, pause=self.calls.pause, resume=self.calls.resume)
        slots = FairSlots(8)
        self.numbers = Numbers(s, registry=REG, buffer=self.buffer, slots=slots)
        self.ledger = Ledger(LedgerStore(tmp, ttl_s=3600), self.serde, write_one, self.topic, topic="wa.send.ledger",
                             write_many=write_many, on_tier=self.numbers.rebuild_tier)
        stats, work = Stats(), Work(slots)
        campaigns, suppressions = self.campaigns, self.suppressions = CampaignStates(), SuppressionList()
        self.unknown: list[str] = []
        results = Results(serde=self.serde, send=send, topic="wa.send.results", stats=stats)
        writer = LaneWriter(serde=self.serde, send=send, dead_topic="wa.send.dead", max_bytes=100_000)
        outcomes = Outcomes(s, ledger=self.ledger, results=results, send=send, letters=writer.letters,
                            retry_topic="wa.send.retry", buffer=self.buffer, numbers=self.numbers,
                            on_unknown=self.unknown.append)
        graph = GraphCall(s, ledger=self.ledger, sender=self.sender, registry=REG, kek=Kek(), keyring=ring or ClearRing(),
                          wamid_ref=lambda w: f"ref:{w}", numbers=self.numbers, slots=slots, work=work,
                          outcomes=outcomes, stats=stats)
        # every recipient wrote just now: its session window is open
        windows = type("Windows", (), {"last_inbound": staticmethod(lambda n, s: int(time.time() * 1000))})()
        scheduler = Scheduler(s, numbers=self.numbers, buffer=self.buffer, slots=slots, work=work, graph=graph,
                              outcomes=outcomes, registry=REG, windows=windows, campaigns=campaigns,
                              suppressions=suppressions, is_restricted=lambda s: False)
        admission = Admission(numbers=self.numbers, buffer=self.buffer, scheduler=scheduler, campaigns=campaigns)
        intake = Intake(s, ledger=self.ledger, buffer=self.buffer, admission=admission, outcomes=outcomes,
                        writer=writer, partition_of=lambda pnid: 0, rekeyed={"TRANSACTIONAL": "tx", "CAMPAIGN": "bulk"},
                        retry_topic="wa.send.retry", registry=REG, windows=windows, is_restricted=lambda s: False,
                        suppressions=suppressions, stats=stats)
        self.d = Dispatcher(s, intake=intake, scheduler=scheduler, graph=graph, buffer=self.buffer,
                            numbers=self.numbers, work=work, slots=slots, ledger=self.ledger, stats=stats)

    async def submit(self, cmd, partition: int = 0) -> None:
        async def ack() -> None:
            self.acked.append(cmd.command_id)

        await self.d.intake.submit(cmd, raw=self.serde.encode("SendCommand", cmd.to_avro()), partition=partition,
                                   topic="wa.send.requested", ack=ack)

    def results(self) -> list[SendResult]:
        return [SendResult.from_avro(self.serde.decode(v, "SendResult")) for t, _, v in self.records
                if t == "wa.send.results"]

    async def settle(self, *, until, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while not until() and time.monotonic() < end:
            await asyncio.sleep(0.01)
        await self.d.close()


def _text(i: int, **kw):
    msg = {"to": "15550100001", "message": {"type": "text", "text": {"body": "hi"}}}
    fields = {"idempotency_key": f"k{i}", "command_id": f"c{i}", "kind": "TEXT",
              "pii": {"key_id": "", "nonce": b"", "ciphertext": json.dumps(msg).encode()},
              "requested_at": dt.datetime.now(dt.timezone.utc)}
    return command(**(fields | kw))


def _run(tmp: Path, answers, script, **kw) -> World:
    async def go() -> World:
        w = World(tmp, answers, **kw)
        await w.ledger.ensure_loaded(0)
        await script(w)
        return w

    return asyncio.run(go())


def test_each_command_is_called_once_and_acknowledged_after_its_outcome(tmp_path):
    async def script(w: World) -> None:
        for i in range(5):
            await w.submit(_text(i))
        await w.submit(_text(0))  # the same command again while it is queued: joined, not sent twice
        await w.submit(_text(0, command_id="other"))  # another command with a queued key
        await w.settle(until=lambda: len(w.acked) == 7)

    w = _run(tmp_path, [], script)
    assert sorted(b["biz_opaque_callback_data"] for _, b in w.sender.calls) == [f"acme/k{i}" for i in range(5)]
    assert sorted(w.acked) == sorted(["c0", "c0", "c1", "c2", "c3", "c4", "other"])
    outcomes = sorted((r.command_id, str(r.outcome), r.wamid) for r in w.results())
    assert outcomes == [("c0", "ACCEPTED", "ref:wamid.ok"), ("c1", "ACCEPTED", "ref:wamid.ok"),
                        ("c2", "ACCEPTED", "ref:wamid.ok"), ("c3", "ACCEPTED", "ref:wamid.ok"),
                        ("c4", "ACCEPTED", "ref:wamid.ok"), ("other", "DUPLICATE", None)]
    assert all(w.ledger.get(f"acme/k{i}").state == DONE for i in range(5))


def test_a_data_key_not_read_yet_is_waited_for_off_the_event_loop(tmp_path):
    """A new recipient's data key may reach the worker's key ring after the command: reading the
    topic up to its end then takes a broker round trip or more. That wait must not stop the event
    loop (every number's pacing, the other calls, the lane agents): it ran on the loop before, and a
    stream of commands to new recipients cut a number's rate at 80 msg/s from ~75 to 41-62 msg/s."""
    ring = LateRing(catch_up_s=1.0)  # the read blocks its thread for 1 s
    ticks: list[float] = []

    async def script(w: World) -> None:
        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.02)
        await w.submit(_text(1, pii={"key_id": "new-subject/k1", "nonce": b"",
                                     "ciphertext": json.dumps({"to": "15550100001", "message": {
                                         "type": "text", "text": {"body": "hi"}}}).encode()}))
        await w.settle(until=lambda: w.acked == ["c1"])
        t.cancel()

    w = _run(tmp_path, [], script, ring=ring)
    assert [b["biz_opaque_callback_data"] for _, b in w.sender.calls] == ["acme/k1"]
    assert [str(r.outcome) for r in w.results()] == ["ACCEPTED"]
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) < 0.5, f"the event loop stood still for {max(gaps):.3f} s"  # 1 s if the read ran on it


def test_a_key_left_dispatching_is_unknown_and_never_called(tmp_path):
    async def script(w: World) -> None:
        await w.ledger.record("acme/k1", 0, DispatchEntry(tenant_id="acme", idempotency_key="k1", command_id="c1",
                                                          phone_number_id="111", subject_id="s1", state=DISPATCHING,
                                                          attempts=1, at=dt.datetime.now(dt.timezone.utc)))
        await w.submit(_text(1))
        await w.settle(until=lambda: w.acked)

    w = _run(tmp_path, [], script)
    assert not w.sender.calls and w.acked == ["c1"] and w.unknown == ["acme/k1"]
    assert [(r.command_id, str(r.outcome)) for r in w.results()] == [("c1", "UNKNOWN")]


def test_a_transient_error_parks_the_command_on_the_retry_topic_with_a_retrying_result(tmp_path):
    async def script(w: World) -> None:
        await w.submit(_text(1))
        await w.settle(until=lambda: w.acked)

    w = _run(tmp_path, [E.Transient("5xx", code=2)], script)
    assert [t for t, _, _ in w.records].count("wa.send.retry") == 1 and w.acked == ["c1"]
    assert [(str(r.outcome), r.error_code) for r in w.results()] == [("RETRYING", 2)]
    assert w.ledger.get("acme/k1").state == RETRY


def test_the_last_attempt_of_a_transient_error_is_dead_lettered(tmp_path):
    async def script(w: World) -> None:
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
        await w.ledger.record("acme/k1", 0, DispatchEntry(tenant_id="acme", idempotency_key="k1", command_id="c1",
                                                          phone_number_id="111", subject_id="s1", state=RETRY,
                                                          attempts=2, not_before=past, at=past))
        await w.submit(_text(1))  # read again from wa.send.retry
        await w.settle(until=lambda: w.acked)

    w = _run(tmp_path, [E.Transient("5xx", code=2)], script)
    assert len(w.sender.calls) == 1 and w.acked == ["c1"]
    assert [t for t, _, _ in w.records].count("wa.send.dead") == 1
    assert [(str(r.outcome), r.attempts) for r in w.results()] == [("DEAD", 3)]


def test_a_throttle_keeps_the_job_in_memory_and_sends_it_again(tmp_path):
    async def script(w: World) -> None:
        await w.submit(_text(1))
        await w.settle(until=lambda: w.acked, timeout=10)

    w = _run(tmp_path, [E.Throttled("busy", code=130429, retry_after=0.05)], script)
    assert len(w.sender.calls) == 2 and w.acked == ["c1"]
    assert [(str(r.outcome), r.attempts) for r in w.results()] == [("ACCEPTED", 2)]


def test_a_full_partition_pauses_once_through_the_buffer(tmp_path):
    async def script(w: World) -> None:
        w.d.scheduler.closing = True  # nothing is sent: the jobs stay held
        for i in range(15):
            await w.submit(_text(i, lane=CAMPAIGN, campaign_id="promo"))

    w = _run(tmp_path, [], script, most=12)  # its one number holds too little to keep it busy: the worker's most
    assert w.calls.log == [("pause", 0)] and w.buffer.total == 15 and not w.acked


def test_a_replayed_decided_command_is_answered_again_from_the_ledger_once_and_never_sent(tmp_path):
    decided = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=5)

    async def script(w: World) -> None:
        await w.ledger.record("acme/k1", 0, DispatchEntry(
            tenant_id="acme", idempotency_key="k1", command_id="c1", phone_number_id="111", subject_id="s1",
            state=DONE, attempts=1, outcome="ACCEPTED", wamid="ref:before", message_status="accepted", at=decided))
        await w.submit(_text(1))  # its result may have been lost in a crash: answered again
        await w.submit(_text(1))  # read twice by this process, which wrote that result: nothing more
        await w.d.close()

    w = _run(tmp_path, [], script)
    assert not w.sender.calls and w.acked == ["c1", "c1"]
    (r,) = w.results()
    assert (str(r.outcome), r.wamid, r.message_status, r.decided_at, r.attempts) == (
        "ACCEPTED", "ref:before", "accepted", decided, 1)
    assert r.reason.startswith("result repeated")


def test_precheck_decides_without_a_call_what_changed_while_a_command_waited(tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    promo = {"kind": "TEMPLATE", "template": {"name": "promo", "language": "en_US", "parameter_count": 0}}

    async def script(w: World) -> None:
        sched = w.d.scheduler
        job = lambda cmd: Job(key=cmd.key, cmd=cmd, partition=0, lane=cmd.lane, checked=time.monotonic())  # noqa: E731
        campaign = _text(1, lane=CAMPAIGN, campaign_id="spring", **promo)
        assert sched.precheck(job(campaign)) is None
        w.campaigns.apply({"campaign_id": "spring", "tenant_id": "acme", "state": "STOPPED", "actor": "t", "at": now})
        assert sched.precheck(job(campaign)) == (Outcome.CANCELLED, "campaign stopped")
        assert sched.precheck(job(_text(2, lane=CAMPAIGN, campaign_id="other", **promo))) is None
        w.suppressions.apply({"event_id": "e1", "tenant_id": "acme", "subject_id": "s1",
                              "category": "marketing_messages", "suppressed": True, "source": "user_preferences stop",
                              "at": now, "phone_number_id": None, "received_at": now})
        refused = sched.precheck(job(_text(3, **promo)))
        assert refused is not None and refused[0] == Outcome.REJECTED and refused[2] == "MARKETING_OPT_OUT"
        assert sched.precheck(job(_text(4))) is None  # a session message still goes
        late = job(_text(5, valid_until=now - dt.timedelta(seconds=1)))
        assert sched.precheck(late) is None  # validated less than a second ago: not again yet
        late.checked -= 2
        assert sched.precheck(late)[0] == Outcome.EXPIRED

    _run(tmp_path, [], script)


def test_a_bug_before_one_call_fails_that_command_and_the_others_of_its_turn_still_go(tmp_path):
    """A precheck that raises on one command (a bug) in the middle of a pacing turn: that command
    gets FAILED with the error, the ones reserved before it in the same turn are sent, and every
    command is acknowledged once. Before, the turn's reserved commands were dropped unsent and
    unacknowledged, and their pacing slots and in-flight slots were never given back."""
    async def script(w: World) -> None:
        sched = w.d.scheduler
        checks = sched.precheck

        def precheck(job):
            if job.cmd.idempotency_key == "k3":
                raise RuntimeError("boom")
            return checks(job)

        sched.precheck = precheck
        for i in range(6):
            await w.submit(_text(i))
        await w.settle(until=lambda: len(w.acked) == 6)

    w = _run(tmp_path, [], script)
    assert sorted(w.acked) == [f"c{i}" for i in range(6)]
    outcomes = {r.command_id: (str(r.outcome), r.reason) for r in w.results()}
    assert outcomes["c3"][0] == "FAILED" and "RuntimeError: boom" in outcomes["c3"][1]
    assert all(outcomes[f"c{i}"][0] == "ACCEPTED" for i in (0, 1, 2, 4, 5)), outcomes
    assert sorted(b["biz_opaque_callback_data"] for _, b in w.sender.calls) == [f"acme/k{i}" for i in (0, 1, 2, 4, 5)]
    assert w.d.scheduler.slots.in_use == 0 and all(n.pacer._reserved == 0 for n in w.numbers.by_id.values())


@pytest.mark.parametrize("breaks", ["pairs.take", "queue.pop"])
def test_a_bug_in_the_pacing_turn_itself_loses_no_command_and_no_slot(tmp_path, breaks):
    """A bug in the turn's own machinery (after a command was reserved, or while taking the next
    one off its queue) ends the turn: what it reserved is still dispatched, the command half way
    goes back to its queue, and no pacing or in-flight slot is kept."""
    async def script(w: World) -> None:
        number = w.numbers.get("111")
        failed = []
        if breaks == "pairs.take":
            target, name = number.pairs, "take"
        else:
            target, name = number.queue, "pop"
        real = getattr(target, name)
        calls = {"n": 0}

        def flaky(*a, **kw):
            calls["n"] += 1
            if calls["n"] == 3 and not failed:
                failed.append(True)
                if breaks == "queue.pop":
                    raise RuntimeError("boom")  # before the third command leaves the queue
                real(*a, **kw)
                raise RuntimeError("boom")  # after the third command was reserved and its pair taken
            return real(*a, **kw)

        setattr(target, name, flaky)
        for i in range(6):
            await w.submit(_text(i))
        await w.settle(until=lambda: len(w.acked) == 6, timeout=8.0)
        assert failed

    w = _run(tmp_path, [], script)
    assert sorted(w.acked) == [f"c{i}" for i in range(6)]
    assert {str(r.outcome) for r in w.results()} == {"ACCEPTED"}
    assert sorted(b["biz_opaque_callback_data"] for _, b in w.sender.calls) == [f"acme/k{i}" for i in range(6)]
    assert w.d.scheduler.slots.in_use == 0 and all(n.pacer._reserved == 0 for n in w.numbers.by_id.values())


COMMANDS = st.lists(st.fixed_dictionaries({
    "tenant_id": st.sampled_from(["acme", "acme", "nobody", ""]),
    "phone_number_id": st.sampled_from(["111", "111", "222", "999"]),
    "idempotency_key": st.sampled_from(["k1", "k2", "k3", ""]),
    "subject_id": st.sampled_from(["s1", "s2", ""]),
    "template": st.sampled_from([None, {"name": "hello", "language": "en_US", "parameter_count": 0},
                                 {"name": "nope", "language": "en_US", "parameter_count": 0},
                                 {"name": "hello", "language": "en_US", "parameter_count": 3}]),
    "expired": st.booleans(),
}), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(COMMANDS)
def test_any_mix_of_good_and_bad_commands_gets_one_ack_each_and_at_most_one_call_per_key(specs):
    now = dt.datetime.now(dt.timezone.utc)
    cmds = [_text(i, command_id=f"c{i}", tenant_id=sp["tenant_id"], phone_number_id=sp["phone_number_id"],
                  idempotency_key=sp["idempotency_key"], subject_id=sp["subject_id"], template=sp["template"],
                  kind="TEMPLATE" if sp["template"] else "TEXT",
                  valid_until=now - dt.timedelta(seconds=1) if sp["expired"] else None)
            for i, sp in enumerate(specs)]

    async def script(w: World) -> None:
        for cmd in cmds:
            await w.submit(cmd)
        await w.settle(until=lambda: len(w.acked) == len(cmds))

    with tempfile.TemporaryDirectory() as tmp:
        w = _run(Path(tmp), [], script)
    assert sorted(w.acked) == sorted(c.command_id for c in cmds)  # every record acknowledged, once
    decided = {r.command_id for r in w.results()}
    assert decided == {c.command_id for c in cmds}  # and every command answered
    keys = [b["biz_opaque_callback_data"] for _, b in w.sender.calls]
    assert len(keys) == len(set(keys))  # at most one Graph call per tenant/idempotency key
    for r in w.results():
        if str(r.outcome) == "ACCEPTED":
            cmd = next(c for c in cmds if c.command_id == r.command_id)
            assert cmd.tenant_id == "acme" and cmd.idempotency_key and not (cmd.valid_until and cmd.valid_until < now)
