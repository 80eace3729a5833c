"""The ClickHouse half of an erasure, run by the sink between batches (it owns the chDB folder).

``ErasureWorker(settings, bootstrap).poll_once(client) -> int`` consumes ``wa.privacy.requests``
(consumer group ``<sink_group>-erasure``), and for every ERASURE request the privacy processor
marked ``steps.clickhouse = requested``:

* finds every table with a ``subject_id`` column in ``system.columns`` (new tables are covered
  without a code change) and deletes the subject's rows with ``ALTER TABLE ... DELETE``, a mutation
  that rewrites every part holding them, waiting for it (``mutations_sync = 2``). A lightweight
  ``DELETE FROM`` is not enough: it only masks rows (``SETTINGS apply_deleted_mask = 0`` shows them
  again), and a later mutation does not remove rows masked earlier, so a table that still holds
  masked rows of the subject also gets ``ALTER TABLE ... APPLY DELETED MASK``. The ids being erased
  are handed to the mutation through a ``Memory`` table (``erasure_targets``), so neither the
  mutation's text (``system.mutations``, ``mutation_N.txt`` on disk) nor a query log holds them;
* checks that no row of the subject is left even unmasked (``apply_deleted_mask = 0``), then waits
  until the parts the mutation replaced are gone from disk (ClickHouse removes them after the
  table's ``old_parts_lifetime``; ``erasure_old_parts_lifetime_s`` sets it on every subject table);
* only then writes the AuditEvent ``privacy.erasure.clickhouse_deleted`` (target = request id, rows
  per table, ``method = rewritten``, replaced parts removed) that the processor waits for before
  it marks the request COMPLETED;
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
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException

from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.edge.clients import consumer as make_consumer
from wapipe.edge.clients import producer as make_producer
from wapipe.log import get_logger
from wapipe.messages.privacy import PrivacyKind, PrivacyRequest, PrivacyStatus
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


TARGETS = "erasure_targets"  # Memory engine: the ids being erased never reach disk nor a mutation's text


class ErasureIncomplete(RuntimeError):
    """Rows of the subject are still on disk after the mutations (retried at the next poll)."""


def _all_rows(client: Any, t: str, extra: str = "", targets: str = TARGETS) -> int:
    """Rows of the loaded targets in table ``t``, masked ones included."""
    return int(client.query(f"SELECT count() FROM {t} WHERE subject_id IN (SELECT subject_id FROM {targets}){extra}"
                            " SETTINGS apply_deleted_mask = 0").result_rows[0][0])


def _rewrite(client: Any, tables: dict[str, str | None], subject_id: str,
             erased_at: dt.datetime | None = None, *, targets: str = TARGETS) -> dict[str, int]:
    """Physically delete the subject's rows from ``tables`` (table -> event-time column limiting
    the delete to rows not after ``erased_at``, or None for all rows); rows per table."""
    client.command(f"CREATE TABLE IF NOT EXISTS {targets} (subject_id String, erased_at DateTime64(3, 'UTC'))"
                   " ENGINE = Memory")
    client.command(f"TRUNCATE TABLE {targets}")
    client.command(f"INSERT INTO {targets} VALUES ({{s:String}}, {{at:DateTime64(3)}})",
                   parameters={"s": subject_id, "at": erased_at or dt.datetime.now(dt.timezone.utc)})
    deleted: dict[str, int] = {}
    try:
        for table, col in tables.items():
            t = _quote(table)
            extra = f" AND {_quote(col)} <= (SELECT any(erased_at) FROM {targets})" if col else ""
            n = _all_rows(client, t, extra, targets)
            if not n:
                continue
            client.command(f"ALTER TABLE {t} DELETE WHERE subject_id IN (SELECT subject_id FROM {targets}){extra}",
                           settings={"mutations_sync": 2})
            if _all_rows(client, t, extra, targets):  # masked by an earlier lightweight DELETE: still in the parts
                client.command(f"ALTER TABLE {t} APPLY DELETED MASK", settings={"mutations_sync": 2})
            left = _all_rows(client, t, extra, targets)
            if left:
                raise ErasureIncomplete(f"{table}: {left} rows of the subject still in its parts")
            deleted[table] = n
    finally:
        client.command(f"TRUNCATE TABLE {targets}")
    return deleted


def erase_subject(client: Any, subject_id: str, *, targets: str = TARGETS) -> dict[str, int]:
    """Delete the subject's rows from every subject table, rewriting the parts that held them;
    returns rows deleted per table."""
    return _rewrite(client, {t: None for t in subject_tables(client)}, subject_id, targets=targets)


def outdated_parts(client: Any, tables: list[str]) -> set[tuple[str, str]]:
    """(table, part) of parts no longer active but still on disk: what a mutation replaced."""
    if not tables:
        return set()
    rows = client.query("SELECT table, name FROM system.parts WHERE database = currentDatabase() AND NOT active"
                        " AND table IN {ts:Array(String)}", parameters={"ts": tables}).result_rows
    return {(r[0], r[1]) for r in rows}


@dataclass
class Draining:
    """A request whose rows are rewritten; done once the replaced parts are gone from disk."""
    rec: PrivacyRequest
    deleted: dict[str, int]
    parts: set[tuple[str, str]]
    since: float = field(default_factory=time.monotonic)


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
        self._pending: list[PrivacyRequest] = []  # read but not yet done (backpressure kept them waiting)
        self._handled: set[str] = set()  # request ids done by this worker (later progress records repeat them)
        self._draining: dict[str, Draining] = {}  # rewritten, waiting for the replaced parts to leave the disk
        self._uncommitted = False
        self._tuned: set[str] = set()
        self.confirmed: set[str] = set()  # request ids whose ClickHouse erasure this worker confirmed
        # One Memory table per erasure group: two sink deployments on one server never share it.
        self._targets = f"{TARGETS}_{hashlib.sha256(group.encode()).hexdigest()[:12]}"
        self._registry = PrivacyRegistry(settings, bootstrap, serde=self.serde).start()
        self._last_guard = 0.0

    def poll_once(self, client: Any, *, timeout: float = 0.0) -> int:
        """Handle what is waiting; returns how many requests' ClickHouse erasure completed (rows
        rewritten and the replaced parts removed from disk)."""
        done = self._confirm_removed(client)
        if running_mutations(client) >= self.s.erasure_max_running_mutations:
            log.info("erasure.backpressure", running=self.s.erasure_max_running_mutations)
            return done
        self._tune(client)
        self.guard_replays(client)
        if not self._pending:
            self._read(timeout)
        started = 0
        while self._pending:
            if started and running_mutations(client) >= self.s.erasure_max_running_mutations:
                break  # the rest next call; offsets stay uncommitted until then
            rec = self._pending[0]
            # _read queues only requests that name their subject
            deleted = erase_subject(client, rec.subject_id, targets=self._targets)  # type: ignore[arg-type]
            self._draining[rec.request_id] = Draining(rec, deleted, outdated_parts(client, sorted(deleted)))
            log.info("erasure.clickhouse_rewritten", request_id=rec.request_id, rows=sum(deleted.values()))
            self._pending.pop(0)
            self._handled.add(rec.request_id)
            started += 1
        done += self._confirm_removed(client)
        if self._uncommitted and not self._pending and not self._draining:
            self._consumer.commit(asynchronous=False)
            self._uncommitted = False
        return done

    def _read(self, timeout: float) -> None:
        try:
            msgs = self._consumer.consume(100, timeout=timeout)
        except KafkaException as exc:  # pragma: no cover
            log.warning("erasure.consume_failed", error=str(exc))
            return
        for m in msgs:
            self._uncommitted = True
            if m.error() is not None or m.value() is None:
                continue
            try:
                rec = PrivacyRequest.from_avro(self.serde.decode(m.value(), "PrivacyRequest"))
            except (SerdeError, KeyError, ValueError) as exc:
                log.error("erasure.unreadable_request", offset=m.offset(), error=f"{type(exc).__name__}: {exc}")
                continue
            if (rec.kind == PrivacyKind.ERASURE and rec.status == PrivacyStatus.IN_PROGRESS and rec.subject_id
                    and rec.steps.get("clickhouse") == "requested"
                    and rec.request_id not in self._handled
                    and all(p.request_id != rec.request_id for p in self._pending)):
                self._pending.append(rec)

    def _confirm_removed(self, client: Any) -> int:
        """Confirm every rewritten request whose replaced parts are gone from disk."""
        if not self._draining:
            return 0
        tables = sorted({t for d in self._draining.values() for t in d.deleted})
        for table in tables:  # wakes the table's cleanup now (it otherwise sleeps up to a minute when idle)
            try:
                client.command(f"SYSTEM START CLEANUP {_quote(table)}")
            except Exception as exc:  # a server that does not know it: its own schedule removes them
                log.debug("erasure.cleanup_trigger_refused", table=table, error=str(exc)[:200])
        still = outdated_parts(client, tables)
        done = 0
        for request_id, d in list(self._draining.items()):
            if d.parts & still:
                continue
            rec, deleted = d.rec, d.deleted
            self._pub.audit(audit_event(
                CLICKHOUSE_DONE, actor="system:sink", tenant_id=rec.tenant_id, subject_id=None,
                target=request_id, details={"tables": str(len(deleted)), "rows": str(sum(deleted.values())),
                                            "method": "rewritten", "replaced_parts_removed": str(len(d.parts)),
                                            "seconds_to_removal": f"{time.monotonic() - d.since:.1f}",
                                            **{f"rows.{t}": str(n) for t, n in deleted.items()}}))
            log.info("erasure.clickhouse_done", request_id=request_id, rows=sum(deleted.values()),
                     parts_removed=len(d.parts))
            del self._draining[request_id]
            self.confirmed.add(request_id)
            done += 1
        return done

    def _tune(self, client: Any) -> None:
        """Apply ``erasure_old_parts_lifetime_s`` to subject tables not seen yet."""
        n = self.s.erasure_old_parts_lifetime_s
        if n is None:
            return
        for table in subject_tables(client):
            if table not in self._tuned:
                client.command(f"ALTER TABLE {_quote(table)} MODIFY SETTING old_parts_lifetime = {int(n)},"
                               f" cleanup_delay_period = {int(n)}, cleanup_delay_period_random_add = 0")
                self._tuned.add(table)

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
        columns = event_time_columns(client)
        for table, col in columns.items():
            t = _quote(table)
            found = client.query(f"SELECT DISTINCT subject_id FROM {t} WHERE subject_id IN {{ids:Array(String)}}"
                                 " SETTINGS apply_deleted_mask = 0", parameters={"ids": sorted(erased)}).result_rows
            for (subject,) in found:
                at = dt.datetime.fromtimestamp(erased[subject] / 1000, tz=dt.timezone.utc)
                n = _rewrite(client, {table: col}, subject, at, targets=self._targets).get(table, 0)
                if not n:
                    continue
                total += n
                self._pub.audit(audit_event("privacy.erasure.replay_blocked", actor="system:sink", subject_id=None,
                                            details={"table": table, "rows": str(n)}))
                log.warning("erasure.replayed_rows_deleted", table=table, subject_id=subject, rows=n)
        return total

    def close(self) -> None:
        self._registry.close()
        self._consumer.close()
        self._producer.flush(10)
