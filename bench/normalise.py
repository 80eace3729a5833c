"""Normaliser throughput: how many raw status webhooks one ``wapipe normalise`` turns into events.

N RawWebhooks (each with ``--statuses`` statuses of distinct messages, the shape Meta sends) are
put on ``wa.webhook.raw`` first; then ``wapipe normalise`` (a subprocess, fresh app id and state
dir) starts, and the clock runs from its READY line until every status event is on
``wa.status.events``. Figures: webhooks/s, status events/s, the normaliser's CPU-ms per webhook.
The baseline, in the same run, is the conversion alone (``Normaliser.convert`` on the same decoded
webhooks in this process, no Kafka, sealing left out): what the stream, Kafka and sealing cost on
top of the parsing.

    python bench/normalise.py [--webhooks 4000] [--statuses 4]

Starts and stops its own broker unless KAFKA_BOOTSTRAP_SERVERS is set. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from own_broker import own_broker  # noqa: E402
from proc_cpu import cpu_seconds  # noqa: E402

from wapipe.app.services import ServiceSpec, Supervisor  # noqa: E402
from wapipe.config import Settings  # noqa: E402

STATUSES = ("sent", "delivered", "read")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def webhook(run: str, n: int, statuses: int, pnid: str) -> bytes:
    items = [{"id": f"wamid.{run}.{n}.{i}", "status": STATUSES[i % 3], "timestamp": str(1750000000 + n),
              "recipient_id": f"49151{n % 1000000:07d}", "biz_opaque_callback_data": f"bench/{run}-{n}",
              "conversation": {"id": f"c{n:031d}", "origin": {"type": "marketing"}},
              "pricing": {"billable": True, "pricing_model": "PMP", "category": "marketing", "type": "regular"}}
             for i in range(statuses)]
    doc = {"object": "whatsapp_business_account", "entry": [{"id": "2900000001", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
        "statuses": items}}]}]}
    return json.dumps(doc).encode()


def count_status_events(bootstrap: str, run: str, want: int, timeout: float) -> tuple[int, float]:
    """Read wa.status.events from the start until ``want`` events of this run are there; returns
    (count, time the last one was read)."""
    from wapipe.avro import AvroSerde
    from wapipe.edge.clients import consumer
    from wapipe.topics import STATUS_EVENTS

    serde = AvroSerde()
    c = consumer(bootstrap, f"bench-normalise-reader-{uuid.uuid4().hex[:8]}")
    c.subscribe([STATUS_EVENTS])
    got, last = 0, time.monotonic()
    deadline = time.monotonic() + timeout
    # by Meta's echo of our callback data: the events carry the wamid's keyed ref, never the wamid
    marker = f"bench/{run}-"
    try:
        while got < want and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is None and (serde.decode(m.value(), "StatusEvent")["biz_opaque_callback_data"]
                                          or "").startswith(marker):
                    got += 1
                    last = time.monotonic()
    finally:
        c.close()
    return got, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--webhooks", type=int, default=4000)
    ap.add_argument("--statuses", type=int, default=4)
    a = ap.parse_args()

    with own_broker(Path(tempfile.mkdtemp(prefix="bench-normalise-"))) as bootstrap:
        return measure(bootstrap, a.webhooks, a.statuses)


def measure(bootstrap: str, webhooks: int, per: int) -> int:
    from wapipe.avro import AvroSerde
    from wapipe.edge.clients import producer
    from wapipe.edge.clients import admin_client
    from wapipe.topics import WEBHOOK_RAW, apply_topics

    tmp = Path(tempfile.mkdtemp(prefix="bench-normalise-state-"))
    settings = Settings.under(tmp / "state", kafka_bootstrap_servers=bootstrap)
    apply_topics(admin_client(bootstrap), settings)
    serde = AvroSerde()
    run = uuid.uuid4().hex[:8]
    raws = []
    p = producer(bootstrap)
    for n in range(webhooks):
        pnid = f"10654035{n % 16:04d}"
        rec = {"ingress_id": f"{run}-{n}", "received_at": dt.datetime.now(dt.timezone.utc), "app_id": "bench",
               "signature_verified": True, "headers": {}, "body": webhook(run, n, per, pnid)}
        raws.append(rec)
        p.produce(WEBHOOK_RAW, key=pnid.encode(), value=serde.encode("RawWebhook", rec, topic=WEBHOOK_RAW))
        if n % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    want = webhooks * per
    log(f"{webhooks} raw webhooks x {per} statuses on {WEBHOOK_RAW}")

    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "WAPIPE_STATE_DIR": str(tmp / "state"),
           "WAPIPE_NORMALISE_APP_ID": f"bench-normalise-{run}", "WAPIPE_NORMALISE_OFFSET_RESET": "earliest"}
    with Supervisor(tmp / "logs") as sup:  # stops the normaliser however this ends
        svc = sup.start(ServiceSpec("normalise", ("normalise",), env=env, ready_timeout=120, stop_timeout=20))
        t0, cpu0 = time.monotonic(), cpu_seconds(svc.pid)
        got, t_last = count_status_events(bootstrap, run, want, timeout=max(120.0, webhooks / 10))
        cpu1 = cpu_seconds(svc.pid)  # the reader stops at the last event: CPU after it is idle time
    elapsed = t_last - t0
    log(f"normaliser: {got}/{want} status events in {elapsed:.1f}s")

    # Baseline: the conversion alone, same webhooks, this process; sealing is left out (a stand-in
    # returns a fixed envelope), so the gap to the normaliser is the stream, Kafka and the sealing.
    from processors.normalise.convert import Normaliser

    class _NoTenants:
        def tenant_for_number(self, phone_number_id):
            return None

        def tenant_for_waba(self, waba_id):
            return None

    from wapipe.privacy.wamids import WamidRefs

    norm = Normaliser(_NoTenants(), lambda scope, subject, data: {"key_id": "k", "nonce": b"", "ciphertext": b"x"},
                      lambda scope, wa: f"s-{wa}", wamid_ref=WamidRefs.from_pepper(b"bench-pepper-0123456789"))
    decoded = [serde.decode(serde.encode("RawWebhook", r, topic=WEBHOOK_RAW), "RawWebhook") for r in raws]
    b0 = time.process_time()
    events = sum(len(norm.convert(r)) for r in decoded)
    base_cpu = time.process_time() - b0
    result = {
        "webhooks_per_s": round(webhooks / elapsed, 1) if got == want else 0.0,
        "status_events_per_s": round(got / elapsed, 1),
        "cpu_ms_per_webhook": round((cpu1 - cpu0) / webhooks * 1000, 3),
        "baseline_convert_cpu_ms_per_webhook": round(base_cpu / webhooks * 1000, 3),
        "events": got, "expected": want, "baseline_events": events,
    }
    log(f"{result['webhooks_per_s']:,.0f} webhooks/s ({result['status_events_per_s']:,.0f} status events/s), "
        f"{result['cpu_ms_per_webhook']:.2f} CPU-ms per webhook; the conversion alone (no sealing): "
        f"{result['baseline_convert_cpu_ms_per_webhook']:.2f} CPU-ms per webhook")
    print(json.dumps(result))
    return 0 if got == want else 1


if __name__ == "__main__":
    sys.exit(main())
