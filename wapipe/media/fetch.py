"""``wapipe media fetch``: fetch the files of inbound media messages into the tenant's storage.

A consumer of ``wa.inbound.messages`` (group ``WAPIPE_MEDIA_GROUP``). For every image, audio, video,
document or sticker message it

1. opens the message's sealed content with the key ring (the media id, MIME type, SHA-256 and
   file name are personal content: they only exist sealed),
2. asks Meta ``GET /{media_id}`` with *the message's tenant's* token (scoped to the receiving
   number) and downloads the file from the answer's URL with the same token (size and SHA-256
   checked; the webhook's base64 SHA-256 too),
3. seals the file under the sender's data key (``wapipe.media.sealed``) and writes it to the
   tenant's store as ``<tenant_id>/<object_id_for(tenant_id, event_id)>``.

Nothing is dropped silently: a record that cannot be decoded, a media message without a tenant, a
token or a media id, and a fetch that failed permanently (or transiently ``attempts`` times) go to
``wa.media.dead`` with the reason, and the next record is processed. Messages that are not media,
of a restricted subject (content not stored) or of an erased subject are skipped and counted.
Offsets are committed after the batch's files are stored (a redelivery overwrites the same object).
With ``retention`` the loop also deletes stored media past each tenant's ``content`` retention every
``WAPIPE_MEDIA_SWEEP_INTERVAL_S`` (``wapipe media sweep`` does one pass on demand).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from connectors.meta import errors as meta_errors
from connectors.meta.client import GraphClient, MediaTooLarge
from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.edge.batches import Stopped, consume_batches, flush_acked, read_to_end
from wapipe.edge.clients import patient_producer
from wapipe.log import get_logger
from wapipe.media.sealed import Sealer, object_id_for, seal_blob
from wapipe.media.store import MediaStore
from wapipe.media.sweep import sweep
from wapipe.privacy.errors import SubjectErased, UnsealError
from wapipe.tenants.models import utcnow
from wapipe.topics import INBOUND_MESSAGES, MEDIA_DEAD

log = get_logger(__name__)

MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})


class TenantLookup(Protocol):
    def tenant(self, tenant_id: str) -> Any: ...


class Dead(Exception):
    """This record goes to the dead-letter topic with ``reason``."""

    def __init__(self, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


@dataclass(slots=True)
class Stats:
    outcomes: Counter = field(default_factory=Counter)  # stored, not_media, restricted, erased, dead


class MediaFetcher:
    def __init__(self, settings: Settings, *, graph: GraphClient, keyring: Sealer, tenants: TenantLookup, kek: Any,
                 store: MediaStore, serde: AvroSerde | None = None, attempts: int = 3, backoff_s: float = 0.5,
                 retention: Callable[[str], int] | None = None) -> None:
        self.s = settings
        self.graph = graph
        self.keyring = keyring
        self.tenants = tenants
        self.kek = kek
        self.store = store
        self.serde = serde or AvroSerde.from_settings(settings)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.stats = Stats()
        # tenant -> content retention days; with it, the loop sweeps every media_sweep_interval_s
        self.retention = retention

    # --- one record ----------------------------------------------------------------------------
    async def process(self, rec: dict) -> str:
        """Store one inbound message's file. Returns the outcome; raises ``Dead`` with a reason."""
        kind = rec.get("type")
        if kind not in MEDIA_TYPES:
            return "not_media"
        tenant_id = rec.get("tenant_id")
        if not tenant_id:
            raise Dead("media message of a number no tenant claims: no token to fetch it with", "NoTenant")
        if rec.get("pii") is None:
            return "restricted"  # processing restricted by the subject: content is not stored
        try:
            # in a thread: a key not read yet makes the ring read its topic to the end (blocking)
            content = await asyncio.to_thread(self.keyring.unseal, rec["pii"])
        except SubjectErased:
            return "erased"
        except UnsealError as e:
            raise Dead(f"sealed content does not open: {e}", "UnsealError") from None
        obj = ((content.get("message") or {}).get(kind)) or {}
        media_id = obj.get("id")
        if not isinstance(media_id, str) or not media_id:
            raise Dead(f"{kind} message without a media id", "NoMediaId")
        tenant = self.tenants.tenant(tenant_id)
        if tenant is None:
            raise Dead(f"tenant {tenant_id} unknown", "UnknownTenant")
        try:
            token = tenant.open_token(self.kek)
        except LookupError as e:
            raise Dead(str(e), "NoToken") from None
        data, info_mime = await self._download(media_id, token, rec["phone_number_id"])
        expected = obj.get("sha256")
        if isinstance(expected, str) and expected and not _same_sha256(expected, data):
            raise Dead("downloaded file does not match the webhook's sha256", "Sha256Mismatch")
        oid = object_id_for(tenant_id, rec["event_id"])
        blob = await asyncio.to_thread(seal_blob, self.keyring, tenant_id, rec["subject_id"], oid, data,
                                       mime_type=obj.get("mime_type") or info_mime, filename=obj.get("filename"))
        await self.store.put(tenant_id, oid, blob)
        log.info("media.stored", tenant_id=tenant_id, object_id=oid, type=kind, bytes=len(data))
        return "stored"

    async def _download(self, media_id: str, token: str, phone_number_id: str) -> tuple[bytes, str | None]:
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                info = await self.graph.media_info(media_id, token=token, phone_number_id=phone_number_id)
                return await self.graph.download_media(info, token=token, max_bytes=self.s.media_max_bytes), info.mime_type
            except MediaTooLarge as e:
                raise Dead(str(e), "MediaTooLarge") from None
            except ValidationError as e:
                raise Dead(f"unexpected GET /{{media_id}} answer: {e.error_count()} invalid field(s)", "BadMediaInfo") from None
            except ValueError as e:  # a download URL on a host that is not Meta's
                raise Dead(str(e), "UntrustedMediaUrl") from None
            except meta_errors.MetaError as e:
                if not (e.retryable or isinstance(e, meta_errors.UnknownOutcome)):
                    raise Dead(f"Graph API refused: {e}", type(e).__name__) from None
                last = e
                await asyncio.sleep(self.backoff_s * (2 ** attempt))
        raise Dead(f"gave up after {self.attempts} attempts: {last}", type(last).__name__)

    # --- the consumer loop ---------------------------------------------------------------------
    async def run_async(self, bootstrap: str, stop: threading.Event, *, ready: Callable[[], None] | None = None,
                        batch: int = 50, concurrency: int = 4, idle_stop: bool = False,
                        on_poll: Callable[[], None] | None = None) -> Stats:
        """Consume until ``stop`` is set (or, with ``idle_stop``, until every assigned partition
        has been read to its end). ``ready`` is called after the first poll, ``on_poll`` after each."""
        await self._run(bootstrap, stop, ready, batch, concurrency, idle_stop=idle_stop, on_poll=on_poll)
        return self.stats

    async def _run(self, bootstrap: str, stop: threading.Event, ready, batch: int, concurrency: int, *,
                   idle_stop: bool = False, on_poll: Callable[[], None] | None = None) -> None:
        producer = patient_producer(bootstrap)
        limit = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()
        next_sweep = 0.0

        async def swept() -> None:
            nonlocal next_sweep
            if self.retention is not None and loop.time() >= next_sweep:
                next_sweep = loop.time() + self.s.media_sweep_interval_s
                try:
                    await sweep(self.store, self.retention, erased=self.keyring.is_erased)
                except Exception as e:  # storage hiccup: the next interval tries again
                    log.error("media.sweep_failed", error=f"{type(e).__name__}: {e}")

        async def handle(good: list) -> None:
            async def one(m) -> None:
                async with limit:
                    await self._one(m, producer)
            await asyncio.gather(*(one(m) for m in good))
            await flush_acked(producer, stop)  # dead letters acknowledged (waits out a broker restart)

        async def idle(consumer) -> bool:
            return idle_stop and await asyncio.to_thread(read_to_end, consumer)

        try:
            await consume_batches(bootstrap, self.s.media_group, [INBOUND_MESSAGES], stop, handle, batch=batch,
                                  ready=ready, on_poll=on_poll, before_poll=swept, on_idle=idle)
        except Stopped:  # the batch is read again after the restart
            log.warning("media.stopped_while_flushing")
        finally:
            producer.flush(10)

    async def _one(self, m, producer) -> None:
        rec: dict | None = None
        try:
            rec = self.serde.decode(m.value(), "InboundMessage")
            outcome = await self.process(rec)
        except Dead as d:
            outcome = "dead"
            self._dead(producer, m, d.reason, d.error_type, rec)
        except SerdeError as e:
            outcome = "dead"
            self._dead(producer, m, f"undecodable InboundMessage: {e}", "SerdeError", None)
        except Exception as e:  # one bad record never stops the fetcher nor loses the next one
            outcome = "dead"
            log.error("media.failed", error=f"{type(e).__name__}: {e}")
            self._dead(producer, m, f"{type(e).__name__}: {e}", type(e).__name__, rec)
        self.stats.outcomes[outcome] += 1

    def _dead(self, producer, m, reason: str, error_type: str, rec: dict | None) -> None:
        tenant_id = (rec or {}).get("tenant_id")
        log.warning("media.dead_letter", reason=reason, error_type=error_type, tenant_id=tenant_id)
        value = self.serde.encode("DeadLetter", {
            "source_topic": m.topic(), "partition": m.partition(), "offset": m.offset(), "key": m.key(),
            "value": m.value(), "reason": reason[:2000], "error_type": error_type, "tenant_id": tenant_id,
            "subject_id": (rec or {}).get("subject_id"), "headers": {}, "failed_at": utcnow()}, topic=MEDIA_DEAD)
        producer.produce(MEDIA_DEAD, key=(tenant_id or "").encode(), value=value)


def _same_sha256(expected: str, data: bytes) -> bool:
    """The webhook's ``sha256`` is base64 (Meta's examples); accept hex too."""
    digest = hashlib.sha256(data).digest()
    try:
        if len(expected) == 64:
            return bytes.fromhex(expected) == digest
        return base64.b64decode(expected, validate=True) == digest
    except ValueError:
        return False
