"""Per-subject data keys on the compacted topic ``wa.subject.keys`` (crypto-shredding).

Every process that seals or opens personal data holds a ``KeyRing``: a background thread reads
``wa.subject.keys`` from the beginning and keeps the unwrapped data keys in memory. Sealing for a
subject without a key creates one (32 random bytes), wraps it with the KEK (AES-256-GCM, AAD = the
topic key) and publishes it with acks before the first ciphertext can exist.

* Topic key (= ``Sealed.key_id``): ``<subject_id>/<key_id>``. Two processes creating a key for the
  same new subject at once publish two different topic keys: neither clobbers the other, and both
  keys stay valid until the subject is erased.
* Payload: AES-256-GCM over the UTF-8 JSON of the personal fields, AAD = key_id, so a ciphertext
  cannot be re-labelled as another subject's.
* Erasure: a tombstone for every key of the subject (the ring keeps an index subject -> keys).
  Every ring drops the key when it reads the tombstone; once the cleaner has compacted the topic
  (bounded by ``max.compaction.lag.ms``) no copy of the key exists anywhere, so no copy of the
  subject's data on any topic can be opened again.

Thread-safe and synchronous: call it from threads or wrap calls in ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from collections.abc import Callable

import orjson
from confluent_kafka import Message
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.edge.clients import producer as make_producer
from wapipe.edge.follow import TopicFollower
from wapipe.log import get_logger
from wapipe.privacy.errors import PrivacyError, SubjectErased, UnsealError
from wapipe.privacy.kek import KEK_PREFIX, KEY_BYTES, NONCE_BYTES, Kek
from wapipe.topics import SUBJECT_KEYS

log = get_logger(__name__)


def topic_key(subject_id: str, key_id: str) -> str:
    return f"{subject_id}/{key_id}"


def split_key(key: str) -> tuple[str, str] | None:
    subject, sep, kid = key.partition("/")
    return (subject, kid) if sep and subject and kid else None


def _json(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


class KeyRing:
    def __init__(self, settings: Settings, bootstrap: str, kek: Kek, *, serde: AvroSerde | None = None,
                 topic: str = SUBJECT_KEYS, catch_up_timeout: float = 10.0) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self._kek = kek
        self._serde = serde or AvroSerde.from_settings(settings)
        self._topic = topic
        self._catch_up_timeout = catch_up_timeout
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._keys: dict[str, bytes] = {}  # topic key -> data key
        self._by_subject: dict[str, set[str]] = {}  # subject -> live topic keys
        # subject -> the tenant(s) its keys were created for (SubjectKey.tenant_id). Kept after an
        # erasure: which tenant a pseudonym belongs to is what scopes every lookup (tenants_of).
        self._owners: dict[str, set[str]] = {}
        self._dead: set[str] = set()  # topic keys seen tombstoned
        # AES-GCM objects by key id and data key (built once per key, not per unseal; a key that
        # dies is refused by _data_key before its cached object is looked at)
        self._aeads: dict[tuple[str, bytes], AESGCM] = {}
        self._on_erase: list[Callable[[str], None]] = []
        self._follower = TopicFollower(bootstrap, topic, self._on_record, name="keyring", error=PrivacyError)
        self._producer = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> "KeyRing":
        if self._producer is not None:
            return self
        self._follower.start()  # the whole topic, from the beginning, in its thread (wapipe.edge.follow)
        # Each key is published alone and waited for (_publish): lingering for a batch only adds
        # its 5 ms to every new subject (bench/normalise.py: a webhook per new subject).
        self._producer = make_producer(self._bootstrap, **{"linger.ms": 0})
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every key published before this call has been read."""
        self._catch_up(timeout)

    def close(self) -> None:
        self._follower.close()
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None

    def __enter__(self) -> "KeyRing":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def on_erase(self, callback: Callable[[str], None]) -> None:
        """``callback(subject_id)`` whenever a tombstone drops the last key of a subject."""
        self._on_erase.append(callback)

    # --- the follower's thread -------------------------------------------------------------
    def _on_record(self, m: Message) -> None:
        with self._lock:
            gone = self._apply(m.key(), m.value())
        if gone:
            for cb in self._on_erase:
                try:
                    cb(gone)
                except Exception as exc:  # a listener's bug must not stop key updates
                    log.error("keyring.on_erase_failed", error=str(exc))

    def _apply(self, raw_key: bytes | None, value: bytes | None) -> str | None:
        """Apply one record (lock held). Returns a subject id whose last key just went."""
        if not raw_key:
            return None
        key = raw_key.decode("utf-8", "replace")
        parts = split_key(key)
        if parts is None:  # segment-roll no-ops and anything else that is not a data key
            return None
        subject, _ = parts
        if value is None:
            self._keys.pop(key, None)
            self._dead.add(key)
            self._aeads.clear()  # (rare) no key object of an erased subject stays in memory
            live = self._by_subject.get(subject)
            if live is not None:
                live.discard(key)
                if not live:
                    del self._by_subject[subject]
                    return subject
            return None
        try:
            rec = self._serde.decode(value, "SubjectKey")
            data_key = self._kek.unwrap(bytes(rec["nonce"]), bytes(rec["wrapped_key"]), key, rec.get("kek_id"))
        except (SerdeError, UnsealError) as exc:
            log.error("keyring.unreadable_key", key=key, error=str(exc))
            return None
        self._keys[key] = data_key
        self._dead.discard(key)
        self._by_subject.setdefault(subject, set()).add(key)
        if rec.get("tenant_id"):
            self._owners.setdefault(subject, set()).add(rec["tenant_id"])
        return None

    def _catch_up(self, timeout: float) -> None:
        self._follower.wait_ready(timeout)

    # --- keys --------------------------------------------------------------------------------
    def keys_of(self, subject_id: str) -> list[str]:
        with self._lock:
            return sorted(self._by_subject.get(subject_id, ()))

    def tenants_of(self, subject_id: str) -> set[str]:
        """The tenant(s) the subject's data keys were created for; empty when no key of the subject
        was ever seen (reads the topic up to its current end before saying so)."""
        with self._lock:
            found = set(self._owners.get(subject_id, ()))
        if not found:
            self._catch_up(self._catch_up_timeout)
            with self._lock:
                found = set(self._owners.get(subject_id, ()))
        return found

    def _live_key(self, subject_id: str) -> tuple[str, bytes] | None:
        with self._lock:
            live = self._by_subject.get(subject_id)
            if not live:
                return None
            k = min(live)
            return k, self._keys[k]

    def _publish(self, key: str, value: bytes | None) -> None:
        assert self._producer is not None, "KeyRing not started"
        result: dict = {}
        done = threading.Event()

        def delivered(err, msg) -> None:
            result["err"] = err
            done.set()

        self._producer.produce(self._topic, key=key.encode(), value=value, on_delivery=delivered)
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            self._producer.poll(0.1)
        if not done.is_set():
            raise PrivacyError(f"{self._topic}: no ack for {key} within 30 s")
        if result["err"] is not None:
            raise PrivacyError(f"{self._topic}: publishing {key} failed: {result['err']}")

    def _create_key(self, tenant_id: str, subject_id: str) -> tuple[str, bytes]:
        with self._create_lock:
            existing = self._live_key(subject_id)  # another thread may have created it meanwhile
            if existing:
                return existing
            data_key = os.urandom(KEY_BYTES)
            key = topic_key(subject_id, uuid.uuid4().hex[:16])
            nonce, wrapped = self._kek.wrap(data_key, key)
            record = {
                "subject_id": subject_id, "key_id": key, "tenant_id": tenant_id, "kek_id": self._kek.kek_id,
                "nonce": nonce, "wrapped_key": wrapped, "created_at": dt.datetime.now(dt.timezone.utc),
            }
            self._publish(key, self._serde.encode("SubjectKey", record, topic=self._topic))
            with self._lock:
                self._keys[key] = data_key
                self._dead.discard(key)
                self._by_subject.setdefault(subject_id, set()).add(key)
                self._owners.setdefault(subject_id, set()).add(tenant_id)
            log.info("keyring.key_created", subject_id=subject_id, key_id=key)
            return key, data_key

    # --- sealing -----------------------------------------------------------------------------
    def seal(self, tenant_id: str, subject_id: str, data: dict) -> dict:
        """A ``Sealed`` Avro dict holding ``data`` (JSON-serialisable) for this subject."""
        if not subject_id or "/" in subject_id:
            raise ValueError(f"bad subject id {subject_id!r}")
        key, data_key = self._live_key(subject_id) or self._create_key(tenant_id, subject_id)
        nonce = os.urandom(NONCE_BYTES)
        return {"key_id": key, "nonce": nonce, "ciphertext": AESGCM(data_key).encrypt(nonce, _json(data), key.encode())}

    def unseal(self, sealed: dict) -> dict:
        """The data a ``Sealed`` Avro dict holds."""
        return self.open(sealed.get("key_id") or "", sealed["nonce"], sealed["ciphertext"])

    def open(self, key: str, nonce: bytes, ciphertext: bytes) -> dict:
        """The data sealed under data key ``key`` (``wapipe.messages.send.Sealed``'s fields)."""
        if not key:
            if self._settings.production:
                raise UnsealError("cleartext Sealed value (empty key_id) refused in production")
            return json.loads(bytes(ciphertext))
        if key.startswith(KEK_PREFIX):
            raise UnsealError("a KEK-sealed value: open it with Kek.unseal")
        data_key = self._data_key(key)
        aead = self._aeads.get((key, data_key))
        if aead is None:
            if len(self._aeads) >= 50_000:
                self._aeads.clear()
            aead = self._aeads[(key, data_key)] = AESGCM(data_key)
        try:
            plain = aead.decrypt(bytes(nonce), bytes(ciphertext), key.encode())
        except InvalidTag:
            raise UnsealError(f"{key}: sealed value does not authenticate (tampered or relabelled)") from None
        return orjson.loads(plain)  # the send worker opens one per message: orjson, ~3x json's speed

    def opens_now(self, key: str) -> bool:
        """Whether ``open`` under ``key`` answers from memory (a key read already, erased, empty or
        KEK-sealed); else it first reads the topic up to its end, which blocks: an event loop calls
        it in a thread."""
        if not key or key.startswith(KEK_PREFIX):
            return True
        with self._lock:
            return key in self._keys or key in self._dead

    def _data_key(self, key: str) -> bytes:
        with self._lock:
            if key in self._dead:
                raise SubjectErased(key)
            found = self._keys.get(key)
        if found is not None:
            return found
        # Not seen yet: the key is published (with acks) before any ciphertext, so reading up
        # to the current end of the topic either finds it or proves it is gone.
        self._catch_up(self._catch_up_timeout)
        with self._lock:
            found = self._keys.get(key)
        if found is None:
            raise SubjectErased(key)
        return found

    def is_erased(self, sealed_or_key: dict | str) -> bool:
        key = sealed_or_key if isinstance(sealed_or_key, str) else (sealed_or_key.get("key_id") or "")
        try:
            self._data_key(key)
            return False
        except SubjectErased:
            return True

    # --- erasure -----------------------------------------------------------------------------
    def erase(self, subject_id: str) -> int:
        """Tombstone every key of the subject. Returns how many keys were tombstoned."""
        self._catch_up(self._catch_up_timeout)
        keys = self.keys_of(subject_id)
        for key in keys:
            self._publish(key, None)
        with self._lock:
            for key in keys:
                self._keys.pop(key, None)
                self._dead.add(key)
            self._aeads.clear()
            self._by_subject.pop(subject_id, None)
        log.info("keyring.subject_erased", subject_id=subject_id, keys=len(keys))
        return len(keys)
