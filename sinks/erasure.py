"""The ClickHouse half of an erasure, run by the sink between batches (it owns the chDB folder).

``ErasureWorker(settings, bootstrap).poll_once(client) -> int`` consumes ``wa.privacy.requests``
(consumer group ``<sink_group>-erasure``), and for every ERASURE request the privacy processor
marked ``steps.clickhouse = requested``:

* finds every table with a ``subject_id`` column in ``system.columns`` (new tables are covered
  without a code change) and deletes the subject's rows with a lightweight ``DELETE FROM``
  (``ALTER TABLE ... DELETE`` when a table does not support it), waiting for it to apply;
* writes the AuditEvent ``privacy.erasure.clickhouse_deleted`` (target = request id, rows per
  table) that the processor waits for before it marks the request COMPLETED;
* commits the offset only after that, so a crash repeats the (idempotent) delete.

Replays: a sink that re-reads a topic (a new consumer group, a crash replay) could bring an erased
subject's old rows back. The worker follows every erasure (``PrivacyRegistry``) and, every
``erasure_guard_interval_s``, deletes rows of a subject erased within the Kafka retention window
whose event time (the column the table's TTL is on) is not after the erasure request — rows of a
person who came back later stay. Each such delete is an audit event ``privacy.erasure.replay_blocked``.

Backpressure: while ``erasure_max_running_mutations`` or more mutations are still running in
this database, ``poll_once`` starts nothing new and returns 0.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from confluent_kafka import KafkaException

from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.kafka import consumer as make_consumer
from wapipe.kafka import producer as make_producer
from wapipe.log import get_logger
from wapipe.privacy.records import CLICKHOUSE_DONE, Publisher, audit_event, now_ms
from wapipe.privacy.registry import PrivacyRegistry
from wapipe.topics import PRIVACY_REQUESTS

log = get_logger(__name__)

GROUP = "wapipe-sink-erasure"


def subject_tables(client: Any) -> list[str]:
    """Every MergeTree-family table of the current database with a ``subject_id`` column."""
    rows = client.query(
        "SELECT c.table FROM system.columns AS c INNER JOIN system.tables AS t"
        " ON c.database = t.database AND c.table = t.name"
        " WHERE c.database = currentDatabase() AND c.name = 'subject_id' AND t.engine LIKE '%MergeTree%'"
        " ORDER BY c.table"
    ).result_rows
    return [r[0] for r in rows]


def running_mutations(client: Any) -> int:
    return int(client.query(
        "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done"
    ).result_rows[0][0])


_TTL_COLUMN = re.compile(r"\bTTL\s+toDateTime\((\w+)\)")


def event_time_columns(client: Any) -> dict[str, str]:
    """Subject table -> its event-time column (the one its TTL is computed from)."""
    out = {}
    tables = set(subject_tables(client))
    for name, ddl in client.query("SELECT name, create_table_query FROM system.tables"
                                  " WHERE database = currentDatabase()").result_rows:
        m = _TTL_COLUMN.search(ddl)
        if name in tables and m:
            out[name] = m.group(1)
    return out


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def erase_subject(client: Any, subject_id: str) -> dict[str, int]:
    """Delete the subject's rows from every subject table; returns rows deleted per table."""
    deleted: dict[str, int] = {}
    params = {"s": subject_id}
    for table in subject_tables(client):
        t = _quote(table)
        n = int(client.query(f"SELECT count() FROM {t} WHERE subject_id = {{s:String}}", parameters=params).result_rows[0][0])
        if not n:
            continue
        try:
            client.command(f"DELETE FROM {t} WHERE subject_id = {{s:String}}", parameters=params,
                           settings={"lightweight_deletes_sync": 2})
        except Exception as exc:  # e.g. tables with projections: a classic mutation instead
            log.info("erasure.lightweight_delete_refused", table=table, error=str(exc)[:200])
            client.command(f"ALTER TABLE {t} DELETE WHERE subject_id = {{s:String}}", parameters=params,
                           settings={"mutations_sync": 2})
        deleted[table] = n
    return deleted


class ErasureWorker:
    def __init__(self, settings: Settings, bootstrap: str, *, group: str | None = None) -> None:
        # One erasure group per sink group: a second sink deployment does its own deletes.
        sink_group = getattr(settings, "sink_group", None)
        group = group or (f"{sink_group}-erasure" if sink_group else GROUP)
        self.s = settings
        self.serde = AvroSerde.from_settings(settings)
        self._consumer = make_consumer(bootstrap, group)
        self._consumer.subscribe([PRIVACY_REQUESTS])
        self._producer = make_producer(bootstrap)
        self._pub = Publisher(self._producer, self.serde)
        self._pending: list[dict] = []  # read but not yet done (backpressure kept them waiting)
        self._handled: set[str] = set()  # request ids done by this worker (later progress records repeat them)
        self._registry = PrivacyRegistry(settings, bootstrap, serde=self.serde).start()
        self._last_guard = 0.0

    def poll_once(self, client: Any, *, timeout: float = 0.0) -> int:
        """Handle what is waiting; returns how many requests' ClickHouse erasure completed."""
        if running_mutations(client) >= self.s.erasure_max_running_mutations:
            log.info("erasure.backpressure", running=self.s.erasure_max_running_mutations)
            return 0
        self.guard_replays(client)
        if not self._pending:
            try:
                msgs = self._consumer.consume(100, timeout=timeout)
            except KafkaException as exc:  # pragma: no cover
                log.warning("erasure.consume_failed", error=str(exc))
                return 0
            for m in msgs:
                if m.error() is not None or m.value() is None:
                    continue
                try:
                    rec = self.serde.decode(m.value(), "PrivacyRequest")
                except SerdeError as exc:
                    log.error("erasure.unreadable_request", offset=m.offset(), error=str(exc))
                    continue
                if (rec["kind"] == "ERASURE" and rec["status"] == "IN_PROGRESS" and rec.get("subject_id")
                        and (rec.get("steps") or {}).get("clickhouse") == "requested"
                        and rec["request_id"] not in self._handled
                        and all(p["request_id"] != rec["request_id"] for p in self._pending)):
                    self._pending.append(rec)
            if not msgs:
                return 0
        done = 0
        while self._pending:
            if done and running_mutations(client) >= self.s.erasure_max_running_mutations:
                return done  # the rest next call; offsets stay uncommitted until then
            rec = self._pending[0]
            deleted = erase_subject(client, rec["subject_id"])
            self._pub.audit(audit_event(
                CLICKHOUSE_DONE, actor="system:sink", tenant_id=rec.get("tenant_id"), subject_id=rec["subject_id"],
                target=rec["request_id"], details={"tables": str(len(deleted)), "rows": str(sum(deleted.values())),
                                                   **{f"rows.{t}": str(n) for t, n in deleted.items()}}))
            log.info("erasure.clickhouse_done", request_id=rec["request_id"], rows=sum(deleted.values()))
            self._pending.pop(0)
            self._handled.add(rec["request_id"])
            done += 1
        self._consumer.commit(asynchronous=False)
        return done

    def guard_replays(self, client: Any, *, force: bool = False) -> int:
        """Delete replayed rows of erased subjects (see the module doc). Returns rows deleted."""
        if not force and time.monotonic() - self._last_guard < self.s.erasure_guard_interval_s:
            return 0
        self._last_guard = time.monotonic()
        window = max(self.s.retention_ms, self.s.raw_webhook_retention_ms)
        erased = {s: at for s, at in self._registry.erasures(clickhouse_done=True).items() if at >= now_ms() - window}
        if not erased:
            return 0
        total = 0
        for table, col in event_time_columns(client).items():
            t, c = _quote(table), _quote(col)
            found = client.query(f"SELECT subject_id, count() FROM {t} WHERE subject_id IN {{ids:Array(String)}}"
                                 " GROUP BY subject_id", parameters={"ids": sorted(erased)}).result_rows
            for subject, _ in found:
                params = {"s": subject, "at": dt.datetime.fromtimestamp(erased[subject] / 1000, tz=dt.timezone.utc)}
                n = int(client.query(f"SELECT count() FROM {t} WHERE subject_id = {{s:String}}"
                                     f" AND {c} <= {{at:DateTime64(3)}}",
                                     parameters=params).result_rows[0][0])
                if not n:
                    continue
                client.command(f"DELETE FROM {t} WHERE subject_id = {{s:String}}"
                               f" AND {c} <= {{at:DateTime64(3)}}",
                               parameters=params, settings={"lightweight_deletes_sync": 2})
                total += n
                self._pub.audit(audit_event("privacy.erasure.replay_blocked", actor="system:sink", subject_id=subject,
                                            details={"table": table, "rows": str(n)}))
                log.warning("erasure.replayed_rows_deleted", table=table, subject_id=subject, rows=n)
        return total

    def close(self) -> None:
        self._registry.close()
        self._consumer.close()
        self._producer.flush(10)
