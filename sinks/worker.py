"""The sink loop: Kafka topics → ClickHouse tables, batched; insert, then commit.

Modelled on snuba's consumers and arroyo's strategies:

* **Batches** close by rows, bytes or age; an empty batch (every record dead-lettered, or none
  at all) still closes, so offsets advance.
* **Insert, then commit.** Each table's slice of a batch is inserted with an
  ``insert_deduplication_token`` derived from the batch's offset ranges. A failed insert is
  retried with the *identical* rows and token, so an insert that reached ClickHouse before the
  failure (a lost response) is a no-op the second time. Offsets are committed only after every
  table of the batch is in and every dead letter is acked. A crash before the commit replays the
  batch; the tables' ReplacingMergeTree keys absorb a replay cut at different boundaries.
* **Backpressure.** While ClickHouse is slow or down the consumer's partitions are paused (the
  consumer keeps polling, so it stays in the group) and the insert is retried with capped
  exponential backoff, for as long as it takes: nothing lost, nothing doubled, the process lives.
* **Dead letters.** A record that cannot be decoded or converted (whatever the exception: one
  record never stops the sink) goes to ``wa.sink.dead`` with its reason, through
  ``wapipe.deadletter`` (cut down when it would not fit). A batch is committed only once each of
  its dead letters is acked; one the broker refused is written again (cut to the minimum when it
  was too large) before the commit, never dropped. If the sink stops on an error, nothing of the
  batch is committed. When more than ``sink_dlq_max_ratio`` of the last ``sink_dlq_window`` records were
  dead (and at least ``sink_dlq_min``), the sink stops with ``DeadLetterLimit`` rather than
  dead-letter everything after a bad deploy; that batch is not committed.
* Between batches it runs the ClickHouse side of erasure (``sinks.erasure.ErasureWorker``,
  PRIVACY's) with its own client, when that module exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from sinks.passthrough import PassThrough
from sinks.rows import CONVERTERS, SINK_TOPICS, Converter, Retention, Unconvertible, convert, insert_settings
from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.deadletter import DeadLetter, Source, SyncDeadLetters
from wapipe.deadletter import encode as encode_dead_letter
from wapipe.edge.clients import consumer as make_consumer
from wapipe.edge.clients import producer as make_producer
from wapipe.log import get_logger
from wapipe.topics import SINK_DEAD

log = get_logger(__name__)


def _transient(exc: BaseException) -> bool:
    """Connection trouble, timeouts, an overloaded server: retry the identical insert. Anything
    else (a type ClickHouse cannot take, a value it cannot parse) is the data's fault."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, OperationalError | ConnectionError | TimeoutError | OSError):
        return True
    text = str(exc)
    if isinstance(exc, DatabaseError) and any(k in text for k in (
            "TIMEOUT", "MEMORY_LIMIT", "TOO_MANY_PARTS", "TOO_MANY_SIMULTANEOUS", "NETWORK", "SOCKET",
            "Connection", "ABORTED", "TABLE_IS_READ_ONLY", "UNKNOWN_TABLE", "NO_SUCH_COLUMN")):
        return True  # a missing table or column is a deploy problem: wait for the migration, do not dead-letter
    return False


class DeadLetterLimit(RuntimeError):
    """Too many records could not be converted: the sink stops instead of dead-lettering all."""


@dataclass
class Batch:
    rows: dict[str, list[list]] = field(default_factory=dict)  # table -> rows
    fast: dict[str, list[tuple]] = field(default_factory=dict)  # table -> raw records for the Avro pass-through
    sources: dict[str, list[tuple]] = field(default_factory=dict)  # table -> (topic, partition, offset, key, value) per row
    offsets: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (topic, partition) -> [first, last]
    nbytes: int = 0
    count: int = 0
    dead: int = 0
    started: float = field(default_factory=time.monotonic)
    inserted: set[str] = field(default_factory=set)  # tables already in (a retry skips them; tokens make it safe anyway)
    # Digest of every record's bytes, per partition in offset order: offsets alone repeat when a
    # topic is recreated (a new broker, the same ClickHouse), and a repeated token would make
    # ClickHouse drop new rows. The same records give the same token however the partitions'
    # records were interleaved in the fetches.
    digests: dict[tuple[str, int], Any] = field(default_factory=dict)

    def track(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        tp = (topic, partition)
        span = self.offsets.get(tp)
        if span is None:
            self.offsets[tp] = [offset, offset]
            digest = self.digests[tp] = hashlib.blake2b(digest_size=16)
        else:
            span[1] = offset
            digest = self.digests[tp]
        value = value or b""
        digest.update(len(value).to_bytes(4, "big"))
        digest.update(value)
        self.nbytes += len(value)
        self.count += 1

    def token(self, table: str) -> str:
        """Same batch → same token, so a retried insert is deduplicated by ClickHouse; a different
        batch at the same offsets (a recreated topic) → a different token."""
        spans = ",".join(f"{t}/{p}/{a}-{b}/{self.digests[(t, p)].hexdigest()}"
                         for (t, p), (a, b) in sorted(self.offsets.items()))
        return hashlib.sha256(f"{table}|{spans}".encode()).hexdigest()

    def commit_offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, last + 1) for (t, p), (_, last) in sorted(self.offsets.items())]


@dataclass
class SinkStats:
    consumed: int = 0
    rows: int = 0
    dead: int = 0
    batches: int = 0
    insert_failures: int = 0
    commit_failures: int = 0
    rows_by_table: dict = field(default_factory=dict)
    inserts: int = 0  # batches written to ClickHouse
    insert_s: float = 0.0  # seconds those writes took
    commits: int = 0
    last_flush_at: float = 0.0


InsertClient = Any  # a clickhouse-connect Client (or anything with .insert/.query/.command)


class SinkWorker:
    def __init__(self, settings: Settings, bootstrap: str, client: InsertClient, *, retention: Retention,
                 serde: AvroSerde | None = None, topics: tuple[str, ...] = SINK_TOPICS, group: str | None = None,
                 erasure: Any = None, client_lock: threading.Lock | None = None,
                 on_flush: Callable[[Batch], None] | None = None,
                 converters: dict[str, Converter] | None = None,
                 consumer_overrides: dict[str, Any] | None = None,
                 passthrough: dict[str, PassThrough] | None = None) -> None:
        self.s = settings
        self.passthrough = passthrough or {}
        self.converters = converters or CONVERTERS
        self.topics = tuple(self.converters) if converters else topics
        self.client = client
        self.retention = retention
        self.serde = serde or AvroSerde.from_settings(settings)
        self.erasure = erasure
        self.lock = client_lock or threading.Lock()
        self.on_flush = on_flush
        self.stats = SinkStats()
        self.consumer = make_consumer(bootstrap, group or settings.sink_group, **{
            "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "queued.max.messages.kbytes": 262144, "max.poll.interval.ms": 600000, **(consumer_overrides or {}),
        })
        self.producer = make_producer(bootstrap)
        self.batch = Batch()
        self._dead_at: deque[int] = deque()  # stats.consumed at each dead letter (for the ratio)
        # Dead letters produced whose ack was not seen yet: [letter, done, error] each.
        self._dl_pending: list[list] = []
        self._dl_lock = threading.Lock()
        self._dl = SyncDeadLetters(self.serde, SINK_DEAD, self.producer, settings.dead_letter_max_bytes)
        self._paused: list[TopicPartition] = []
        self._last_reason = ""
        self._held: list = []
        self._halted = False
        self._inflight: tuple | None = None
        self._uncommitted: dict[tuple[str, int], int] = {}  # offsets written to ClickHouse, commit pending
        self._written: dict[tuple[str, int], int] = {}  # per partition: the offset our writes reached
        self._commit_failing_since: float | None = None

    # --- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event, ready: Callable[[], None] | None = None) -> None:
        self.consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        if ready is not None:
            ready()
        try:
            while not stop.is_set():
                self.step()
                if self._due():
                    self.flush(stop)
            self.drain(stop)  # a clean stop writes what it holds (gives up, uncommitted, if ClickHouse is down)
        except BaseException:
            self._halted = True  # stopping on an error: the revoke on close must not commit this batch
            raise
        finally:
            self.close()

    def step(self, timeout: float = 0.1) -> int:
        msgs = self.consumer.consume(10_000, timeout=timeout)
        for m in msgs:
            self._add(m)
        return len(msgs)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.producer.flush(10)
        with contextlib.suppress(Exception):
            self.consumer.close()

    def _due(self) -> bool:
        b = self.batch
        return (b.count >= self.s.sink_batch_rows or b.nbytes >= self.s.sink_batch_bytes
                or (time.monotonic() - b.started) * 1000 >= self.s.sink_batch_ms)

    # --- one record --------------------------------------------------------------------------
    def _add(self, m) -> None:
        err = m.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("sink.kafka_error", error=str(err))
            return
        value, topic, partition, offset = m.value(), m.topic(), m.partition(), m.offset()
        batch = self.batch
        batch.track(topic, partition, offset, value)
        self.stats.consumed += 1
        pt = self.passthrough.get(topic)
        if pt is not None and pt.accepts(value):
            batch.fast.setdefault(pt.table, []).append((topic, partition, offset, m.key(), value))
            return
        conv = self.converters.get(topic)
        try:
            if conv is None:
                raise Unconvertible(f"no converter for topic {topic}")
            record = self.serde.decode(value, conv.record)
            row = convert(conv, record, self.retention)
        except (SerdeError, Unconvertible) as exc:
            self._dead_letter(topic, partition, offset, m.key(), value, str(exc), type(exc).__name__)
            return
        except Exception as exc:  # a bug on one record must not stop the sink: dead-letter it, with why
            log.error("sink.convert_failed", topic=topic, offset=offset, error=f"{type(exc).__name__}: {exc}")
            self._dead_letter(topic, partition, offset, m.key(), value, f"sink error: {type(exc).__name__}: {exc}",
                              type(exc).__name__)
            return
        self.batch.rows.setdefault(conv.table, []).append(row)
        self.batch.sources.setdefault(conv.table, []).append((topic, partition, offset, m.key(), value))

    def _dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     reason: str, error_type: str) -> None:
        self.batch.dead += 1
        self.stats.dead += 1
        self._last_reason = reason
        letter = DeadLetter(Source(topic, partition, offset, key, value), reason[:2000], error_type)
        encoded, _ = encode_dead_letter(self.serde, letter, SINK_DEAD, self.s.dead_letter_max_bytes)
        item: list = [letter, False, None]  # letter, ack seen, error

        def acked(err, _msg) -> None:
            item[1], item[2] = True, err
            if err is None:  # one the broker refused is counted when SyncDeadLetters writes it again
                self._dl.tally.add(error_type[:200])

        with self._dl_lock:
            self._dl_pending.append(item)
        try:
            self.producer.produce(SINK_DEAD, key=topic.encode(), value=encoded, on_delivery=acked)
        except (KafkaException, BufferError) as exc:  # written again (blocking) before the batch commits
            item[1], item[2] = True, exc
        self.producer.poll(0)
        # The ratio over the last ``sink_dlq_window`` records, kept as the positions of the dead
        # ones (no per-record bookkeeping on the hot path).
        dead_at, seen = self._dead_at, self.stats.consumed
        dead_at.append(seen)
        while dead_at[0] <= seen - self.s.sink_dlq_window:
            dead_at.popleft()
        bad, window = len(dead_at), max(1, min(seen, self.s.sink_dlq_window))
        if bad >= self.s.sink_dlq_min and bad / window > self.s.sink_dlq_max_ratio:
            self._halted = True  # nothing of this batch gets committed, not even by the revoke on close
            raise DeadLetterLimit(
                f"{bad} of the last {window} records could not be converted "
                f"(limit {self.s.sink_dlq_max_ratio:.0%}); stopping instead of dead-lettering everything. "
                f"Last reason: {reason}")

    # --- insert, then commit ------------------------------------------------------------------
    def flush(self, stop: threading.Event | None = None) -> bool:
        """Close the current batch. Pipelined (``sink_pipeline``): wait for the previous batch's
        write and commit it, then hand this one to a writer thread and keep consuming; at most
        one batch is in flight, and commits stay in batch order. Else write and commit now.
        Returns False when asked to stop before a batch could be written (it stays uncommitted)."""
        if not self.s.sink_pipeline:
            return self._flush_sync(stop)
        if not self._finish_inflight(stop):
            return False
        b, self.batch = self.batch, Batch()
        if not b.count:  # an empty flush is the loop's heartbeat too (the probe's /healthz reads it)
            self.stats.last_flush_at = time.time()
            self._erasure()
            return True
        done, result = threading.Event(), {}

        def write() -> None:
            try:
                result["ok"] = self._write(b, stop)
            except BaseException as exc:  # re-raised in the consuming thread
                result["exc"] = exc
            finally:
                done.set()

        threading.Thread(target=write, name="sink-writer", daemon=True).start()
        self._inflight = (b, done, result)
        return True

    def drain(self, stop: threading.Event | None = None) -> bool:
        """Write and commit everything consumed so far."""
        return self.flush(stop) and self._finish_inflight(stop)

    def _write(self, b: Batch, stop: threading.Event | None) -> bool:
        """The writer thread: insert with identical retries (never touches the consumer)."""
        attempt = 0
        while True:
            try:
                self._insert(b)
                self._ack_dead_letters()
                return True
            except DeadLetterLimit:
                raise
            except Exception as exc:
                self.stats.insert_failures += 1
                attempt += 1
                delay = min(self.s.sink_retry_max_s, 0.05 * 2 ** min(attempt, 12))
                log.warning("sink.insert_failed", attempt=attempt, retry_in_s=round(delay, 2),
                            error=f"{type(exc).__name__}: {str(exc)[:300]}")
                end = time.monotonic() + delay
                while time.monotonic() < end:
                    if stop is not None and stop.is_set():
                        return False
                    time.sleep(0.05)

    def _finish_inflight(self, stop: threading.Event | None) -> bool:
        if self._inflight is None:
            return True
        b, done, result = self._inflight
        started = time.monotonic()
        while not done.wait(0.02):
            if time.monotonic() - started > 0.2:
                self._pause()  # the writer is slow or retrying: backpressure
            # stay in the group; anything fetched meanwhile waits for the next batch
            self._held.extend(self.consumer.consume(100, timeout=0.05) if self._paused else [])
        self._inflight = None
        if "exc" in result:
            raise result["exc"]
        if not result.get("ok"):
            log.warning("sink.stopped_before_flush", rows=b.count)
            return False
        self._committed(b)
        return True

    def _committed(self, b: Batch) -> None:
        self._commit(b)
        self._resume()
        self.stats.batches += 1
        self._count_rows(b)
        self.stats.last_flush_at = time.time()
        if self.on_flush is not None:
            self.on_flush(b)
        held, self._held = self._held, []
        for m in held:
            self._add(m)
        self._erasure()

    def _flush_sync(self, stop: threading.Event | None = None) -> bool:
        b = self.batch
        attempt = 0
        while True:
            try:
                self._insert(b)
                self._ack_dead_letters()
                break
            except Exception as exc:  # ClickHouse down/slow, or a dead letter not acked
                self.stats.insert_failures += 1
                attempt += 1
                self._pause()
                delay = min(self.s.sink_retry_max_s, 0.05 * 2 ** min(attempt, 12))
                log.warning("sink.insert_failed", attempt=attempt, retry_in_s=round(delay, 2),
                            error=f"{type(exc).__name__}: {str(exc)[:300]}")
                if not self._wait(delay, stop):
                    log.warning("sink.stopped_before_flush", rows=sum(map(len, b.rows.values())))
                    return False
        self._commit(b)
        self._resume()
        self.stats.batches += 1
        self._count_rows(b)
        self.stats.last_flush_at = time.time()
        if self.on_flush is not None:
            self.on_flush(b)
        self.batch = Batch()
        held, self._held = self._held, []
        for m in held:
            self._add(m)
        self._erasure()
        return True

    def _commit(self, b: Batch) -> None:
        """Commit the batch's offsets, with any an earlier commit could not. A commit the broker does
        not take (its coordinator moving, the broker away, a rebalance under way) never stops the
        sink: the rows are in ClickHouse, so their offsets wait for the next commit, which covers
        them. Should a partition move meanwhile, its new owner writes those rows again and
        ClickHouse absorbs them (insert dedup tokens, ReplacingMergeTree keys)."""
        for tp in b.commit_offsets():
            key = (tp.topic, tp.partition)
            self._uncommitted[key] = max(tp.offset, self._uncommitted.get(key, -1))
            self._written[key] = max(tp.offset, self._written.get(key, -1))
        if not self._uncommitted:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._uncommitted.items())]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self.stats.commit_failures += 1
            if self._commit_failing_since is None:  # once per episode
                self._commit_failing_since = time.monotonic()
                log.warning("sink.commit_deferred", partitions=len(offsets), error=str(exc)[:300])
            return
        self._uncommitted.clear()
        self.stats.commits += 1
        if self._commit_failing_since is not None:
            log.info("sink.commit_recovered", after_s=round(time.monotonic() - self._commit_failing_since, 1))
            self._commit_failing_since = None

    def _count_rows(self, b: Batch) -> None:
        for table, rows in [*b.rows.items(), *b.fast.items()]:
            self.stats.rows += len(rows)
            self.stats.rows_by_table[table] = self.stats.rows_by_table.get(table, 0) + len(rows)

    def _insert(self, b: Batch) -> None:
        started = time.monotonic()
        self._insert_all(b)
        self.stats.inserts += 1
        self.stats.insert_s += time.monotonic() - started

    def _insert_all(self, b: Batch) -> None:
        for table, items in list(b.fast.items()):
            key = f"{table}#avro"
            if key in b.inserted or not items:
                continue
            pt = next(p for p in self.passthrough.values() if p.table == table)
            try:
                with self.lock:
                    pt.insert(self.client, [i[4] for i in items], self._retention_table("metadata"), b.token(key))
                b.inserted.add(key)
            except Exception:
                if not self._fast_fallback(b, table, items):
                    raise  # every record decodes: ClickHouse itself failed; retry the identical insert
        for table, rows in b.rows.items():
            if table in b.inserted or not rows:
                continue
            conv = next(c for c in self.converters.values() if c.table == table)
            self._insert_isolating(conv, rows, b.sources.get(table) or [], b.token(table))
            b.inserted.add(table)

    def _insert_isolating(self, conv: Converter, rows: list[list], sources: list[tuple], token: str) -> None:
        """Insert; when ClickHouse refuses the *data* (not a connection or server trouble), split
        the block in halves until the refused rows are found and dead-letter them. Tokens are
        derived from the parent's, so a retry after an outage repeats the same blocks."""
        try:
            with self.lock:
                self.client.insert(conv.table, rows, column_names=list(conv.columns),
                                   settings=insert_settings(token))
            return
        except Exception as exc:
            if _transient(exc) or len(sources) != len(rows):
                raise
            if len(rows) == 1:
                self._dead_letter(*sources[0], f"ClickHouse refused the row for {conv.table}: {str(exc)[:500]}",
                                  type(exc).__name__)
                return
            log.warning("sink.isolating_bad_rows", table=conv.table, rows=len(rows), error=str(exc)[:200])
        mid = len(rows) // 2
        self._insert_isolating(conv, rows[:mid], sources[:mid], f"{token}/0")
        self._insert_isolating(conv, rows[mid:], sources[mid:], f"{token}/1")

    def _fast_fallback(self, b: Batch, table: str, items: list[tuple]) -> bool:
        """ClickHouse refused a pass-through block: decode its records in Python. Returns False
        when all of them are fine (so the failure was not the data); else dead-letters the bad
        ones, inserts the rest as rows under their own token and drops the block."""
        conv = next(c for c in self.converters.values() if c.table == table)
        rows, bad = [], []
        for item in items:
            try:
                rows.append(convert(conv, self.serde.decode(item[4], conv.record), self.retention))
            except (SerdeError, Unconvertible) as exc:
                bad.append((item, str(exc), type(exc).__name__))
        if not bad:
            return False
        for item, reason, kind in bad:
            self._dead_letter(*item, reason, kind)
        if rows:
            with self.lock:
                self.client.insert(table, rows, column_names=list(conv.columns),
                                   settings=insert_settings(b.token(f"{table}#fallback")))
        b.inserted.add(f"{table}#avro")
        return True

    def _retention_table(self, kind: str) -> tuple[list[str], list[int], int]:
        table = getattr(self.retention, "table", None)
        if table is None:
            return [], [], int(self.retention(None, kind))
        return table(kind)

    def _ack_dead_letters(self) -> None:
        """Every dead letter produced so far is acked before this returns (else it raises, and the
        batch is retried uncommitted): one the broker refused is written again, blocking, by
        ``SyncDeadLetters`` (cut to the minimum if it was too large)."""
        left = self.producer.flush(30)
        if left:
            raise RuntimeError(f"dead letters not acked ({left} in flight)")
        with self._dl_lock:  # not done yet: produced after the flush began, by the next batch
            failed = [i for i in self._dl_pending if i[1] and i[2] is not None]
            self._dl_pending = [i for i in self._dl_pending if not i[1]]
        for n, item in enumerate(failed):
            try:
                self._dl.write(item[0], key=item[0].source.topic.encode())
            except Exception:
                with self._dl_lock:
                    self._dl_pending[:0] = failed[n:]
                raise

    def _pause(self) -> None:
        if not self._paused:
            self._paused = list(self.consumer.assignment())
            if self._paused:
                self.consumer.pause(self._paused)
                log.info("sink.paused", partitions=len(self._paused))

    def _resume(self) -> None:
        if self._paused:
            with contextlib.suppress(Exception):
                self.consumer.resume(self._paused)
            log.info("sink.resumed", partitions=len(self._paused))
            self._paused = []

    def _wait(self, delay: float, stop: threading.Event | None) -> bool:
        """Back off while staying in the group: poll the paused consumer (no records come)."""
        end = time.monotonic() + delay
        while time.monotonic() < end:
            if stop is not None and stop.is_set():
                return False
            # Records fetched before the pause are held for the next batch: the batch being
            # retried must stay identical (same rows, same token).
            self._held.extend(self.consumer.consume(100, timeout=min(0.1, max(0.0, end - time.monotonic()))))
        return True

    def _erasure(self) -> None:
        if self.erasure is None:
            return
        try:
            with self.lock:
                n = self.erasure.poll_once(self.client)
            if n:
                log.info("sink.erasure", applied=n)
        except Exception as exc:  # erasure retries on its own schedule; the sink keeps loading
            log.warning("sink.erasure_failed", error=f"{type(exc).__name__}: {exc}")

    def _on_assign(self, consumer, partitions) -> None:
        """A partition that comes back to this sink after its commit could not be made (a broker
        outage long enough to cost the group its membership) starts where this sink's writes to
        ClickHouse reached, not at the older commit: those rows are not inserted again. Records
        before that offset were written by this process, so starting there loses nothing."""
        ours = [TopicPartition(tp.topic, tp.partition) for tp in partitions if (tp.topic, tp.partition) in self._written]
        if ours:
            try:
                committed = {(c.topic, c.partition): c.offset for c in consumer.committed(ours, timeout=10)}
            except KafkaException:
                committed = {}
            for tp in partitions:
                key = (tp.topic, tp.partition)
                mine = self._written.get(key)
                if mine is not None and mine > committed.get(key, -1):
                    tp.offset = mine
                    self._uncommitted[key] = mine  # committed with the next batch, even an empty one
                    log.info("sink.resume_after_own_writes", topic=tp.topic, partition=tp.partition, offset=mine,
                             committed=committed.get(key))
        consumer.assign(partitions)

    def _on_revoke(self, consumer, partitions) -> None:
        if (self.batch.count or self._inflight is not None) and not self._halted:
            try:
                self._finish_inflight(threading.Event())
                self._flush_sync(threading.Event())
            except Exception as exc:  # the new owner replays it; ReplacingMergeTree keys absorb it
                log.warning("sink.flush_on_revoke_failed", error=str(exc))
                self.batch = Batch()
        # Offsets of partitions no longer ours are never committed later (the new owner reads on
        # from the group's last commit; what it writes again, ClickHouse absorbs).
        for tp in partitions:
            self._uncommitted.pop((tp.topic, tp.partition), None)
