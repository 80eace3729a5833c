"""The normaliser as a Faust app: ``wa.webhook.raw`` → typed events, each webhook once.

Per batch of raw records (``stream.take_events``: up to ``WAPIPE_NORMALISE_BATCH_MAX`` records or
``WAPIPE_NORMALISE_BATCH_WITHIN_S`` seconds; Avro is decoded inside the agent, interfaces.md §6):
1. decode each ``RawWebhook`` and convert the batch (``convert.Normaliser.convert_items``) in one
   thread hop, since sealing may publish a new subject key with acks; an unreadable record →
   ``DeadLetter`` on ``wa.webhook.dead`` with its reason, and so is each item of a webhook that
   cannot be converted or encoded (its path in the webhook in the reason and in ``headers.path``)
   while the other items go on: never a crashed agent. Dead letters go through
   ``wapipe.deadletter`` (cut down to fit, awaited) before the batch's offsets are acknowledged;
2. drop events whose ``event_id`` the *seen* table holds, or that an earlier record of the same
   batch produced (Meta's duplicate deliveries): the table is changelog-backed (it survives
   restarts and rebalances) and co-partitioned with the source topic, since duplicates of one
   webhook share its key;
3. send the batch's fresh events (through librdkafka, ``wapipe.publisher``) and wait for the
   broker's acks, then record them as seen; only then are the batch's offsets acknowledged. A
   crash in between re-sends them after restart (at-least-once); their ids are deterministic, so
   the sink's ReplacingMergeTree keys absorb that rare copy.
The seen table lives in RocksDB (``rocksdict``) under the state dir, so a restart reads only the
changelog written since the last run, not the whole dedup window. Entries older than the window
(Meta retries for up to 7 days) leave by themselves: the changelog topic deletes them by retention
(``compact,delete``, ``seen_changelog``) and the local database drops them at compaction (RocksDB
TTL); a lookup ignores an older entry that is still there.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import faust
from confluent_kafka import KafkaException

from processors.normalise.convert import Converted, Normaliser, Unreadable
from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.deadletter import DeadLetter, DeadLetters, Source
from wapipe.edge.endpoint import faust_app_kwargs
from wapipe.edge.faust_internals import as_current_event
from wapipe.log import get_logger
from wapipe.edge.offset_guard import OffsetGuard, broker_committed, watch_stalls
from wapipe.privacy.errors import PrivacyError, SubjectErased
from wapipe.publisher import KafkaPublisher, PublishFailed, for_processor
from wapipe.topics import (
    WEBHOOK_DEAD,
    WEBHOOK_RAW,
    TopicSpec,
    table_changelog,
    webhook_dead_max_bytes,
    webhook_record_max_bytes,
)

log = get_logger(__name__)

SEEN_TABLE = "normalise-seen"


def _seen_at(v: str) -> float:
    """When an entry was first seen (unix s). Entries written before 2026-11-29 also carry
    ``|<partition>`` for the sweep this table no longer needs."""
    return float(v.partition("|")[0])


def seen_changelog(settings: Settings) -> TopicSpec:
    """The seen table's changelog: an id leaves it once it is older than the dedup window."""
    return table_changelog(settings.normalise_app_id, SEEN_TABLE, settings.normalise_dedup_window_s, "event_id")


def _item_json(raw: Any) -> bytes:
    """A bad item of a webhook as JSON bytes, for its dead letter's value."""
    return json.dumps(raw, ensure_ascii=False, default=str, allow_nan=True).encode("utf-8", "replace")


def build_app(settings: Settings, bootstrap: str, normaliser: Normaliser, *, serde: AvroSerde | None = None,
              on_ready=None) -> faust.App:
    serde = serde or AvroSerde.from_settings(settings)
    datadir = settings.state_dir / "faust" / settings.normalise_app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        settings.normalise_app_id,
        **faust_app_kwargs(bootstrap),  # broker URLs and credentials (TLS/SASL)
        store="rocksdb://",  # rocksdict: a restart resumes from its persisted changelog offsets
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",  # "latest" is done by the cli for a new group only (wapipe/edge/group_start.py)
        producer_acks=-1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # A raw webhook can be as big as the ingress accepts (3 MB from Meta, plus its envelope):
        # aiokafka skips a record larger than this with RecordTooLargeError, so it is sized from
        # the same setting as the topic's max.message.bytes (wapipe/topics.py).
        consumer_max_fetch_size=webhook_record_max_bytes(settings),
    )
    raw_topic = app.topic(WEBHOOK_RAW, key_serializer="raw", value_serializer="raw")
    # Its events and dead letters go through librdkafka (``publisher.for_processor``), made on first
    # use, in the running loop.
    publisher: list[KafkaPublisher] = []

    def writes() -> KafkaPublisher:
        if not publisher:
            publisher.append(for_processor(bootstrap, message_max_bytes=webhook_dead_max_bytes(settings)))
            publisher[0].start(asyncio.get_running_loop())
        return publisher[0]
    window = float(settings.normalise_dedup_window_s)
    # Its changelog topic is faust's default name, created (or altered) with its retention by
    # ``seen_changelog`` before the app starts (wapipe/app/commands/normalise.py).
    seen = app.Table(SEEN_TABLE, default=None, partitions=settings.topic_partitions, key_type=str, value_type=str,
                     help="event_id -> first seen (unix s)", options={"ttl": int(window)})
    counters = {"in": 0, "out": 0, "duplicates": 0, "dead": 0, "dead_items": 0}

    guard = OffsetGuard("normalise")  # Faust can skip records around a rebalance: see wapipe/edge/offset_guard.py
    # table writes name their event through Faust's internals: without them the normaliser does not start
    watch_stalls(app, guard, bootstrap, [WEBHOOK_RAW], require=("current_event",))

    @app.on_partitions_revoked.connect
    async def _revoked(app: Any, revoked: Any, **kw: Any) -> None:
        guard.forget(revoked)

    @app.on_partitions_assigned.connect
    async def _assigned(app: Any, assigned: Any, **kw: Any) -> None:
        guard.forget(assigned)
        guard.assigned(await broker_committed(bootstrap, settings.normalise_app_id, assigned))

    @app.agent(raw_topic)
    async def normalise(stream):
        # Batches, not one webhook at a time: one thread hop for the conversions and one wait for
        # the broker's acks per batch. take_events acks the batch's offsets only after this body
        # finished with it, so a crash mid-batch replays it (at-least-once, as before).
        async for batch in stream.take_events(settings.normalise_batch_max, within=settings.normalise_batch_within_s):
            counters["in"] += len(batch)
            decoded: list[tuple[Any, dict]] = []
            for event in batch:
                if not await guard.admit(app.consumer, event):
                    continue  # Faust skipped records before it: they (and it) come again
                try:
                    decoded.append((event, serde.decode(event.value, "RawWebhook")))
                except SerdeError as exc:
                    await _dead(event, str(exc), "SerdeError")
            converted = await _convert_all([raw for _, raw in decoded])
            now = time.time()
            fresh: list[tuple[Any, Any, bytes]] = []
            in_batch: set[str] = set()  # a duplicate delivery can sit in the same batch
            for (event, _), result in zip(decoded, converted):
                if isinstance(result, BaseException):
                    await _dead_for(event, result)
                    continue
                for item in result.bad:
                    await _dead_item(event, item.path, item.reason, "InvalidWebhook", _item_json(item.raw))
                for e in result.events:
                    got = seen.get(e.event_id)
                    if e.event_id in in_batch or (got and _seen_at(got) >= now - window):
                        counters["duplicates"] += 1
                        continue
                    try:  # an event Avro cannot write is that item's dead letter, not a dead agent
                        value = serde.encode(e.record_name, e.record.to_avro(), topic=e.topic)
                    except SerdeError as exc:
                        await _dead_item(event, e.path, str(exc)[:500], "SerdeError", None)
                        continue
                    in_batch.add(e.event_id)
                    fresh.append((event, e, value))
            if fresh:  # acked by the broker before they count as seen
                written = await asyncio.gather(*(_publish(source, e, value) for source, e, value in fresh))
                fresh = [f for f, ok in zip(fresh, written) if ok]
            for source, e, _ in fresh:
                with as_current_event(source):  # the changelog partition is the source record's
                    seen[e.event_id] = f"{now:.3f}"
            counters["out"] += len(fresh)

    async def _publish(source, e, value: bytes) -> bool:
        """Write one event, retrying while the broker does not take it; an event the broker can
        never take (too large for its topic) is that item's dead letter instead. False then."""
        delay = 0.2
        while True:
            try:
                await writes().publish(e.topic, value, e.key.encode())
                return True
            except PublishFailed as exc:
                if exc.too_large:
                    await _dead_item(source, e.path, f"event too large for {e.topic} ({len(value)} bytes)",
                                     "RecordTooLarge", None)
                    return False
                log.warning("normalise.publish_retry", topic=e.topic, error=str(exc)[:300], retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _dead_for(event, exc: BaseException) -> None:
        if isinstance(exc, Unreadable):
            await _dead(event, exc.reason, exc.error_type)
        else:  # a bug on one record must not stop the agent: dead-letter it, with why
            log.error("normalise.convert_failed", error=f"{type(exc).__name__}: {exc}")
            await _dead(event, f"normaliser error: {type(exc).__name__}: {str(exc)[:500]}", type(exc).__name__)

    async def _convert_all(raws: list[dict]) -> list:
        """Each webhook's events, or the exception that made it unreadable, in one thread hop."""
        if not raws:
            return []
        return await _with_retries(lambda: [_convert_one(raw) for raw in raws])

    def _convert_one(raw: dict) -> Converted | BaseException:
        try:
            return normaliser.convert_items(raw)
        except SubjectErased as exc:
            return exc
        except (PrivacyError, KafkaException):
            raise  # infrastructure: the whole batch is retried (conversion is deterministic)
        except Exception as exc:
            return exc

    async def _with_retries(work):
        """Sealing may publish a subject key (Kafka, with acks): retry infrastructure failures
        with backoff instead of dead-lettering good webhooks while the broker is unwell."""
        delay = 0.2
        while True:
            try:
                return await asyncio.to_thread(work)
            except (PrivacyError, KafkaException) as exc:
                log.warning("normalise.seal_retry", error=str(exc)[:300], retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    dead_letters: list[DeadLetters] = []

    def letters() -> DeadLetters:
        if not dead_letters:
            # wa.webhook.dead takes a whole raw record plus a dead letter's envelope (wapipe/topics.py)
            dead_letters.append(DeadLetters(serde, WEBHOOK_DEAD, writes().publish, webhook_dead_max_bytes(settings)))
        return dead_letters[0]

    async def _dead(event, reason: str, error_type: str) -> None:
        """Awaited until the broker acked it, before the batch's offsets are acknowledged."""
        counters["dead"] += 1
        await letters().write(DeadLetter(Source.of_faust(event), reason, error_type))

    async def _dead_item(event, path: str, reason: str, error_type: str, value: bytes | None) -> None:
        """One item of a webhook: its path in the reason and the headers, the item as the value."""
        counters["dead"] += 1
        counters["dead_items"] += 1
        await letters().write(DeadLetter(Source.of_faust(event), f"{path}: {reason}", error_type,
                                         headers={"path": path, "part": "item"}, value=value))

    @app.task
    async def _announce():
        if on_ready is not None:
            on_ready()

    @app.timer(30.0)
    async def _report():
        log.info("normalise.progress", **counters)

    @app.on_before_shutdown.connect
    async def _flush(app: Any, **kw: Any) -> None:  # after the consumer stopped
        if publisher:
            await asyncio.get_running_loop().run_in_executor(None, publisher[0].close)

    app.counters = counters  # type: ignore[attr-defined]
    return app
