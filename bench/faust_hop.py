"""What one Faust hop costs on this machine: the floor under ``wapipe worker``'s CPU per message.

A message through the send pipeline passes three Faust streams (``wa.send.requested`` → intake,
``wa.send.accepted`` → lane agent, ``wa.send.results`` → outcomes) and about six acknowledged
produces (dedup changelog twice, accepted, ledger DISPATCHING and DONE, the result). This measures
the smallest such step alone: a Faust agent that reads a record and forwards it to another topic,
nothing else, with the send worker's own Faust settings, in these variants:

* ``faust-read``: the agent reads the record and writes nothing (what Faust's consumer costs);
* ``faust-read-confluent``: the same through Faust's ``confluent://`` transport (librdkafka's
  consumer instead of aiokafka's);
* ``faust``: ``await out.send(...)`` through Faust's producer (aiokafka; buffered, not waiting for
  the broker's ack);
* ``faust-ack``: ``await (await out.send(...))`` — the way the worker wrote its ledger until it
  moved its writes to librdkafka;
* ``faust-librdkafka``: the write through ``wapipe.publisher`` (librdkafka), acks awaited in tasks
  of their own, at most 1,000 in flight — the way the worker's intake writes now;
* baseline, same run: a plain confluent-kafka loop (librdkafka) doing the same hop, one poll of a
  batch, one produce per record, one flush per batch.

Each variant runs in its own process on N pre-produced ~600-byte records (the size of an Avro
SendCommand) and reports its process CPU seconds per 1,000 records (all threads) and records/s.

    python bench/faust_hop.py [--records 30000]

Starts and stops its own broker unless KAFKA_BOOTSTRAP_SERVERS is set. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from own_broker import own_broker  # noqa: E402

PARTITIONS = 4
KINDS = ("faust-read", "faust-read-confluent", "faust", "faust-ack", "faust-librdkafka", "plain")  # "plain" last
VALUE = os.urandom(600)  # the size of an Avro SendCommand with its sealed PII


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the children: each forwards --records records from topic "in" to "out" and writes a result --
def child_faust(bootstrap: str, src: str, dst: str, records: int, out_file: str, kind: str) -> None:
    import asyncio

    import faust
    from faust.worker import Worker

    from wapipe.publisher import KafkaPublisher

    # The send worker's settings (processors/send/app.py), memory store, no web server.
    scheme = "confluent" if kind.endswith("-confluent") else "kafka"
    app = faust.App(
        f"hop-{uuid.uuid4().hex[:8]}", broker=[f"{scheme}://{bootstrap}"], store="memory://", web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="faust-hop-"), topic_partitions=PARTITIONS, topic_disable_leader=True,
        stream_wait_empty=False, broker_commit_interval=0.5, consumer_auto_offset_reset="earliest",
        producer_acks=-1, stream_buffer_maxsize=256, broker_max_poll_records=100,
    )
    raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    source, sink = app.topic(src, **raw), app.topic(dst, **raw)
    state = {"n": 0, "t0": 0.0, "cpu0": 0.0}
    pub = None
    if kind == "faust-librdkafka":
        pub = KafkaPublisher(bootstrap, message_timeout_ms=30_000, deadline_ms=35_000)
    slots = asyncio.Semaphore(1000)

    async def publish(key: bytes, value: bytes) -> None:
        try:
            await pub.publish(dst, value, key)
        finally:
            slots.release()

    @app.agent(source)
    async def forward(stream):
        async for event in stream.events():
            if state["n"] == 0:
                state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
                if pub is not None:
                    pub.start(asyncio.get_running_loop())
            if kind == "faust-librdkafka":
                await slots.acquire()
                asyncio.ensure_future(publish(event.key, event.value))
            elif not kind.startswith("faust-read"):
                fut = await sink.send(key=event.key, value=event.value)
                if kind == "faust-ack":
                    await fut
            state["n"] += 1
            if state["n"] == records:
                wall, cpu = time.perf_counter() - state["t0"], time.process_time() - state["cpu0"]
                Path(out_file).write_text(json.dumps({"records": records, "wall_s": wall, "cpu_s": cpu}))

    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


def child_plain(bootstrap: str, src: str, dst: str, records: int, out_file: str) -> None:
    from wapipe.edge.clients import consumer, producer

    c = consumer(bootstrap, f"hop-{uuid.uuid4().hex[:8]}")
    p = producer(bootstrap, **{"linger.ms": 1})
    c.subscribe([src])
    n, t0, cpu0 = 0, 0.0, 0.0
    while n < records:
        batch = c.consume(num_messages=500, timeout=1.0)
        if batch and n == 0:
            t0, cpu0 = time.perf_counter(), time.process_time()
        for m in batch:
            if m.error():
                continue
            p.produce(dst, value=m.value(), key=m.key())
            n += 1
        p.flush()
        if batch:
            c.commit(asynchronous=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    Path(out_file).write_text(json.dumps({"records": n, "wall_s": wall, "cpu_s": cpu}))
    c.close()


# --- the parent -------------------------------------------------------------------------------------
def run_child(kind: str, bootstrap: str, src: str, records: int, timeout: float) -> dict:
    out = Path(tempfile.mkdtemp(prefix="faust-hop-")) / "result.json"
    dst = f"{src}.{kind}.out"
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, "--bootstrap", bootstrap, "--src", src,
                             "--dst", dst, "--records", str(records), "--out", str(out)], cwd=str(REPO))
    try:
        deadline = time.time() + timeout
        while not out.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"{kind}: the child exited with {proc.returncode} before it finished")
            if time.time() > deadline:
                raise RuntimeError(f"{kind}: no result within {timeout:.0f} s")
            time.sleep(0.2)
        time.sleep(0.1)
        r = json.loads(out.read_text())
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    r["cpu_ms_per_record"] = round(r["cpu_s"] / r["records"] * 1000, 4)
    r["records_per_s"] = round(r["records"] / r["wall_s"], 1)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=30_000)
    ap.add_argument("--child", choices=KINDS)
    ap.add_argument("--bootstrap")
    ap.add_argument("--src")
    ap.add_argument("--dst")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.child:
        if a.child == "plain":
            child_plain(a.bootstrap, a.src, a.dst, a.records, a.out)
        else:
            child_faust(a.bootstrap, a.src, a.dst, a.records, a.out, a.child)
        return 0

    with own_broker(Path(tempfile.mkdtemp(prefix="bench-faust-hop-"))) as bootstrap:
        return measure(bootstrap, a.records)


def measure(bootstrap: str, records: int) -> int:
    from confluent_kafka.admin import NewTopic

    from wapipe.edge.clients import producer
    from wapipe.edge.clients import admin_client

    src = f"bench.hop.{uuid.uuid4().hex[:8]}"
    kinds = KINDS
    admin = admin_client(bootstrap)
    names = [src] + [f"{src}.{k}.out" for k in kinds]
    for f in admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names]).values():
        f.result()
    p = producer(bootstrap)
    for i in range(records):
        p.produce(src, key=f"k{i % 64}".encode(), value=VALUE)
        if i % 10_000 == 0:
            p.poll(0)
    p.flush()
    log(f"{records} records of {len(VALUE)} bytes on {src} ({PARTITIONS} partitions)")
    results = {}
    for kind in kinds:
        try:
            results[kind] = run_child(kind, bootstrap, src, records, timeout=max(120.0, records / 100))
        except RuntimeError as exc:  # a transport that never consumes is a finding, not a crash
            log(f"{kind:10} FAILED: {exc}")
            results[kind] = {"records_per_s": 0.0, "cpu_ms_per_record": None, "error": str(exc)}
            continue
        r = results[kind]
        log(f"{kind:10} {r['records_per_s']:>9,.0f} records/s  {r['cpu_ms_per_record']:.3f} CPU-ms per record")
    base = results["plain"]["cpu_ms_per_record"]
    for kind in KINDS[:-1]:
        if results[kind]["cpu_ms_per_record"] is not None:
            log(f"{kind}: {results[kind]['cpu_ms_per_record'] / base:.1f}x the CPU of the plain loop per record")
    admin.delete_topics(names)
    figures = {}
    for kind in KINDS:
        name = "baseline" if kind == "plain" else kind.replace("-", "_")
        figures[f"{name}_cpu_ms_per_record"] = results[kind]["cpu_ms_per_record"]
        figures[f"{name}_records_per_s"] = results[kind]["records_per_s"]
    print(json.dumps(figures))  # faust_read vs faust_read_confluent: the two transports
    return 0


if __name__ == "__main__":
    sys.exit(main())
