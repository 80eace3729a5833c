"""The normaliser as a Faust app: ``wa.webhook.raw`` → typed events, each webhook once.

Per raw record (interfaces.md §6: Avro is decoded inside the agent):
1. decode the ``RawWebhook`` and convert it (``convert.Normaliser``) in a thread, since sealing
   may publish a new subject key with acks; an unreadable record → ``DeadLetter`` on
   ``wa.webhook.dead`` with its reason, never a crashed agent;
2. drop events whose ``event_id`` the *seen* table holds (Meta's duplicate deliveries): the table
   is changelog-backed (it survives restarts and rebalances) and co-partitioned with the source
   topic, since duplicates of one webhook share its key;
3. send the fresh events and wait for the broker's acks, then record them as seen. A crash in
   between re-sends them after restart (at-least-once); their ids are deterministic, so the sink's
   ReplacingMergeTree keys absorb that rare copy.
Entries older than the dedup window (Meta retries for up to 7 days) are swept now and then from
inside the agent, so the tombstones go to the right changelog partition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import faust
from confluent_kafka import KafkaException

from processors.normalise.convert import Normaliser, Unreadable
from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.log import get_logger
from wapipe.topics import WEBHOOK_DEAD, WEBHOOK_RAW

log = get_logger(__name__)

SWEEP_EVERY_S = 60.0


def _unpack(v: str) -> tuple[float, int]:
    at, _, part = v.partition("|")
    return float(at), int(part or -1)


def dead_letter(source: Any, reason: str, error_type: str) -> dict:
    """A DeadLetter record for the Faust event ``source``."""
    msg = source.message
    return {
        "source_topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
        "key": msg.key, "value": msg.value, "reason": reason, "error_type": error_type,
        "tenant_id": None, "subject_id": None, "headers": {},
        "failed_at": dt.datetime.now(dt.timezone.utc),
    }


def build_app(settings: Settings, bootstrap: str, normaliser: Normaliser, *, serde: AvroSerde | None = None,
              on_ready=None) -> faust.App:
    serde = serde or AvroSerde.from_settings(settings)
    app = faust.App(
        settings.normalise_app_id,
        broker=[f"kafka://{h.strip()}" for h in bootstrap.split(",")],
        store="memory://",  # recovered from the changelog topic at start
        datadir=str(settings.state_dir / "faust"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=False,
        consumer_auto_offset_reset=settings.normalise_offset_reset,
        producer_acks=-1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )
    raw_topic = app.topic(WEBHOOK_RAW, key_serializer="raw", value_serializer="raw")
    dead_topic = app.topic(WEBHOOK_DEAD, key_serializer="raw", value_serializer="raw")
    out_topics: dict[str, faust.TopicT] = {}
    seen = app.Table("normalise-seen", default=None, partitions=settings.topic_partitions,
                     key_type=str, value_type=str,
                     help="event_id -> '<first seen, unix s>|<partition>'")
    window = float(settings.normalise_dedup_window_s)
    last_sweep = {"at": time.monotonic()}
    counters = {"in": 0, "out": 0, "duplicates": 0, "dead": 0}

    def topic_for(name: str) -> faust.TopicT:
        if name not in out_topics:
            out_topics[name] = app.topic(name, key_serializer="raw", value_serializer="raw")
        return out_topics[name]

    def sweep(partition: int, now: float) -> None:
        stale = [k for k, v in list(seen.items()) if v and _unpack(v)[1] == partition and _unpack(v)[0] < now - window]
        for k in stale:
            del seen[k]
        if stale:
            log.info("normalise.seen_swept", partition=partition, removed=len(stale))

    @app.agent(raw_topic)
    async def normalise(stream):
        async for event in stream.events():
            counters["in"] += 1
            try:
                raw = serde.decode(event.value, "RawWebhook")
                events = await _convert(raw)
            except SerdeError as exc:
                await _dead(event, str(exc), "SerdeError")
                continue
            except Unreadable as exc:
                await _dead(event, exc.reason, exc.error_type)
                continue
            except Exception as exc:  # a bug on one record must not stop the agent: dead-letter it, with why
                log.error("normalise.convert_failed", error=f"{type(exc).__name__}: {exc}")
                await _dead(event, f"normaliser error: {type(exc).__name__}: {str(exc)[:500]}", type(exc).__name__)
                continue
            now = time.time()
            part = event.message.partition
            fresh = []
            for e in events:
                got = seen.get(e.event_id)
                if got and _unpack(got)[0] >= now - window:
                    counters["duplicates"] += 1
                    continue
                fresh.append(e)
            futures = [await topic_for(e.topic).send(key=e.key.encode(), value=serde.encode(e.record_name, e.record, topic=e.topic))
                       for e in fresh]
            if futures:
                await asyncio.gather(*futures)  # acked by the broker before it counts as seen
            for e in fresh:
                seen[e.event_id] = f"{now:.3f}|{part}"
            counters["out"] += len(fresh)
            if time.monotonic() - last_sweep["at"] > SWEEP_EVERY_S:
                last_sweep["at"] = time.monotonic()
                sweep(part, now)

    async def _convert(raw: dict) -> list:
        """Sealing may publish a subject key (Kafka, with acks): retry infrastructure failures
        with backoff instead of dead-lettering good webhooks while the broker is unwell."""
        from wapipe.privacy.errors import PrivacyError, SubjectErased

        delay = 0.2
        while True:
            try:
                return await asyncio.to_thread(normaliser.convert, raw)
            except SubjectErased:
                raise
            except (PrivacyError, KafkaException) as exc:
                log.warning("normalise.seal_retry", error=str(exc)[:300], retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _dead(event, reason: str, error_type: str) -> None:
        counters["dead"] += 1
        log.warning("normalise.dead_letter", reason=reason, error_type=error_type,
                    partition=event.message.partition, offset=event.message.offset)
        fut = await dead_topic.send(key=event.message.key, value=serde.encode("DeadLetter", dead_letter(event, reason, error_type),
                                                                              topic=WEBHOOK_DEAD))
        await fut

    @app.task
    async def _announce():
        if on_ready is not None:
            on_ready()

    @app.timer(30.0)
    async def _report():
        log.info("normalise.progress", **counters)

    app.counters = counters  # type: ignore[attr-defined]
    return app
