"""The ERP SDK: typed SendCommands in, SendResults out; inbound messages and statuses in, opened.

    from producers.erp import ErpProducer, ResultReader, Routing, Lane, template

    with ErpProducer.from_settings(settings, bootstrap) as erp:
        cmd = erp.send(template("+4915112345678", "order_update", "en_US", body=["A-17", "shipped"]),
                       Routing(tenant_id="acme", phone_number_id="3000000001", idempotency_key="inv-17"))

    with ErpConsumer.from_settings(settings, bootstrap, tenant_id="acme") as inbox:
        for ev in inbox.poll():   # opened, linked to the command they answer (ev.command)
            ...

Against a secured cluster: ``KafkaEndpoint("broker:9093", KafkaSecurity(protocol="SASL_SSL",
sasl_mechanism="SCRAM-SHA-512", sasl_username="erp", sasl_password=..., ssl_ca_file="ca.pem"))``
in place of ``bootstrap``; ``check_access(endpoint)`` raises ``KafkaAuthError`` when the brokers
refuse it.

Other languages: see docs/erp-producer.md and docs/erp-consumer.md (the Avro schema and the wire format are the contract).
"""

from producers.erp.client import ErpProducer, PublishError, ResultReader
from producers.erp.commands import Lane, Routing, build_command, template, text
from producers.erp.consumer import Command, ErpConsumer, InboundEvent
from wapipe.edge.endpoint import KafkaAuthError, KafkaEndpoint, KafkaSecurity, check_access

__all__ = ["Command", "ErpConsumer", "ErpProducer", "InboundEvent", "KafkaAuthError", "KafkaEndpoint", "KafkaSecurity",
           "Lane", "PublishError", "ResultReader", "Routing", "build_command", "check_access", "template", "text"]
