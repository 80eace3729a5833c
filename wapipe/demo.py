"""``wapipe demo``: the main job on the embedded defaults.

Until the send pipeline and the sink land, this is the foundation's slice of it: start (or find)
the real broker, apply the topics, migrate the embedded ClickHouse, publish a campaign of Avro
SendCommands to ``wa.send.requested``, read them back from Kafka into ClickHouse, and print what
ClickHouse holds. Everything it touches is real; nothing is sent to Meta yet.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from wapipe.avro import AvroSerde
from wapipe.clickhouse import clickhouse_client, migrate
from wapipe.config import Settings
from wapipe.kafka import consumer, producer
from wapipe.stack.local import KafkaProvider, stack_status
from wapipe.topics import SEND_REQUESTED, admin_client, apply_topics

console = Console()


def demo_command(
    messages: int = typer.Option(20_000, help="campaign size"),
    tenants: int = typer.Option(3, help="number of tenants"),
) -> None:
    """Run the main job locally and show its report."""
    s = Settings()
    provider = None
    st, status = stack_status(s)
    if status == "up":
        bootstrap = st.bootstrap
        console.print(f"using the running stack: {bootstrap}")
    else:
        provider = KafkaProvider(s, data_dir=s.kafka_dir / "demo-data")
        t0 = time.monotonic()
        bootstrap = provider.start()
        console.print(f"started Kafka ({provider.source}) at {bootstrap} in {time.monotonic() - t0:.1f}s")
    try:
        run_slice(s, bootstrap, messages, tenants)
    finally:
        if provider is not None:
            provider.stop()
            console.print("stopped Kafka")


def run_slice(s: Settings, bootstrap: str, messages: int, tenants: int) -> dict:
    apply_topics(admin_client(bootstrap), s)
    ch = clickhouse_client(s.clickhouse_dsn)
    migrate(ch)
    serde = AvroSerde.from_settings(s)
    run_id = uuid.uuid4().hex[:8]
    campaign = f"demo-{run_id}"
    prod = producer(bootstrap)
    acked = 0

    def on_ack(err, _msg):
        nonlocal acked
        if err is None:
            acked += 1

    now = dt.datetime.now(dt.timezone.utc)
    with Progress(console=console) as progress:
        task = progress.add_task("publish to wa.send.requested", total=messages)
        for i in range(messages):
            tenant = f"tenant-{i % tenants}"
            rec = {
                "command_id": str(uuid.uuid4()), "tenant_id": tenant, "idempotency_key": f"{campaign}-{i}",
                "phone_number_id": f"10{i % tenants}", "subject_id": f"demo-subject-{i}",
                "lane": "CAMPAIGN" if i % 10 else "TRANSACTIONAL", "campaign_id": campaign, "kind": "TEMPLATE",
                "template": {"name": "order_update", "language": "en", "parameter_count": 1},
                "pii": {"key_id": "", "nonce": b"", "ciphertext": json.dumps({"demo": True}).encode()},
                "requested_at": now,
            }
            prod.produce(SEND_REQUESTED, key=tenant.encode(), value=serde.encode("SendCommand", rec, topic=SEND_REQUESTED),
                         on_delivery=on_ack)
            prod.poll(0)
            if i % 1000 == 999:
                progress.update(task, completed=i + 1)
        prod.flush(30)
        progress.update(task, completed=messages)

        cons = consumer(bootstrap, f"demo-{run_id}")
        cons.subscribe([SEND_REQUESTED])
        task2 = progress.add_task("Kafka -> ClickHouse send_requests", total=messages)
        loaded, batch, deadline = 0, [], time.monotonic() + 120
        cols = ["command_id", "tenant_id", "idempotency_key", "phone_number_id", "subject_id", "lane", "campaign_id",
                "kind", "template_name", "template_lang", "requested_at", "valid_until"]
        while loaded < messages and time.monotonic() < deadline:
            for m in cons.consume(5000, timeout=1.0):
                if m.error():
                    continue
                r = serde.decode(m.value(), "SendCommand")
                if r["campaign_id"] != campaign:
                    continue
                batch.append([r["command_id"], r["tenant_id"], r["idempotency_key"], r["phone_number_id"], r["subject_id"],
                              r["lane"], r["campaign_id"], r["kind"], r["template"]["name"], r["template"]["language"],
                              r["requested_at"], r["valid_until"]])
            if batch:
                ch.insert("send_requests", batch, column_names=cols)
                cons.commit(asynchronous=False)
                loaded += len(batch)
                progress.update(task2, completed=loaded)
                batch = []
        cons.close()

    rows = ch.query(
        "SELECT tenant_id, lane, count() FROM send_requests FINAL WHERE campaign_id = {c:String} "
        "GROUP BY tenant_id, lane ORDER BY tenant_id, lane", parameters={"c": campaign}).result_rows
    table = Table("tenant", "lane", "commands in ClickHouse", title=f"campaign {campaign}")
    for tenant, lane, n in rows:
        table.add_row(tenant, lane, str(n))
    console.print(table)
    total = sum(r[2] for r in rows)
    console.print(f"published {messages}, acked by Kafka {acked}, read back into ClickHouse {total}")
    if total != messages or acked != messages:
        raise typer.Exit(1)
    return {"published": messages, "acked": acked, "in_clickhouse": total, "campaign": campaign}
