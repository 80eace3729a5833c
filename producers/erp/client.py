"""Publishing SendCommands and reading SendResults, for the ERP.

``ErpProducer.send(message, routing)`` returns only once the broker acknowledged the command
(idempotent producer, acks=all): a command the ERP was told is sent is on ``wa.send.requested``.
Records are keyed by the sender's ``phone_number_id`` with Kafka's Java (murmur2) partitioner, the
one every other writer of the pipeline uses: a command lands on its number's partition, where the
one worker pacing that number reads it, dedups it in the number's ledger and sends it (a command
keyed otherwise is moved there once by the worker, at the cost of one more write). Idempotency
keys are unique per tenant and sender number. Campaign-lane
commands go to ``wa.send.requested.bulk``, the rest to ``wa.send.requested``: the two are read by
separate agents, so an invoice never waits behind a campaign's backlog (the worker accepts either
lane on either topic).

Security: ``bootstrap`` is a ``KafkaEndpoint`` (``wapipe.edge.endpoint``: bootstrap servers with TLS,
SASL PLAIN/SCRAM or mTLS) or a bare ``host:port`` list (plaintext); ``from_settings`` takes the
security of the pipeline's settings (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from connectors.meta.messages import OutboundMessage
from producers.erp.commands import Routing, Sealer, build_command
from wapipe import topics as T
from wapipe.avro import AvroSerde
from wapipe.edge.clients import JAVA_PARTITIONER, producer as make_producer
from wapipe.edge.clients import consumer as make_consumer
from wapipe.edge.endpoint import Endpoint, endpoint_for
from wapipe.privacy.links import link_record


class PublishError(RuntimeError):
    pass


class ErpProducer:
    """``timeout``: how long a command may wait for the broker's acknowledgement. The idempotent
    producer keeps retrying for all of it (``message.timeout.ms``), so a broker restart or a
    leader move shorter than that delays ``publish`` instead of failing it, and never writes a
    command twice."""

    def __init__(self, bootstrap: Endpoint, *, sealer: Sealer, pepper: bytes, serde: AvroSerde | None = None,
                 timeout: float = 300.0) -> None:
        self.serde = serde or AvroSerde()
        self.sealer = sealer
        self.pepper = pepper
        self.timeout = timeout
        self._producer = make_producer(bootstrap, partitioner=JAVA_PARTITIONER,
                                       **{"linger.ms": 5, "message.timeout.ms": int(timeout * 1000)})

    @classmethod
    def from_settings(cls, settings: Any, bootstrap: Endpoint) -> "ErpProducer":
        """With the pipeline's own KeyRing (started) and pepper, and the settings' Kafka security."""
        from wapipe.privacy.kek import load_kek
        from wapipe.privacy.keyring import KeyRing
        from wapipe.privacy.subjects import pepper_from

        bootstrap = endpoint_for(settings, bootstrap)
        ring = KeyRing(settings, bootstrap, load_kek(settings)).start()
        ring.wait_ready(30)  # raises when the keys are not read within 30 s
        p = cls(bootstrap, sealer=ring, pepper=pepper_from(settings), serde=AvroSerde.from_settings(settings))
        p._ring = ring  # closed with the producer
        return p

    def command(self, message: OutboundMessage, routing: Routing, **kw: Any) -> dict:
        return build_command(message, routing, sealer=self.sealer, pepper=self.pepper, **kw)

    def publish(self, commands: Iterable[dict]) -> int:
        """Publish built commands; returns how many, once all are acknowledged."""
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err.str())

        def produce(topic: str, key: bytes, value: bytes) -> None:
            while True:
                try:
                    self._producer.produce(topic, key=key, value=value, on_delivery=delivered)
                    return
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.05)

        n = 0
        for cmd in commands:
            topic = T.SEND_REQUESTED_BULK if cmd.get("lane") == "CAMPAIGN" else T.SEND_REQUESTED
            value = self.serde.encode("SendCommand", cmd, topic=topic)
            user_subject = cmd.get("user_subject_id")
            if user_subject and user_subject != cmd["subject_id"]:  # a number and a BSUID: one person
                link = link_record(cmd["tenant_id"], cmd["subject_id"], user_subject, cmd["requested_at"])
                produce(T.SUBJECT_LINKS, link.key.encode(),
                        self.serde.encode(link.RECORD, link.to_avro(), topic=T.SUBJECT_LINKS))
            produce(topic, cmd["phone_number_id"].encode(), value)
            n += 1
            if n % 1000 == 0:
                self._producer.poll(0)
        left = self._producer.flush(self.timeout + 5)
        if left:
            raise PublishError(f"{left} command(s) not acknowledged within {self.timeout:.0f}s")
        if errors:
            raise PublishError(f"{len(errors)} command(s) failed: {errors[0]}")
        return n

    def send(self, message: OutboundMessage, routing: Routing, **kw: Any) -> dict:
        """Build, publish and wait for the ack; returns the command (its ``command_id``)."""
        cmd = self.command(message, routing, **kw)
        self.publish([cmd])
        return cmd

    def close(self) -> None:
        self._producer.flush(self.timeout)
        ring = getattr(self, "_ring", None)
        if ring is not None:
            ring.close()

    def __enter__(self) -> "ErpProducer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultReader:
    """Reads ``wa.send.results`` from the beginning (or from now) — for the ERP's bookkeeping."""

    def __init__(self, bootstrap: Endpoint, *, serde: AvroSerde | None = None, from_beginning: bool = True) -> None:
        self.serde = serde or AvroSerde()
        self._c = make_consumer(bootstrap, f"erp-results-{time.monotonic_ns()}",
                                **{"auto.offset.reset": "earliest" if from_beginning else "latest"})
        md = self._c.list_topics(T.SEND_RESULTS, timeout=10).topics[T.SEND_RESULTS]
        start = -2 if from_beginning else -1  # OFFSET_BEGINNING / OFFSET_END
        self._c.assign([TopicPartition(T.SEND_RESULTS, p, start) for p in md.partitions])
        self.seen: list[dict] = []  # every result read so far, in order

    def poll(self, timeout: float = 0.5) -> list[dict]:
        out = []
        for m in self._c.consume(1000, timeout=timeout):
            if m.error() is None and m.value():
                out.append(self.serde.decode(m.value(), "SendResult"))
        self.seen.extend(out)
        return out

    def iter(self, *, tenant_id: str | None = None, timeout: float = 10.0) -> Iterator[dict]:
        """Results as they come, until ``timeout`` seconds pass without one."""
        last = time.monotonic()
        while time.monotonic() - last < timeout:
            batch = self.poll(0.5)
            if batch:
                last = time.monotonic()
            for r in batch:
                if tenant_id is None or r["tenant_id"] == tenant_id:
                    yield r

    def wait_final(self, keys: Iterable[tuple[str, str]], *, timeout: float = 60.0) -> dict[tuple[str, str], dict]:
        """The final result per (tenant_id, idempotency_key) — RETRYING and DUPLICATE are not final
        — for every key, or as many as arrived within ``timeout``. Later results win."""
        want = set(keys)
        got: dict[tuple[str, str], dict] = {}

        def take(results: list[dict]) -> None:
            for r in results:
                k = (r["tenant_id"], r["idempotency_key"])
                if k in want and r["outcome"] not in ("RETRYING", "DUPLICATE"):
                    got[k] = r

        take(self.seen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not want.issubset(got):
            take(self.poll(0.5))
        return got

    def close(self) -> None:
        self._c.close()

    def __enter__(self) -> "ResultReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
