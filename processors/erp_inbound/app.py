"""``wapipe erp inbound``: what the ERP receives, and its mark-as-read requests.

One consumer group (``WAPIPE_ERP_INBOUND_GROUP``) reads

* ``wa.inbound.messages`` and ``wa.status.events`` -> an ``ErpInbound`` record per event for the
  ERP on ``wa.erp.inbound``, keyed by ``tenant_id`` (``convert.py``; links to commands from
  ``links.CommandLinks``);
* ``wa.erp.reads`` -> ``POST /{phone_number_id}/messages {status: read}`` with the tenant's token
  (``reads.py``).

Nothing is dropped silently: a record that does not decode, does not convert or cannot be carried
out becomes a ``DeadLetter`` on ``wa.erp.dead`` with its reason (``wapipe.deadletter``, acked), and
the next record goes on; events that are no ERP's (no tenant, a status of a message no command
sent, an erased subject) are counted. A batch's offsets are committed only after its records and
dead letters were acknowledged, so a crash re-sends them (at-least-once: the ERP reads by
``event_id``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from processors.erp_inbound.convert import Dead, Skip, from_inbound, from_status, typed
from processors.erp_inbound.links import CommandLinks
from processors.erp_inbound.reads import mark_read, read_command
from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.deadletter import DeadLetter, Source, SyncDeadLetters
from wapipe.edge.batches import Stopped, consume_batches, flush_acked
from wapipe.edge.clients import JAVA_PARTITIONER
from wapipe.edge.clients import patient_producer
from wapipe.log import get_logger
from wapipe.messages import erp as M
from wapipe.messages.send import Sealed
from wapipe.privacy.errors import PrivacyError
from wapipe.privacy.wamids import WamidRefs
from wapipe.topics import ERP_DEAD, ERP_INBOUND, ERP_READS, INBOUND_MESSAGES, STATUS_EVENTS

log = get_logger(__name__)

SOURCES = (INBOUND_MESSAGES, STATUS_EVENTS, ERP_READS)
# Not the record's fault: retried in place (the stream waits) instead of dead-lettered. Unseal
# failures and erased subjects are PrivacyErrors too, but convert.py / reads.py decide on them first.
_INFRASTRUCTURE = (KafkaException, PrivacyError, TimeoutError)
_RECORDS = {INBOUND_MESSAGES: "InboundMessage", STATUS_EVENTS: "StatusEvent", ERP_READS: "ReadCommand"}


class _Stopped(Exception):
    """Asked to stop while a record waited for the broker or the key ring."""


@dataclass(slots=True)
class Stats:
    outcomes: Counter = field(default_factory=Counter)  # message, status, read, dead, no_tenant, ...


class ErpInbound:
    def __init__(self, settings: Settings, *, links: CommandLinks, ring: Any, tenants: Any, kek: Any, graph: Any,
                 refs: WamidRefs, serde: AvroSerde | None = None, backoff_s: float = 0.5) -> None:
        self.s = settings
        self.links = links
        self.ring = ring
        self.tenants = tenants
        self.kek = kek
        self.graph = graph
        self.refs = refs
        self.serde = serde or AvroSerde.from_settings(settings)
        self.backoff_s = backoff_s
        self.stats = Stats()
        self._stop: threading.Event | None = None

    # --- one record ----------------------------------------------------------------------------
    async def handle(self, topic: str, value: bytes | None) -> tuple[M.ErpInbound, bytes] | None:
        """The ErpInbound record for the ERP and its encoding (None when there is nothing to
        write). Raises ``Dead`` or ``Skip``."""
        try:
            rec = self.serde.decode(value or b"", _RECORDS[topic])
        except SerdeError as exc:
            raise Dead(f"undecodable {_RECORDS[topic]}: {exc}", "SerdeError") from None
        if topic == ERP_READS:
            await mark_read(read_command(rec), tenants=self.tenants, ring=self.ring, kek=self.kek, graph=self.graph,
                            ref=self.refs, attempts=self.s.erp_read_attempts, backoff_s=self.backoff_s)
            self.stats.outcomes["read"] += 1
            return None
        if topic == INBOUND_MESSAGES:
            out = await asyncio.to_thread(from_inbound, typed(_RECORDS[topic], rec), link_of=self.links.get,
                                          open_=self._open, ref=self.refs)
        else:
            out = await asyncio.to_thread(from_status, typed(_RECORDS[topic], rec), link_of=self.links.get)
        try:
            encoded = self.serde.encode("ErpInbound", out.to_avro(), topic=ERP_INBOUND)
        except SerdeError as exc:  # this record's dead letter, not a stopped stream
            raise Dead(f"not a valid ErpInbound: {str(exc)[:500]}", "SerdeError") from None
        self.stats.outcomes[out.kind.lower()] += 1
        return out, encoded

    def _open(self, sealed: Sealed) -> dict:
        return self.ring.open(sealed.key_id, sealed.nonce, sealed.ciphertext)

    # --- the consumer loop ---------------------------------------------------------------------
    async def run(self, bootstrap: str, stop: threading.Event, *, ready: Callable[[], None] | None = None,
                  on_poll: Callable[[], None] | None = None, batch: int = 200) -> Stats:
        producer = patient_producer(bootstrap, partitioner=JAVA_PARTITIONER)  # the ERP SDK finds its tenant's partition
        letters = SyncDeadLetters(self.serde, ERP_DEAD, producer, self.s.dead_letter_max_bytes, stop=stop)
        self._stop = stop

        async def handle(good: list[Any]) -> None:
            errors: list[str] = []
            for m in good:
                await self._one(m, producer, letters, errors)
            await flush_acked(producer, stop)  # waits out a broker restart
            if errors:
                raise RuntimeError(f"{ERP_INBOUND}: {len(errors)} record(s) refused, {errors[:1]}; not committing")

        try:
            await consume_batches(bootstrap, self.s.erp_inbound_group, SOURCES, stop, handle, batch=batch,
                                  ready=ready, on_poll=on_poll)
        except (_Stopped, Stopped):
            log.warning("erp_inbound.stopped_while_retrying")
        finally:
            producer.flush(10)
        return self.stats

    async def _one(self, m: Any, producer: Any, letters: SyncDeadLetters, errors: list[str]) -> None:
        delay = 0.2
        while True:  # the broker or the key ring not answering: this record waits, it is no dead letter
            try:
                done = await self.handle(m.topic(), m.value())
                break
            except _INFRASTRUCTURE as exc:
                if self._stop is not None and self._stop.is_set():
                    raise _Stopped() from exc  # offsets not committed: the record comes again
                log.warning("erp_inbound.retry", topic=m.topic(), offset=m.offset(), error=str(exc)[:300],
                            retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Skip as s:
                self.stats.outcomes[s.outcome] += 1
                return
            except Dead as d:
                await self._dead(m, letters, d.reason, d.error_type)
                return
            except Exception as exc:  # a bug on one record never stops the stream nor loses the next one
                log.error("erp_inbound.failed", topic=m.topic(), error=f"{type(exc).__name__}: {exc}")
                await self._dead(m, letters, f"{type(exc).__name__}: {str(exc)[:500]}", type(exc).__name__)
                return
        if done is None:
            return
        out, value = done

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err.str())

        producer.produce(ERP_INBOUND, key=out.tenant_id.encode(), value=value, on_delivery=delivered)
        producer.poll(0)

    async def _dead(self, m: Any, letters: SyncDeadLetters, reason: str, error_type: str) -> None:
        self.stats.outcomes["dead"] += 1
        tenant = _tenant_of(self.serde, m)
        await asyncio.to_thread(letters.write, DeadLetter(Source.of_kafka(m), reason, error_type, tenant_id=tenant),
                                key=(tenant or "").encode() or None)


def _tenant_of(serde: AvroSerde, m: Any) -> str | None:
    """The tenant a bad record names, if it decodes at all (for the dead letter's key)."""
    try:
        t = serde.decode(m.value() or b"", _RECORDS[m.topic()]).get("tenant_id")
    except Exception:
        return None
    return t if isinstance(t, str) and t else None
