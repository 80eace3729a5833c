"""Writing tenants and templates to their compacted topics: acks=all, flushed, delivery checked.

A publish returns only once the broker acknowledged the record (or raises ``PublishError``), so a
CLI command that says "created" has really written, and a crash between two steps of onboarding
leaves the last acknowledged state on the topic.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, Producer

from wapipe.avro import AvroSerde
from wapipe.tenants.models import TEMPLATE_RECORD, TENANT_RECORD, Template, Tenant, template_key
from wapipe.topics import TEMPLATES, TENANTS


class PublishError(RuntimeError):
    pass


def _produce(producer: Producer, topic: str, key: str, value: bytes | None, timeout: float) -> tuple[int, int]:
    """Write one record and wait for its ack; returns its (partition, offset)."""
    errors: list[KafkaError] = []
    where: list[tuple[int, int]] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            where.append((msg.partition(), msg.offset()))

    producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
    left = producer.flush(timeout)
    if left:
        raise PublishError(f"{topic}/{key}: not acknowledged within {timeout:.0f}s")
    if errors:
        raise PublishError(f"{topic}/{key}: {errors[0].str()}")
    return where[0]


def write_tenant(producer: Producer, tenant: Tenant, *, serde: AvroSerde | None = None,
                 timeout: float = 30.0) -> tuple[int, int]:
    """``publish_tenant``, returning where the record landed (partition, offset)."""
    serde = serde or AvroSerde()
    return _produce(producer, TENANTS, tenant.tenant_id,
                    serde.encode(TENANT_RECORD, tenant.to_avro(), topic=TENANTS), timeout)


def write_template(producer: Producer, template: Template, *, serde: AvroSerde | None = None,
                   timeout: float = 30.0) -> tuple[int, int]:
    serde = serde or AvroSerde()
    return _produce(producer, TEMPLATES, template.key,
                    serde.encode(TEMPLATE_RECORD, template.to_avro(), topic=TEMPLATES), timeout)


def publish_tenant(producer: Producer, tenant: Tenant, *, serde: AvroSerde | None = None,
                   timeout: float = 30.0) -> Tenant:
    """Write ``tenant`` to ``wa.tenants`` (keyed by tenant_id) and wait for the ack."""
    write_tenant(producer, tenant, serde=serde, timeout=timeout)
    return tenant


def publish_template(producer: Producer, template: Template, *, serde: AvroSerde | None = None,
                     timeout: float = 30.0) -> Template:
    """Write ``template`` to ``wa.templates`` (keyed waba_id/name/language) and wait for the ack."""
    write_template(producer, template, serde=serde, timeout=timeout)
    return template


def delete_template(producer: Producer, waba_id: str, name: str, language: str, *,
                    timeout: float = 30.0) -> tuple[int, int]:
    """Tombstone: the template leaves every registry."""
    return _produce(producer, TEMPLATES, template_key(waba_id, name, language), None, timeout)


def delete_tenant(producer: Producer, tenant_id: str, *, timeout: float = 30.0) -> None:
    """Tombstone: the tenant leaves every registry (use status DISCONNECTED to keep its history)."""
    _produce(producer, TENANTS, tenant_id, None, timeout)
