"""Every privacy request, followed from ``wa.privacy.requests`` (compacted by request id).

Answers what other processes must consult:

* ``is_restricted(subject_id)`` — the subject's latest RESTRICTION / UNRESTRICTION request (by
  ``requested_at``) is a restriction: sends are refused, inbound content is not stored.
* ``erased_at(subject_id)`` — when an erasure of the subject was requested. Replays and
  dead-letter backfills drop a record of the subject that is older than this, so an erased
  subject is never brought back (``is_erased_record``).
* ``corrections(subject_id)`` — corrected personal fields (sealed with the subject's key, so an
  erasure shreds them too); readers overlay them on what they open (``export.apply_corrections``).
* ``by_code(code)`` / ``get(request_id)`` — request status for the CLI and the API.
* ``tenants_of(subject_id)`` — the tenants whose checked requests (``records.SUBJECT_CHECKED``)
  named the subject: with ``KeyRing.tenants_of``, which subject ids a tenant may name.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable

from confluent_kafka import Message

from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.edge.follow import TopicFollower
from wapipe.log import get_logger
from wapipe.messages.privacy import PrivacyKind, PrivacyRequest, PrivacyStatus
from wapipe.privacy.errors import PrivacyError
from wapipe.privacy.records import SUBJECT_CHECKED
from wapipe.topics import PRIVACY_REQUESTS

log = get_logger(__name__)


def sealed_to_detail(sealed: dict) -> str:
    """A Sealed dict as a string for ``PrivacyRequest.details`` (a string map)."""
    return json.dumps({"key_id": sealed["key_id"], "nonce": base64.b64encode(sealed["nonce"]).decode(),
                       "ciphertext": base64.b64encode(sealed["ciphertext"]).decode()})


def _sealed_from(detail: str | None) -> dict | None:
    if not detail:
        return None
    try:
        d = json.loads(detail)
        return {"key_id": d["key_id"], "nonce": base64.b64decode(d["nonce"]), "ciphertext": base64.b64decode(d["ciphertext"])}
    except (ValueError, KeyError, TypeError):
        return None


class PrivacyRegistry:
    def __init__(self, settings: Settings, bootstrap: str, *, serde: AvroSerde | None = None,
                 on_unreadable: Callable[[Message, str, str], None] | None = None) -> None:
        """``on_unreadable(message, reason, error_type)``: a record that cannot be read or applied
        (the privacy processor dead-letters it; other processes log it)."""
        self._serde = serde or AvroSerde.from_settings(settings)
        self._on_unreadable = on_unreadable
        self._lock = threading.Lock()
        self._requests: dict[str, PrivacyRequest] = {}
        self._by_code: dict[str, str] = {}
        self._restriction: dict[str, tuple[int, bool]] = {}  # subject -> (requested_at, restricted)
        self._erased: dict[str, int] = {}  # subject -> earliest erasure requested_at (ms)
        self._erased_done: dict[str, int] = {}  # the same, for erasures whose ClickHouse step is done
        self._corrections: dict[str, dict[str, tuple[int, dict]]] = {}  # subject -> field -> (at, Sealed)
        self._owners: dict[str, set[str]] = {}  # subject -> tenants whose checked requests named it
        self._follower = TopicFollower(bootstrap, PRIVACY_REQUESTS, self._apply, name="privacy-registry",
                                       error=PrivacyError)

    def start(self) -> "PrivacyRegistry":
        self._follower.start()
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        self._follower.wait_ready(timeout)
        return True

    def close(self) -> None:
        self._follower.close()

    def __enter__(self) -> "PrivacyRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _apply(self, m: Message) -> None:
        key = (m.key() or b"").decode()
        if m.value() is None:
            self.forget(key)
            return
        try:
            self.remember(PrivacyRequest.from_avro(self._serde.decode(m.value(), "PrivacyRequest")))
        except Exception as exc:  # one bad record never stops the registry
            reason = str(exc) if isinstance(exc, SerdeError) else f"{type(exc).__name__}: {exc}"
            log.error("privacy_registry.unreadable", offset=m.offset(), error=reason[:300])
            if self._on_unreadable is not None:
                self._on_unreadable(m, reason, type(exc).__name__)

    def remember(self, rec: PrivacyRequest) -> None:
        """Apply a request record (from the topic, or one this process just wrote)."""
        subject, kind, status = rec.subject_id, rec.kind, rec.status
        at = rec.requested_ms
        with self._lock:
            self._requests[rec.request_id] = rec
            self._by_code[rec.confirmation_code] = rec.request_id
            if subject and rec.tenant_id and rec.details.get(SUBJECT_CHECKED):
                self._owners.setdefault(subject, set()).add(rec.tenant_id)
            if not subject or status in (PrivacyStatus.REJECTED, PrivacyStatus.FAILED):
                return
            if kind in (PrivacyKind.RESTRICTION, PrivacyKind.UNRESTRICTION):
                prev = self._restriction.get(subject)
                if prev is None or prev[0] <= at:
                    self._restriction[subject] = (at, kind == PrivacyKind.RESTRICTION)
            elif kind == PrivacyKind.ERASURE:
                self._erased[subject] = min(at, self._erased.get(subject, at))
                if status == PrivacyStatus.COMPLETED or rec.steps.get("clickhouse") == "done":
                    self._erased_done[subject] = min(at, self._erased_done.get(subject, at))
            elif kind == PrivacyKind.CORRECTION:
                details = rec.details
                sealed = _sealed_from(details.get("sealed"))
                field = details.get("field")
                if sealed and field:
                    prev = self._corrections.setdefault(subject, {}).get(field)
                    if prev is None or prev[0] <= at:
                        self._corrections[subject][field] = (at, sealed)

    def forget(self, request_id: str) -> None:
        """A request deleted from the topic (its retention ended): no longer answered for."""
        with self._lock:
            rec = self._requests.pop(request_id, None)
            if rec is not None and self._by_code.get(rec.confirmation_code) == request_id:
                del self._by_code[rec.confirmation_code]

    # --- questions ---------------------------------------------------------------------------
    def is_restricted(self, *ids: str) -> bool:
        """``is_restricted(subject_id)`` or ``is_restricted(tenant_id, subject_id)``."""
        if not ids:
            raise TypeError("is_restricted needs a subject id")
        with self._lock:
            entry = self._restriction.get(ids[-1])
        return bool(entry and entry[1])

    def tenants_of(self, subject_id: str) -> set[str]:
        with self._lock:
            return set(self._owners.get(subject_id, ()))

    def erased_at(self, subject_id: str) -> int | None:
        with self._lock:
            return self._erased.get(subject_id)

    def is_erased_record(self, subject_id: str | None, record_time_ms: int) -> bool:
        """A record about ``subject_id`` made before its erasure request: never replay it."""
        if not subject_id:
            return False
        at = self.erased_at(subject_id)
        return at is not None and record_time_ms <= at

    def corrections(self, subject_id: str) -> list[tuple[str, dict]]:
        """(field, Sealed {"value": corrected}) — the latest correction of each field."""
        with self._lock:
            return [(f, sealed) for f, (_, sealed) in self._corrections.get(subject_id, {}).items()]

    def erasures(self, *, clickhouse_done: bool = False) -> dict[str, int]:
        """Subject -> when its (first) erasure was requested, ms (only those past the ClickHouse step)."""
        with self._lock:
            return dict(self._erased_done if clickhouse_done else self._erased)

    # The requests answered are the records remembered, shared: values, never changed in place
    # (``dataclasses.replace`` makes the next state; the processor publishes and remembers it).
    def get(self, request_id: str) -> PrivacyRequest | None:
        with self._lock:
            return self._requests.get(request_id)

    def by_code(self, code: str) -> PrivacyRequest | None:
        with self._lock:
            rid = self._by_code.get(code)
            return self._requests.get(rid) if rid else None

    def requests(self) -> list[PrivacyRequest]:
        with self._lock:
            return list(self._requests.values())
