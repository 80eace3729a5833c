"""``wapipe demo`` (``make demo``): the product's main job on the embedded defaults.

One machine, nothing else: the real Kafka broker, the Meta sandbox (the one simulated part), the
ingress, the send worker, the normaliser, the sink into the embedded ClickHouse, the tenant,
privacy, media and ERP-inbound services. It creates tenants whose numbers have different
throughput limits, sends a mixed workload through the ERP's path (Avro SendCommands on
``wa.send.requested``): a bulk campaign per tenant, transactional messages during it, invalid
commands, duplicates and recipients that fail; shows live progress; prints the delivery report
read back from ClickHouse, writes the HTML report, checks the report against what the sandbox
saw, and stops everything it started.

``wapipe up`` (wapipe/app/commands/up.py) runs the same services for real (configured Meta apps,
external Kafka/ClickHouse).

One module a job: ``plan`` (what to send), ``world`` (the sandbox's seed and the tenants),
``run`` (broker, services, stages, the summary), ``workload`` (building and publishing the
commands), ``tracker`` (reading the results back), ``progress`` (the live view), ``verify`` (the
report read back from ClickHouse, checked against the sandbox), ``command`` (the CLI entry).
"""
