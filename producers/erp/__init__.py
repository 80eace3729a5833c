"""The ERP SDK: typed SendCommands in, SendResults out; inbound messages and statuses in, opened.

    from producers.erp import ErpProducer, ResultReader, Routing, Lane, template

    with ErpProducer.from_settings(settings, bootstrap) as erp:
        cmd = erp.send(template("+4915112345678", "order_update", "en_US", body=["A-17", "shipped"]),
                       Routing(tenant_id="acme", phone_number_id="3000000001", idempotency_key="inv-17"))

    with ErpConsumer.from_settings(settings, bootstrap, tenant_id="acme") as inbox:
        for ev in inbox.poll():   # opened, linked to the command they answer (ev.command)
            ...

Other languages: see docs/erp-producer.md and docs/erp-consumer.md (the Avro schema and the wire format are the contract).
"""

from producers.erp.client import ErpProducer, PublishError, ResultReader
from producers.erp.commands import Lane, Routing, build_command, template, text
from producers.erp.consumer import Command, ErpConsumer, InboundEvent

__all__ = ["Command", "ErpConsumer", "ErpProducer", "InboundEvent", "Lane", "PublishError", "ResultReader", "Routing",
           "build_command", "template", "text"]
