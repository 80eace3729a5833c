"""Campaign control and progress.

Control: a ``CampaignControl`` record (RUNNING / PAUSED / STOPPED) on the compacted
``wa.campaign.control`` topic, acknowledged before the command returns. Every worker follows
that topic and checks it at least every 250 ms, so pause/stop take effect within a second;
a stop turns the campaign's remaining commands into CANCELLED results.

Progress is read from the topics themselves (no extra state): the campaign's distinct commands
on ``wa.send.requested(.bulk)`` and the latest result per idempotency key on ``wa.send.results``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer, TopicPartition

from wapipe import topics as T
from wapipe.avro import AvroSerde, SerdeError
from wapipe.kafka import producer as make_producer

STATES = ("RUNNING", "PAUSED", "STOPPED")


def publish_control(bootstrap: str, campaign_id: str, state: str, *, tenant_id: str = "", actor: str = "operator:cli",
                    serde: AvroSerde | None = None, timeout: float = 15.0) -> None:
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}")
    serde = serde or AvroSerde()
    value = serde.encode("CampaignControl", {"campaign_id": campaign_id, "tenant_id": tenant_id, "state": state,
                                             "actor": actor, "at": dt.datetime.now(dt.timezone.utc)},
                         topic=T.CAMPAIGN_CONTROL)
    errors: list[str] = []
    p = make_producer(bootstrap)
    p.produce(T.CAMPAIGN_CONTROL, key=campaign_id.encode(), value=value,
              on_delivery=lambda err, _m: errors.append(err.str()) if err else None)
    if p.flush(timeout):
        raise RuntimeError(f"campaign {campaign_id}: control record not acknowledged within {timeout:.0f}s")
    if errors:
        raise RuntimeError(f"campaign {campaign_id}: {errors[0]}")


@dataclass
class Progress:
    campaign_id: str
    state: str
    queued: int  # distinct commands the ERP published for the campaign
    sent: int  # ACCEPTED by Meta
    failed: int  # FAILED, DEAD, REJECTED, EXPIRED
    unknown: int  # outcome unknown (reconciled from status webhooks)
    cancelled: int
    remaining: int  # no final outcome yet

    def as_dict(self) -> dict:
        return asdict(self)


def _read(bootstrap: str, topic: str, timeout: float = 30.0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"campaign-progress-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in md.partitions]
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        c.assign([TopicPartition(topic, p, -2) for p in ends])
        done = {p for p, e in ends.items() if e == 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(ends) and time.monotonic() < deadline:
            for m in c.consume(5000, timeout=0.5):
                if m.error():
                    continue
                if m.offset() >= ends[m.partition()] - 1:
                    done.add(m.partition())
                yield m
    finally:
        c.close()


def progress(bootstrap: str, campaign_id: str, *, serde: AvroSerde | None = None) -> Progress:
    serde = serde or AvroSerde()
    state = "RUNNING"
    for m in _read(bootstrap, T.CAMPAIGN_CONTROL):
        if m.key() == campaign_id.encode() and m.value():
            try:
                state = serde.decode(m.value(), "CampaignControl")["state"]
            except SerdeError:
                pass
    keys: set[tuple[str, str]] = set()
    for topic in (T.SEND_REQUESTED_BULK, T.SEND_REQUESTED):
        for m in _read(bootstrap, topic):
            try:
                c = serde.decode(m.value(), "SendCommand")
            except SerdeError:
                continue
            if c.get("campaign_id") == campaign_id:
                keys.add((c["tenant_id"], c["idempotency_key"]))
    final: dict[tuple[str, str], str] = {}
    for m in _read(bootstrap, T.SEND_RESULTS):
        try:
            r = serde.decode(m.value(), "SendResult")
        except SerdeError:
            continue
        k = (r["tenant_id"], r["idempotency_key"])
        if r.get("campaign_id") == campaign_id and k in keys and r["outcome"] not in ("RETRYING", "DUPLICATE"):
            final[k] = r["outcome"]
    n = Counter(final.values())
    return Progress(
        campaign_id=campaign_id, state=state, queued=len(keys), sent=n["ACCEPTED"],
        failed=n["FAILED"] + n["DEAD"] + n["REJECTED"] + n["EXPIRED"], unknown=n["UNKNOWN"],
        cancelled=n["CANCELLED"], remaining=len(keys) - len(final),
    )
