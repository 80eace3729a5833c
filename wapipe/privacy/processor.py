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
                         (sinks/erasure.py, inside the sink) reports ``privacy.erasure.clickhouse_deleted``:
                         the rows rewritten out of their parts and the replaced parts gone from disk.

Only then is the request COMPLETED.

A record of ``wa.privacy.requests`` that cannot be read or applied becomes a DeadLetter on
``wa.privacy.dead`` (``wapipe.deadletter``: cut down when it would not fit, acked before the
registry moves past it, retried for up to 5 minutes while the broker does not answer); the requests
after it go on. The registry reads the topic from the beginning at every start, so a restart
writes that dead letter again (same source topic, partition and offset), also one that could not
be written before. Meta's data-deletion callback (a RECEIVED request with
``meta_user_id`` and no subject) names the business admin who connected an account: what we hold
of them is the tenant's link to them (``Tenant.meta_user_id``, recorded at onboarding from
``debug_token``) and the access token their login granted. Every tenant linked to that user loses
both (and is DISCONNECTED: it cannot send without a token); ``details.outcome`` says how many. An
unknown user completes at once with ``no data held``. Meta's deauthorize callback (DISCONNECT with
``meta_user_id``) disconnects the same tenants the same way (token deleted, status DISCONNECTED).
RESTRICTION / UNRESTRICTION complete at once (the registry applies them to every process).
"""

from __future__ import annotations

import time
from dataclasses import replace

from confluent_kafka import Message

from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.deadletter import DeadLetter, Source, SyncDeadLetters
from wapipe.edge.clients import producer as make_producer
from wapipe.edge.follow import TopicFollower
from wapipe.edge.scan import oldest_timestamps, roll_segments, scan
from wapipe.log import get_logger
from wapipe.messages.privacy import PrivacyKind as Kind
from wapipe.messages.privacy import PrivacyRequest
from wapipe.messages.privacy import PrivacyStatus as Status
from wapipe.messages.times import at_ms
from wapipe.privacy.kek import Kek, load_kek
from wapipe.privacy.keyring import KeyRing
from wapipe.privacy.records import CLICKHOUSE_DONE, Publisher, audit_event, now_ms
from wapipe.privacy.registry import PrivacyRegistry
from wapipe.topics import (AUDIT, PRIVACY_DEAD, PRIVACY_REQUESTS, SUBJECT_KEYS, WEBHOOK_DEAD, WEBHOOK_RAW,
                           desired_configs, spec, window_retention_ms)

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
        # its own producer: the registry's thread writes dead letters while the main thread publishes
        self._dead_producer = make_producer(bootstrap)
        self.dead_letters = SyncDeadLetters(self.serde, PRIVACY_DEAD, self._dead_producer,
                                            settings.dead_letter_max_bytes, timeout=300.0)
        self.registry = PrivacyRegistry(settings, bootstrap, serde=self.serde, on_unreadable=self._unreadable)
        self._producer = make_producer(bootstrap)
        self.pub = Publisher(self._producer, self.serde)
        # The ClickHouse confirmations are read from the start of wa.audit on every start (nothing
        # committed): a confirmation read just before a crash is never lost.
        self._audit = TopicFollower(bootstrap, AUDIT, self._on_audit, name=f"{group}-audit")
        self._check_interval = settings.privacy_check_interval_s if check_interval_s is None else check_interval_s
        self._last_check: dict[str, float] = {}
        self._last_roll = 0.0
        self._clickhouse_done: dict[str, dict[str, str]] = {}
        self._overdue: set[str] = set()
        self._tick_cache: dict[str, object] = {}
        self._tenants = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> "PrivacyProcessor":
        self.keyring.start()
        self.registry.start()
        self._audit.start(wait_for_topics=True)  # read as it comes: no request waits for the whole trail
        self.keyring.wait_ready(60)
        self.registry.wait_ready(60)
        return self

    def close(self) -> None:
        for c in (self.keyring, self.registry):
            c.close()
        if self._tenants is not None:
            self._tenants.close()
        self._audit.close()
        self._producer.flush(10)
        self._dead_producer.flush(10)

    def _unreadable(self, m, reason: str, error_type: str) -> None:
        """A record of wa.privacy.requests the registry cannot read: dead-lettered, acked."""
        self.dead_letters.write(DeadLetter(Source.of_kafka(m), reason[:2000], error_type), key=m.topic().encode())

    def run(self, stop) -> None:
        """Until ``stop.is_set()``: one pass over open requests every ``check_interval``."""
        while not stop.is_set():
            self.tick()
            stop.wait(min(self._check_interval, 1.0))

    # --- one pass --------------------------------------------------------------------------
    def tick(self) -> int:
        """Advance every open request once; returns how many are still open."""
        self.expire_requests()
        self._tick_cache: dict[str, object] = {}  # one scan per tick, shared by every open request
        open_ = 0
        for rec in sorted(self.registry.requests(), key=lambda r: r.requested_at):
            if rec.final:
                continue
            try:
                rec = self.advance(rec)
            except Exception as exc:  # keep the other requests moving; retried next pass
                log.error("privacy.advance_failed", request_id=rec.request_id, error=f"{type(exc).__name__}: {exc}")
            if not rec.final:
                open_ += 1
        return open_

    def _on_audit(self, m: Message) -> None:
        """A record of wa.audit (the follower's thread): the sink's ClickHouse confirmations are kept."""
        if m.value() is None:
            return
        try:
            ev = self.serde.decode(m.value(), "AuditEvent")
        except SerdeError:
            return  # not an AuditEvent: nothing of ours to confirm
        if ev["action"] == CLICKHOUSE_DONE and ev.get("target"):
            self._clickhouse_done[ev["target"]] = dict(ev.get("details") or {})

    # --- state machine -------------------------------------------------------------------------
    def _save(self, rec: PrivacyRequest, *, status: Status | None = None, details: dict[str, str] | None = None,
              **steps: str) -> PrivacyRequest:
        """The request's next state (``details`` added to its details, ``steps`` to its steps),
        published and remembered."""
        rec = replace(rec, status=status or rec.status, steps={**rec.steps, **steps}, updated_at=at_ms(now_ms()),
                      details={**rec.details, **details} if details else rec.details)
        self.pub.request(rec)
        self.registry.remember(rec)  # read-your-writes before the follower sees it
        return rec

    def _audit_step(self, rec: PrivacyRequest, action: str, outcome: str = "ok", **details: str) -> None:
        # No subject id: the target (request id) links the event to its request, and the audit trail
        # (Kafka, ClickHouse audit_log) then holds nothing that outlives an erasure and points at the person.
        self.pub.audit(audit_event(action, actor=ACTOR, tenant_id=rec.tenant_id, subject_id=None,
                                   target=rec.request_id, outcome=outcome,
                                   details={"kind": str(rec.kind), "confirmation_code": rec.confirmation_code,
                                            **details}))

    def advance(self, rec: PrivacyRequest) -> PrivacyRequest:
        kind = rec.kind
        if kind == Kind.ERASURE:
            return self._erasure(rec)
        if kind in (Kind.RESTRICTION, Kind.UNRESTRICTION, Kind.CORRECTION):
            if not rec.subject_id:
                return self._reject(rec, "no subject")
            rec = self._save(rec, status=Status.COMPLETED, registry=DONE)
            self._audit_step(rec, f"privacy.{kind.lower()}.completed")
            return rec
        if kind == Kind.DISCONNECT and rec.status == Status.RECEIVED:
            if not rec.meta_user_id:
                return self._reject(rec, "no Meta user")
            return self._meta_user(rec, "privacy.disconnect")
        return rec  # ACCESS / CORRECTION are served synchronously (CLI, API)

    def expire_requests(self) -> int:
        """Delete final requests older than ``privacy_request_retention_ms`` from wa.privacy.requests
        (a tombstone: the compaction removes the record, and the tombstone after
        ``delete.retention.ms``), so subject ids, Meta user ids and confirmation codes are not kept
        for ever. A restriction of a person still restricted stays (it is what keeps them so)."""
        n = self._unlink_erased()
        cutoff = now_ms() - self.s.privacy_request_retention_ms
        for rec in self.registry.requests():
            if not rec.final or rec.updated_ms > cutoff:
                continue
            if rec.kind == Kind.RESTRICTION and rec.subject_id and self.registry.is_restricted(rec.subject_id):
                continue
            self.pub.send(PRIVACY_REQUESTS, rec.request_id.encode(), None)
            self.registry.forget(rec.request_id)
            self.pub.audit(audit_event("privacy.request.expired", actor=ACTOR, tenant_id=rec.tenant_id,
                                       target=rec.request_id, details={"kind": str(rec.kind)}))
            n += 1
        if n:
            log.info("privacy.requests_expired", count=n)
        return n

    @property
    def replay_window_ms(self) -> int:
        """How long a record of an erased subject can still be on Kafka (and so be replayed): the
        longest retention of a topic that carries subject ids (the ledger: dedup window + a day)."""
        return max(self.s.retention_ms, self.s.raw_webhook_retention_ms,
                   window_retention_ms(self.s.send_dedup_window_s))

    def _unlink_erased(self) -> int:
        """Once nothing replayable of an erased subject is left on Kafka (``replay_window_ms`` after
        the request), the requests stop naming them: the ERASURE record is rewritten without the
        subject id, and their other final requests from before it (ACCESS, CORRECTION,
        UNRESTRICTION) are deleted. A RESTRICTION stays (it is what keeps the person restricted)."""
        before = now_ms() - self.replay_window_ms
        done = 0
        for rec in self.registry.requests():
            if not (rec.kind == Kind.ERASURE and rec.status == Status.COMPLETED and rec.subject_id
                    and rec.requested_ms < before):
                continue
            subject, at = rec.subject_id, rec.requested_ms
            for other in self.registry.requests():
                if (other.subject_id == subject and other.request_id != rec.request_id
                        and other.kind in (Kind.ACCESS, Kind.CORRECTION, Kind.UNRESTRICTION) and other.final
                        and other.requested_ms <= at):
                    self.pub.send(PRIVACY_REQUESTS, other.request_id.encode(), None)
                    self.registry.forget(other.request_id)
                    done += 1
            self._save(replace(rec, subject_id=None),
                       details={"subject_id": "removed: nothing of the subject is left to replay"})
            self.pub.audit(audit_event("privacy.erasure.unlinked", actor=ACTOR, tenant_id=rec.tenant_id,
                                       target=rec.request_id, details={"kind": str(Kind.ERASURE)}))
            done += 1
        return done

    def _reject(self, rec: PrivacyRequest, reason: str) -> PrivacyRequest:
        rec = self._save(rec, details={"reason": reason}, status=Status.REJECTED)
        self._audit_step(rec, f"privacy.{rec.kind.lower()}.rejected", outcome="rejected", reason=reason)
        return rec

    @property
    def tenants(self):
        """The tenants area's service (its registry follows wa.tenants), made on first use."""
        if self._tenants is None:
            from wapipe.tenants.service import TenantService

            self._tenants = TenantService(self.s, self.bootstrap, actor=ACTOR)
            self._tenants.registry.wait_ready(60)
        return self._tenants

    def tenants_for_meta_user(self, meta_user_id: str) -> list:
        """Tenants connected by this app-scoped Meta user that still hold their token or id."""
        return sorted((t for t in self.tenants.registry.tenants()
                       if t.meta_user_id == meta_user_id and (t.token is not None or t.meta_user_id)),
                      key=lambda t: t.tenant_id)

    def _meta_user(self, rec: PrivacyRequest, prefix: str) -> PrivacyRequest:
        """Meta's deletion or deauthorize callback: the user's token and id leave every tenant they
        connected, which is disconnected (a tenant without a token cannot send)."""
        from wapipe.tenants.models import TenantStatus

        self._audit_step(rec, f"{prefix}.started")
        linked = self.tenants_for_meta_user(rec.meta_user_id or "")
        for t in linked:
            self.tenants.save(t.evolve(status=TenantStatus.DISCONNECTED, token=None, meta_user_id=None),
                              "tenant.disconnected", details={"reason": rec.source, "request_id": rec.request_id,
                                                              "token": "deleted", "meta_user_id": "deleted"})
        outcome = (f"token and Meta user id deleted from {len(linked)} tenant(s), now disconnected"
                   if linked else "no data held")
        rec = self._save(rec, details={"outcome": outcome, "tenants": str(len(linked))},
                         status=Status.COMPLETED, tenants=DONE)
        self._audit_step(rec, f"{prefix}.completed", outcome="ok" if linked else "no_data_held", tenants=str(len(linked)))
        return rec

    def _erasure(self, rec: PrivacyRequest) -> PrivacyRequest:
        steps = rec.steps
        if rec.status == Status.RECEIVED:
            self._audit_step(rec, "privacy.erasure.started")
            if not rec.subject_id:
                if rec.meta_user_id:
                    return self._meta_user(rec, "privacy.erasure")
                return self._reject(rec, "no subject")
            owners = self.keyring.tenants_of(rec.subject_id)
            if owners and rec.tenant_id not in owners:
                # Only a tenant's own subject is erased: a request naming another tenant's pseudonym
                # (written before the API checked ownership, or by hand) changes nothing.
                return self._reject(rec, "no such subject in this tenant")
            rec = self._save(rec, status=Status.IN_PROGRESS)
        subject = rec.subject_id
        if not subject:  # an erasure under way always names its subject (rejected above otherwise)
            return self._reject(rec, "no subject")
        if steps.get("kafka_keys") != DONE:
            n = self.keyring.erase(subject)
            rec = self._save(rec, kafka_keys=DONE, kafka_compaction="waiting", raw_webhooks="waiting",
                             clickhouse="requested")
            self._audit_step(rec, "privacy.erasure.kafka_keys_tombstoned", keys=str(n))
            self._audit_step(rec, "privacy.erasure.clickhouse_requested")
            steps = rec.steps

        now = time.monotonic()
        if now - self._last_check.get(rec.request_id, 0.0) < self._check_interval:
            return rec
        self._last_check[rec.request_id] = now

        if steps.get("kafka_compaction") != DONE:
            held = self._key_copies(subject)
            if held == 0:
                rec = self._save(rec, kafka_compaction=DONE)
                self._audit_step(rec, "privacy.erasure.kafka_compacted")
            else:
                self._maybe_roll()
        if steps.get("raw_webhooks") != DONE and self._raw_expired(rec.requested_ms):
            rec = self._save(rec, raw_webhooks=DONE)
            self._audit_step(rec, "privacy.erasure.raw_webhooks_expired")
        if steps.get("clickhouse") != DONE and rec.request_id in self._clickhouse_done:
            ch = self._clickhouse_done[rec.request_id]
            # The sink confirms only once the rows are rewritten out of the parts and the replaced
            # parts are gone from disk (sinks/erasure.py); the request's details say so.
            said = (f"{ch.get('rows', '0')} rows rewritten out of their parts; "
                    f"{ch.get('replaced_parts_removed', '0')} replaced parts removed from disk"
                    if ch.get("method") == "rewritten" else "rows deleted")
            rec = self._save(rec, details={"clickhouse": said}, clickhouse=DONE)
            self._audit_step(rec, "privacy.erasure.clickhouse_confirmed", **ch)

        steps = rec.steps
        if all(steps.get(k) == DONE for k in ("kafka_keys", "kafka_compaction", "raw_webhooks", "clickhouse")):
            rec = self._save(rec, status=Status.COMPLETED)
            self._audit_step(rec, "privacy.erasure.completed",
                             seconds=f"{(now_ms() - rec.requested_ms) / 1000:.1f}")
            log.info("privacy.erasure_completed", request_id=rec.request_id)
        elif now_ms() - rec.requested_ms > self.deadline_ms and rec.request_id not in self._overdue:
            self._overdue.add(rec.request_id)
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
            for m in scan(self.bootstrap, SUBJECT_KEYS, missing_ok=True):
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
            oldest = [ts for topic in RAW_TOPICS
                      for ts in oldest_timestamps(self.bootstrap, topic, missing_ok=True).values() if ts is not None]
            self._tick_cache["raw"] = min(oldest) if oldest else None
        oldest_held = self._tick_cache["raw"]
        return oldest_held is None or oldest_held > requested_at_ms  # type: ignore[operator]
