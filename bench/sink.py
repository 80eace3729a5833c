"""Benchmark: status rows into ClickHouse through the real broker, and webhook→queryable latency.

Three measurements in one run, on the real Kafka broker (KAFKA_BOOTSTRAP_SERVERS, else one this
script starts and stops) and the embedded ClickHouse (chDB) in a temporary folder:

1. **throughput** — N StatusEvent records are produced to a fresh topic, then the sink
   (``sinks.worker.SinkWorker``: batches, dedup-token inserts, commits) loads them; rows/s is
   N / (time until every offset is committed).
2. **baseline** — the naive loader on the same records and engine: one INSERT per event.
3. **latency** — signed-webhook-shaped ``RawWebhook`` records (several statuses each, as Meta
   batches them) go to ``wa.webhook.raw`` at a steady rate; ``wapipe normalise`` (subprocess) turns
   them into status events and the sink loads them; a poller queries ClickHouse every 50 ms and
   records when each status first becomes visible. p50/p99 of (visible − produced).

Ends with one JSON line: rows_per_s, queryable_p50_s, queryable_p99_s, baseline_rows_per_s,
lost, doubled (both phases counted: lost = produced but not in ClickHouse; doubled = rows beyond
one per event id, counted without FINAL).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka.admin import NewTopic  # noqa: E402

from sinks.passthrough import passthroughs  # noqa: E402
from sinks.retention import RetentionDays  # noqa: E402
from sinks.rows import CONVERTERS  # noqa: E402
from sinks.worker import SinkWorker  # noqa: E402
from wapipe.avro import AvroSerde  # noqa: E402
from wapipe.clickhouse import clickhouse_client, migrate  # noqa: E402
from wapipe.config import Settings  # noqa: E402
from wapipe.edge.clients import consumer as make_consumer  # noqa: E402
from wapipe.edge.clients import producer  # noqa: E402
from wapipe.edge.clients import admin_client
from wapipe.topics import STATUS_EVENTS, WEBHOOK_RAW, apply_topics  # noqa: E402


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def status(run: str, i: int, now: dt.datetime) -> dict:
    st = ("sent", "delivered", "read")[i % 3]
    return {"event_id": f"{run}-{i}", "tenant_id": f"tenant-{i % 5}", "waba_id": "waba-1", "phone_number_id": f"10{i % 7}",
            "wamid": f"wamid.{run}.{i // 3}", "status": st, "timestamp": now, "subject_id": f"subj-{i % 10007}",
            "biz_opaque_callback_data": f"key-{i // 3}", "pricing_billable": True, "pricing_model": "PMP",
            "pricing_category": "utility", "pricing_type": "regular", "received_at": now, "extra": "{}"}


def produce_all(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    p = producer(bootstrap, **{"linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000})
    for k, v in values:
        while True:
            try:
                p.produce(topic, key=k, value=v)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0, "not every record was acked"


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    from confluent_kafka import TopicPartition

    c = make_consumer(bootstrap, group)
    try:
        return sum(max(tp.offset, 0) for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10))
    finally:
        c.close()


def phase_throughput(settings, bootstrap: str, n: int, client, serde: AvroSerde) -> tuple[float, int, int, list]:
    run = uuid.uuid4().hex[:8]
    topic = f"bench.sink.status.{run}"
    parts = settings.topic_partitions
    admin = admin_client(bootstrap)  # keep a reference until the futures resolve
    for f in admin.create_topics([NewTopic(topic, num_partitions=parts, replication_factor=1)]).values():
        f.result()
    now = dt.datetime.now(dt.timezone.utc)
    say(f"throughput: encoding and producing {n:,} status events to {topic} ...")
    values = [(f"wamid.{run}.{i // 3}".encode(), serde.encode("StatusEvent", status(run, i, now))) for i in range(n)]
    produce_all(bootstrap, topic, values)
    conv = {topic: dataclasses.replace(CONVERTERS[STATUS_EVENTS], topic=topic)}
    s = settings.model_copy(update={"sink_batch_rows": int(os.environ.get("BENCH_SINK_BATCH_ROWS", 100_000)),
                                    "sink_batch_bytes": 64 * 1024 * 1024, "sink_batch_ms": 1000})
    group = f"bench-sink-{run}"
    fast = {topic: passthroughs(serde.store)[STATUS_EVENTS]} if os.environ.get("BENCH_SINK_PYTHON_DECODE") != "1" else None
    w = SinkWorker(s, bootstrap, client, retention=RetentionDays(s), group=group, converters=conv, passthrough=fast)
    w.consumer.subscribe([topic])
    t0 = time.perf_counter()
    t_first = None
    deadline = t0 + 120
    while w.stats.consumed < n and time.perf_counter() < deadline:
        w.step(0.2)
        if t_first is None and w.stats.consumed:
            t_first = time.perf_counter()
        if w._due():
            w.flush()
    w.drain()
    t_end = time.perf_counter()
    # Loading time: first record in hand → last offset committed. The consumer's one-time group
    # join (a few seconds on a fresh group) is reported separately, not averaged into the rate.
    elapsed = t_end - (t_first or t0)
    say(f"throughput: group join and first fetch took {(t_first or t0) - t0:.2f}s; with it the rate would be "
        f"{n / (t_end - t0):,.0f} rows/s")
    w.close()
    done = committed(bootstrap, group, topic, parts)
    rows, uniq = client.query("SELECT count(), uniqExact(event_id) FROM status_events WHERE startsWith(event_id, {r:String})",
                              parameters={"r": run + "-"}).result_rows[0]
    say(f"throughput: {n:,} rows in {elapsed:.2f}s = {n / elapsed:,.0f} rows/s (committed {done:,}, in ClickHouse {rows:,}, "
        f"distinct {uniq:,}, batches {w.stats.batches})")
    return n / elapsed, n - uniq, rows - uniq, values


def phase_baseline(settings, client, serde: AvroSerde, values: list, m: int) -> float:
    """The naive loader: decode one record, INSERT one row, repeat (same engine, same records)."""
    conv = CONVERTERS[STATUS_EVENTS]
    days = RetentionDays(settings)
    sample = values[:m]
    t0 = time.perf_counter()
    for _, v in sample:
        rec = serde.decode(v, "StatusEvent")
        rec["event_id"] = "baseline-" + rec["event_id"]
        client.insert("status_events", [conv.row(rec, days)], column_names=list(conv.columns))
    elapsed = time.perf_counter() - t0
    say(f"baseline: {m:,} single-row INSERTs in {elapsed:.2f}s = {m / elapsed:,.0f} rows/s")
    return m / elapsed


def webhook(run: str, k: int, per: int, pnid: str) -> tuple[bytes, list[str]]:
    ts = int(time.time())
    statuses = [{"id": f"wamid.lat.{run}.{k}.{j}", "status": "delivered", "timestamp": str(ts), "recipient_id": f"1555{k:07d}",
                 "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}}
                for j in range(per)]
    body = {"object": "whatsapp_business_account", "entry": [{"id": "waba-bench", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
        "statuses": statuses}}]}]}
    return json.dumps(body).encode(), [s["id"] for s in statuses]


def phase_latency(settings, bootstrap: str, client, serde: AvroSerde, seconds: float, rate: int, per: int,
                  state: Path) -> tuple[list[float], int, int]:
    run = uuid.uuid4().hex[:8]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "WAPIPE_STATE_DIR": str(state / "normalise"),
           "WAPIPE_NORMALISE_APP_ID": f"bench-normalise-{run}", "WAPIPE_NORMALISE_OFFSET_RESET": "latest"}
    log = open(state / "normalise.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "wapipe", "normalise"], env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    s = settings.model_copy(update={"sink_batch_ms": 250, "sink_batch_rows": 50_000})
    w = SinkWorker(s, bootstrap, client, retention=RetentionDays(s), group=f"bench-lat-{run}",
                   converters={STATUS_EVENTS: CONVERTERS[STATUS_EVENTS]},
                   consumer_overrides={"auto.offset.reset": "latest"},  # only this run's events, not history
                   passthrough=passthroughs(serde.store))
    stop = threading.Event()
    sink_thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
    produced: dict[str, float] = {}
    seen: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if lines.get(timeout=0.5).startswith("READY"):
                    ready = True
                    break
            except queue.Empty:
                pass
        if not ready:
            raise RuntimeError(f"wapipe normalise did not start; see {state / 'normalise.log'}")
        sink_thread.start()
        # Warm-up: both consumers joined their groups and the path works end to end (a fresh
        # broker loads its group coordinator first). Measured traffic starts after that.
        p = producer(bootstrap)
        warm_deadline = time.monotonic() + 90
        k = 0
        while time.monotonic() < warm_deadline:
            body, ids = webhook(run + "w", k, 1, "100")
            rec = {"ingress_id": f"warm-{k}", "received_at": dt.datetime.now(dt.timezone.utc), "app_id": "bench",
                   "signature_verified": True, "headers": {}, "body": body}
            p.produce(WEBHOOK_RAW, key=b"100", value=serde.encode("RawWebhook", rec, topic=WEBHOOK_RAW))
            p.flush(10)
            k += 1
            time.sleep(0.5)
            if client.query("SELECT count() FROM status_events WHERE startsWith(wamid, {p:String})",
                            parameters={"p": f"wamid.lat.{run}w."}).result_rows[0][0]:
                break
        else:
            raise RuntimeError("the webhook → ClickHouse path did not warm up within 90 s")
        say(f"latency: path warm after {k} warm-up webhooks")
        say(f"latency: {rate} webhooks/s x {per} statuses for {seconds:.0f}s through wapipe normalise and the sink ...")
        total = int(seconds * rate)
        t_start = time.monotonic()
        poll_stop = threading.Event()

        def poller():
            while not poll_stop.is_set():
                rows = client.query("SELECT wamid FROM status_events WHERE startsWith(wamid, {p:String})",
                                    parameters={"p": f"wamid.lat.{run}."}).result_rows
                t = time.time()
                for (wamid,) in rows:
                    seen.setdefault(wamid, t)
                time.sleep(0.05)

        pt = threading.Thread(target=poller, daemon=True)
        pt.start()
        for k in range(total):
            target = t_start + k / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body, ids = webhook(run, k, per, f"10{k % 7}")
            rec = {"ingress_id": f"{run}-{k}", "received_at": dt.datetime.now(dt.timezone.utc), "app_id": "bench",
                   "signature_verified": True, "headers": {}, "body": body}
            p.produce(WEBHOOK_RAW, key=f"10{k % 7}".encode(), value=serde.encode("RawWebhook", rec, topic=WEBHOOK_RAW))
            p.poll(0)
            t = time.time()
            for i in ids:
                produced[i] = t
        p.flush(30)
        end = time.monotonic() + 30
        while len(seen) < len(produced) and time.monotonic() < end:
            time.sleep(0.2)
        poll_stop.set()
        pt.join(5)
    finally:
        stop.set()
        if sink_thread.is_alive():
            sink_thread.join(20)
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    lat = sorted(seen[i] - produced[i] for i in produced if i in seen)
    rows, uniq = client.query("SELECT count(), uniqExact(wamid) FROM status_events WHERE startsWith(wamid, {p:String})",
                              parameters={"p": f"wamid.lat.{run}."}).result_rows[0]
    lost = len(produced) - uniq
    say(f"latency: {len(produced):,} statuses, {len(lat):,} seen; in ClickHouse {rows:,} rows, {uniq:,} distinct")
    return lat, lost, rows - uniq


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_SINK_ROWS", 600_000)))
    ap.add_argument("--baseline-rows", type=int, default=300)
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--webhooks-per-s", type=int, default=50)
    ap.add_argument("--statuses-per-webhook", type=int, default=10)
    args = ap.parse_args()

    t_all = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="wapipe-bench-sink-"))
    settings = Settings.under(tmp / "state")
    provider = None
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        from wapipe.app.stack.local import KafkaProvider

        provider = KafkaProvider(settings, data_dir=tmp / "kafka")
        bootstrap = provider.start()
        say(f"started a Kafka broker ({provider.source}) at {bootstrap}")
    settings = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    try:
        apply_topics(admin_client(bootstrap), settings)
        client = clickhouse_client(f"chdb://{tmp / 'chdb'}")
        migrate(client)
        serde = AvroSerde()
        rows_per_s, lost1, doubled1, values = phase_throughput(settings, bootstrap, args.rows, client, serde)
        baseline = phase_baseline(settings, client, serde, values, args.baseline_rows)
        lat, lost2, doubled2 = phase_latency(settings, bootstrap, client, serde, args.latency_seconds,
                                             args.webhooks_per_s, args.statuses_per_webhook, tmp)
        client.close()
    finally:
        if provider is not None:
            provider.stop()
            say("stopped the Kafka broker")
    p50, p99 = pct(lat, 0.50), pct(lat, 0.99)
    say(f"sink: {rows_per_s:,.0f} rows/s vs baseline {baseline:,.0f} rows/s (x{rows_per_s / baseline:.1f}); "
        f"webhook→queryable p50 {p50:.3f}s p99 {p99:.3f}s (mean {statistics.fmean(lat) if lat else float('nan'):.3f}s); "
        f"targets: >= 100,000 rows/s, p99 <= 3 s; total {time.monotonic() - t_all:.0f}s")
    print(json.dumps({"rows_per_s": round(rows_per_s, 1), "queryable_p50_s": round(p50, 4), "queryable_p99_s": round(p99, 4),
                      "baseline_rows_per_s": round(baseline, 1), "lost": lost1 + lost2, "doubled": doubled1 + doubled2}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
