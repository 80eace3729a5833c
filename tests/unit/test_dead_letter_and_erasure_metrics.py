"""Metrics left from issue 21 #3: dead letters by reason per service (wapipe/deadletter.py, exported
by every probe) and the erasure backlog and deadline gauges (wapipe/privacy/metrics.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from wapipe.avro import AvroSerde
from wapipe.deadletter import DeadLetter, DeadLetters, DeadLetterTally, Source
from wapipe.messages.privacy import PrivacyKind, PrivacyRequest, PrivacyStatus
from wapipe.messages.times import at_ms
from wapipe.privacy.metrics import ErasureMetrics, erasure_backlog
from wapipe.probe import DeadLetterMetrics, Probe

reasons = st.sampled_from(["SerdeError", "ValidationError", "Unreadable", "KeyError", ""])


def _scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


@settings(max_examples=200, deadline=None)
@given(st.lists(reasons, max_size=30))
def test_every_written_dead_letter_is_counted_by_reason(written):
    tally = DeadLetterTally()
    sent = []

    async def publish(topic, value, key):
        sent.append(value)

    letters = DeadLetters(AvroSerde(), "wa.send.dead", publish, 900_000, tally=tally)

    async def run():
        for i, reason in enumerate(written):
            await letters.write(DeadLetter(Source("wa.send.requested", 0, i, b"k", b"v"), "why", reason))

    asyncio.run(run())
    want = Counter(r or "unknown" for r in written)
    assert tally.counts() == dict(want) and len(sent) == len(written)
    probe = Probe("worker")
    probe.registry.register(DeadLetterMetrics("worker", tally))
    text = _scrape(probe.registry)
    for reason, n in want.items():
        assert f'wapipe_dead_letters_total{{reason="{reason}",service="worker"}} {float(n)}' in text
    assert text.count("wapipe_dead_letters_total{") == len(want)


def test_a_write_that_failed_is_not_counted():
    tally = DeadLetterTally()
    calls = []

    async def publish(topic, value, key):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("broker away")

    letters = DeadLetters(AvroSerde(), "wa.send.dead", publish, 900_000, retry_max_s=0.01, tally=tally)
    asyncio.run(letters.write(DeadLetter(Source("t", 0, 1), "why", "SerdeError")))
    assert len(calls) == 2 and tally.counts() == {"SerdeError": 1}


DAY = 24 * 3600.0


def _req(kind, status, requested_s):
    at = at_ms(int(requested_s * 1000))
    return PrivacyRequest(request_id=f"r{requested_s}", kind=PrivacyKind(kind), source="test",
                          status=PrivacyStatus(status), confirmation_code=f"c{requested_s}", requested_at=at,
                          updated_at=at)


def test_erasure_backlog_counts_open_erasures_only():
    now = 1_000_000_000.0
    reqs = [_req("ERASURE", "IN_PROGRESS", now - 3 * DAY), _req("ERASURE", "RECEIVED", now - 60),
            _req("ERASURE", "COMPLETED", now - 40 * DAY), _req("ACCESS", "RECEIVED", now - 50 * DAY),
            _req("ERASURE", "REJECTED", now - 45 * DAY)]
    b = erasure_backlog(reqs, now_s=now, legal_deadline_s=30 * DAY, completion_deadline_s=DAY)
    assert (b.open, b.oldest_age_s, b.deadline_left_s, b.overdue) == (2, 3 * DAY, 27 * DAY, 1)
    late = erasure_backlog([_req("ERASURE", "IN_PROGRESS", now - 31 * DAY)], now_s=now, legal_deadline_s=30 * DAY,
                           completion_deadline_s=DAY)
    assert late.deadline_left_s == -DAY
    assert erasure_backlog(reqs[2:], now_s=now, legal_deadline_s=30 * DAY, completion_deadline_s=DAY).open == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ERASURE", "ACCESS", "RESTRICTION"]),
                          st.sampled_from(["RECEIVED", "IN_PROGRESS", "COMPLETED", "FAILED", "REJECTED"]),
                          st.floats(min_value=0, max_value=90 * DAY)), max_size=40))
def test_erasure_gauges_match_the_open_requests(items):
    now = 2_000_000_000.0
    reqs = [_req(k, s, now - age) for k, s, age in items]
    registry = CollectorRegistry()
    registry.register(ErasureMetrics(lambda: reqs, 30 * DAY, DAY, clock=lambda: now))
    text = _scrape(registry)
    open_ages = [round(age, 3) for k, s, age in items if k == "ERASURE" and s in ("RECEIVED", "IN_PROGRESS")]

    def value(name):
        line = next((x for x in text.splitlines() if x.startswith(name + " ")), None)
        return None if line is None else float(line.split()[1])

    assert value("wapipe_erasure_open_requests") == len(open_ages)
    assert value("wapipe_erasure_overdue_requests") == sum(1 for a in open_ages if a > DAY)
    if open_ages:
        assert abs(value("wapipe_erasure_oldest_age_seconds") - max(open_ages)) < 0.01
        assert abs(value("wapipe_erasure_deadline_seconds") - (30 * DAY - max(open_ages))) < 0.01
    else:
        assert value("wapipe_erasure_oldest_age_seconds") == 0 and value("wapipe_erasure_deadline_seconds") is None
