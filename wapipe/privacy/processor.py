"""The privacy request processor (``wapipe privacy run``): drives every request on
``wa.privacy.requests`` to a final status, writing each step to the request record and to ``wa.audit``.

ERASURE, step by step (each step is a key of ``PrivacyRequest.steps`` and an AuditEvent):

1. ``kafka_keys``        every data key of the subject tombstoned on ``wa.subject.keys`` (KeyRing.erase):
                         from now on no process can open the subject's sealed fields.
2. ``kafka_compaction``  the compacted topic no longer holds any copy of those keys. The processor
                         rolls the active segment (a no-op record per partition, at most every
                         ``segment.ms``) so the cleaner compacts within ``max.compaction.lag.ms``,
                         then reads the topic from the beginning to verify.
3. ``raw_webhooks``      cleartext raw webhooks (``wa.webhook.raw``, ``wa.webhook.dead``) received
                         before the request have expired: the oldest record still held is newer
                         than the request (retention ``raw_webhook_retention_ms``).
4. ``clickhouse``        ``requested`` by this processor; ``done`` when the ClickHouse erasure
                         (sinks/erasure.py, inside the sink) reports ``privacy.erasure.clickhouse_deleted``.

Only then is the request COMPLETED. Meta's data-deletion callback (a RECEIVED request with
``meta_user_id`` and no subject) takes the same path for every subject linked to that Meta user;
an unknown user completes at once with ``no data held``.
RESTRICTION / UNRESTRICTION complete at once (the registry applies them to every process).
DISCONNECT requests belong to the tenants area and are left to it.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import KafkaException

from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.kafka import consumer as make_consumer
from wapipe.kafka import producer as make_producer
from wapipe.log import get_logger
from wapipe.privacy.kek import Kek, load_kek
from wapipe.privacy.keyring import KeyRing
from wapipe.privacy.records import CLICKHOUSE_DONE, FINAL, Publisher, audit_event, ms, now_ms
from wapipe.privacy.registry import PrivacyRegistry
from wapipe.privacy.topicscan import oldest_timestamps, roll_segments, scan
from wapipe.topics import AUDIT, SUBJECT_KEYS, WEBHOOK_DEAD, WEBHOOK_RAW, desired_configs, spec

log = get_logger(__name__)

ACTOR = "system:privacy"
RAW_TOPICS = (WEBHOOK_RAW, WEBHOOK_DEAD)
DONE = "done"


class PrivacyProcessor:
    def __init__(self, settings: Settings, bootstrap: str, *, kek: Kek | None = None,
                 group: str = "wapipe-privacy-processor", check_interval_s: float | None = None) -> None:
        self.s = settings
        self.bootstrap = bootstrap
        self.serde = AvroSerde.from_settings(settings)
        self.kek = kek or load_kek(settings)
        self.keyring = KeyRing(settings, bootstrap, self.kek, serde=self.serde)
        self.registry = PrivacyRegistry(settings, bootstrap, serde=self.serde)
        self._producer = make_producer(bootstrap)
        self.pub = Publisher(self._producer, self.serde)
        # The ClickHouse confirmations are read from the start of wa.audit on every start (a fresh
        # group, offsets never committed): a confirmation read just before a crash is never lost.
        self._audit = make_consumer(bootstrap, f"{group}-audit-{uuid.uuid4().hex}")
        self._check_interval = settings.privacy_check_interval_s if check_interval_s is None else check_interval_s
        self._last_check: dict[str, float] = {}
        self._last_roll = 0.0
        self._clickhouse_done: dict[str, dict[str, str]] = {}
        self._overdue: set[str] = set()
        self._tick_cache: dict[str, object] = {}

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> "PrivacyProcessor":
        self.keyring.start()
        self.registry.start()
        self._audit.subscribe([AUDIT])
        self.keyring.wait_ready(60)
        self.registry.wait_ready(60)
        return self

    def close(self) -> None:
        for c in (self.keyring, self.registry):
            c.close()
        self._audit.close()
        self._producer.flush(10)

    def run(self, stop) -> None:
        """Until ``stop.is_set()``: one pass over open requests every ``check_interval``."""
        while not stop.is_set():
            self.tick()
            stop.wait(min(self._check_interval, 1.0))

    # --- one pass --------------------------------------------------------------------------
    def tick(self) -> int:
        """Advance every open request once; returns how many are still open."""
        self._read_audit()
        self._tick_cache: dict[str, object] = {}  # one scan per tick, shared by every open request
        open_ = 0
        for rec in sorted(self.registry.requests(), key=lambda r: ms(r["requested_at"])):
            if rec["status"] in FINAL:
                continue
            try:
                rec = self.advance(rec)
            except Exception as exc:  # keep the other requests moving; retried next pass
                log.error("privacy.advance_failed", request_id=rec["request_id"], error=f"{type(exc).__name__}: {exc}")
            if rec["status"] not in FINAL:
                open_ += 1
        return open_

    def _read_audit(self) -> None:
        try:
            msgs = self._audit.consume(500, timeout=0.1)
        except KafkaException as exc:  # pragma: no cover
            log.warning("privacy.audit_read_failed", error=str(exc))
            return
        for m in msgs:
            if m.error() is not None or m.value() is None:
                continue
            try:
                ev = self.serde.decode(m.value(), "AuditEvent")
            except SerdeError:
                continue
            if ev["action"] == CLICKHOUSE_DONE and ev.get("target"):
                self._clickhouse_done[ev["target"]] = dict(ev.get("details") or {})

    # --- state machine -------------------------------------------------------------------------
    def _save(self, rec: dict, *, status: str | None = None, **steps: str) -> dict:
        rec = {**rec, "steps": {**(rec.get("steps") or {}), **steps}, "updated_at": now_ms(),
               "requested_at": ms(rec["requested_at"])}
        if status:
            rec["status"] = status
        self.pub.request(rec)
        self.registry.remember(rec)  # read-your-writes before the follower sees it
        return rec

    def _audit_step(self, rec: dict, action: str, outcome: str = "ok", **details: str) -> None:
        self.pub.audit(audit_event(action, actor=ACTOR, tenant_id=rec.get("tenant_id"), subject_id=rec.get("subject_id"),
                                   target=rec["request_id"], outcome=outcome,
                                   details={"kind": rec["kind"], "confirmation_code": rec["confirmation_code"], **details}))

    def advance(self, rec: dict) -> dict:
        kind = rec["kind"]
        if kind == "ERASURE":
            return self._erasure(rec)
        if kind in ("RESTRICTION", "UNRESTRICTION", "CORRECTION"):
            if not rec.get("subject_id"):
                return self._reject(rec, "no subject")
            rec = self._save(rec, status="COMPLETED", registry=DONE)
            self._audit_step(rec, f"privacy.{kind.lower()}.completed")
            return rec
        return rec  # ACCESS / CORRECTION are served synchronously (CLI, API); DISCONNECT: tenants area

    def _reject(self, rec: dict, reason: str) -> dict:
        rec = self._save({**rec, "details": {**rec.get("details", {}), "reason": reason}}, status="REJECTED")
        self._audit_step(rec, f"privacy.{rec['kind'].lower()}.rejected", outcome="rejected", reason=reason)
        return rec

    def subjects_for_meta_user(self, meta_user_id: str) -> list[tuple[str, str]]:
        """(tenant_id, subject_id) pairs linked to an app-scoped Meta user id. The tenants'
        onboarding data holds none today (the Meta user is the business admin who connected, not a
        WhatsApp user we message), so this is empty: the request completes with "no data held"."""
        return []

    def _erasure(self, rec: dict) -> dict:
        steps = rec.get("steps") or {}
        if rec["status"] == "RECEIVED":
            self._audit_step(rec, "privacy.erasure.started")
            if not rec.get("subject_id"):
                if rec.get("meta_user_id"):
                    linked = self.subjects_for_meta_user(rec["meta_user_id"])
                    if not linked:
                        rec = self._save({**rec, "details": {**rec.get("details", {}), "outcome": "no data held"}},
                                         status="COMPLETED", subjects="none")
                        self._audit_step(rec, "privacy.erasure.completed", outcome="no_data_held")
                        return rec
                    for tenant_id, subject in linked:  # one child request per subject, same flow
                        child = {**rec, "request_id": f"{rec['request_id']}-{subject[:8]}", "tenant_id": tenant_id,
                                 "subject_id": subject, "meta_user_id": None, "steps": {}}
                        self._save(child)
                    return self._save(rec, status="COMPLETED", subjects=str(len(linked)))
                return self._reject(rec, "no subject")
            owners = self.keyring.tenants_of(rec["subject_id"])
            if owners and rec.get("tenant_id") not in owners:
                # Only a tenant's own subject is erased: a request naming another tenant's pseudonym
                # (written before the API checked ownership, or by hand) changes nothing.
                return self._reject(rec, "no such subject in this tenant")
            rec = self._save(rec, status="IN_PROGRESS")
        if steps.get("kafka_keys") != DONE:
            n = self.keyring.erase(rec["subject_id"])
            rec = self._save(rec, kafka_keys=DONE, kafka_compaction="waiting", raw_webhooks="waiting",
                             clickhouse="requested")
            self._audit_step(rec, "privacy.erasure.kafka_keys_tombstoned", keys=str(n))
            self._audit_step(rec, "privacy.erasure.clickhouse_requested")
            steps = rec["steps"]

        now = time.monotonic()
        if now - self._last_check.get(rec["request_id"], 0.0) < self._check_interval:
            return rec
        self._last_check[rec["request_id"]] = now

        if steps.get("kafka_compaction") != DONE:
            held = self._key_copies(rec["subject_id"])
            if held == 0:
                rec = self._save(rec, kafka_compaction=DONE)
                self._audit_step(rec, "privacy.erasure.kafka_compacted")
            else:
                self._maybe_roll()
        if steps.get("raw_webhooks") != DONE and self._raw_expired(ms(rec["requested_at"])):
            rec = self._save(rec, raw_webhooks=DONE)
            self._audit_step(rec, "privacy.erasure.raw_webhooks_expired")
        if steps.get("clickhouse") != DONE and rec["request_id"] in self._clickhouse_done:
            rec = self._save(rec, clickhouse=DONE)
            self._audit_step(rec, "privacy.erasure.clickhouse_confirmed", **self._clickhouse_done[rec["request_id"]])

        steps = rec["steps"]
        if all(steps.get(k) == DONE for k in ("kafka_keys", "kafka_compaction", "raw_webhooks", "clickhouse")):
            rec = self._save(rec, status="COMPLETED")
            self._audit_step(rec, "privacy.erasure.completed",
                             seconds=f"{(now_ms() - ms(rec['requested_at'])) / 1000:.1f}")
            log.info("privacy.erasure_completed", request_id=rec["request_id"])
        elif now_ms() - ms(rec["requested_at"]) > self.deadline_ms and rec["request_id"] not in self._overdue:
            self._overdue.add(rec["request_id"])
            self._audit_step(rec, "privacy.erasure.overdue", outcome="late",
                             pending=",".join(k for k, v in steps.items() if v != DONE))
        return rec

    @property
    def deadline_ms(self) -> int:
        """When an erasure should be complete: compaction lag, raw retention plus a segment roll."""
        return max(self.s.erasure_deadline_ms, self.s.raw_webhook_retention_ms + self._raw_segment_ms) + 60_000

    @property
    def _raw_segment_ms(self) -> int:
        return int(desired_configs(spec(WEBHOOK_RAW), self.s).get("segment.ms", self.s.raw_webhook_retention_ms))

    def _key_copies(self, subject_id: str) -> int:
        """How many records on wa.subject.keys still hold a key of the subject (superseded ones too)."""
        if "keys" not in self._tick_cache:
            held: dict[str, int] = {}
            for m in scan(self.bootstrap, SUBJECT_KEYS):
                if m.value() and m.key() and b"/" in m.key():
                    subj = m.key().split(b"/", 1)[0].decode()
                    held[subj] = held.get(subj, 0) + 1
            self._tick_cache["keys"] = held
        return self._tick_cache["keys"].get(subject_id, 0)  # type: ignore[union-attr]

    def _maybe_roll(self) -> None:
        segment_ms = int(desired_configs(spec(SUBJECT_KEYS), self.s)["segment.ms"])
        if (time.monotonic() - self._last_roll) * 1000 >= segment_ms:
            self._last_roll = time.monotonic()
            roll_segments(self._producer, self.bootstrap, SUBJECT_KEYS)

    def _raw_expired(self, requested_at_ms: int) -> bool:
        """Every raw (cleartext) record received up to the request has expired."""
        if "raw" not in self._tick_cache:
            oldest = [ts for topic in RAW_TOPICS for ts in oldest_timestamps(self.bootstrap, topic).values() if ts is not None]
            self._tick_cache["raw"] = min(oldest) if oldest else None
        oldest_held = self._tick_cache["raw"]
        return oldest_held is None or oldest_held > requested_at_ms  # type: ignore[operator]
