"""Benchmark: signed webhook POSTs per second through `wapipe ingress`, with real Kafka acks.

    python bench/ingress.py [--seconds 20] [--connections 64] [--workers 2]

1. A broker: KAFKA_BOOTSTRAP_SERVERS, else one started here (``KafkaProvider``) and stopped at
   the end. Topics applied.
2. The ingress (``wapipe ingress --workers N``, uvicorn) — every 200 means the RawWebhook is on
   ``wa.webhook.raw`` with acks=all.
3. The baseline, measured in the same run with the same load: the simplest FastAPI handler that
   verifies the signature and processes the payload inline (parse JSON, walk the statuses), served
   by the same uvicorn with the same number of workers. It writes nothing anywhere.
4. Load: ``wrk`` (installed with apt-get when missing and we are root), keep-alive HTTP/1.1, a
   pool of distinct realistic bodies (several statuses each, ~2 KB) signed with the app secret.
   Without wrk, a fallback generator: several processes of raw keep-alive HTTP/1.1 over asyncio.
5. Lost: the topic is read back; every record carries this run's tag. ``lost`` = acked-200
   requests without their record. With wrk (aggregate counts) this is ``max(0, acked - records)``,
   exact when no request failed; the fallback generator tracks every request's own id.

Ends with one JSON line:
``{"webhooks_per_s", "p50_ms", "p99_ms", "baseline_webhooks_per_s", "lost", ...}``.
"""

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wapipe.net import free_port, wait_for_port  # noqa: E402

APP_ID, SECRET = "bench-app", "bench-secret"
STATUSES = ("sent", "delivered", "read")


# --- payloads ------------------------------------------------------------------------------
def webhook_body(tag: str, n: int, statuses: int = 4) -> bytes:
    """A realistic status webhook (Cloud API v23 shape: conversation + pricing), ~2 KB."""
    items = []
    for i in range(statuses):
        items.append({
            "id": f"wamid.HBgNNDkxNTEyMzQ1Njc4OTAVAgARGBI{tag}{n:08d}{i}",
            "status": STATUSES[i % 3], "timestamp": str(1750000000 + n),
            "recipient_id": f"49151{n % 1000000:07d}",
            "biz_opaque_callback_data": f"cmd-{tag}-{n}",
            "conversation": {"id": f"c{n:031d}", "expiration_timestamp": str(1750086400 + n),
                             "origin": {"type": "marketing"}},
            "pricing": {"billable": True, "pricing_model": "PMP", "category": "marketing", "type": "regular"},
        })
    doc = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550783881", "phone_number_id": f"1065403522{n % 16:05d}"},
                  "statuses": items}}]}]}
    return json.dumps(doc, separators=(",", ":")).encode()


def signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


# --- the baseline: the way most integrations do it -----------------------------------------
def create_baseline():
    """FastAPI; verify the signature, parse, walk the statuses inline, answer."""
    from fastapi import FastAPI, HTTPException, Request

    from connectors.meta.signature import verify

    app = FastAPI()
    latest: dict[str, str] = {}

    @app.post("/webhook")
    async def webhook(request: Request):
        body = await request.body()
        if not verify(SECRET.encode(), body, request.headers.get("x-hub-signature-256")):
            raise HTTPException(status_code=401, detail="invalid signature")
        payload = json.loads(body)
        for entry in payload.get("entry", []):
            for change in entry.get("changes", []):
                for status in change.get("value", {}).get("statuses", []):
                    latest[status["id"]] = status["status"]
        return {"ok": True}

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    return app


def serve_baseline(port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run("ingress:create_baseline", factory=True, app_dir=str(Path(__file__).parent), host="127.0.0.1",
                port=port, workers=workers, loop="uvloop", http="httptools", access_log=False, log_level="warning")


# --- load generators -----------------------------------------------------------------------
def ensure_wrk() -> str | None:
    found = shutil.which("wrk")
    if found or os.environ.get("BENCH_NO_WRK"):
        return None if os.environ.get("BENCH_NO_WRK") else found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, env=env)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, env=env)
    return shutil.which("wrk")


def wrk_script(path: Path, tag: str, pool: int) -> None:
    reqs = []
    for n in range(pool):
        body = webhook_body(tag, n)
        reqs.append((body.decode(), signature(body)))
    lines = ["local reqs = {}"]
    for body, sig in reqs:
        lines.append(f'reqs[#reqs+1] = wrk.format("POST", nil, {{["Content-Type"]="application/json", '
                     f'["X-Hub-Signature-256"]="{sig}"}}, {json.dumps(body)})')
    lines += ["local i = 0", "request = function()", "  i = i + 1", "  return reqs[(i % #reqs) + 1]", "end"]
    path.write_text("\n".join(lines) + "\n")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(wrk: str, url: str, seconds: int, connections: int, threads: int, tag: str, pool: int,
            workdir: Path) -> dict:
    script = workdir / f"{tag}.lua"
    wrk_script(script, tag, pool)
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
                          "-s", str(script), url + "/webhook"], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    lat = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50_ms": lat["50"],
            "p99_ms": lat["99"], "requests": total, "acked": total - non2xx, "non_2xx": non2xx,
            "errors": errors, "ids": None}


async def _client(url: str, seconds: float, tag: str, start: int, stride: int, out: dict) -> None:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    n = start
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        body = webhook_body(tag, n)
        head = (f"POST /webhook HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"X-Hub-Signature-256: {signature(body)}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        t = time.perf_counter()
        writer.write(head + body)
        status_line = await reader.readuntil(b"\r\n")
        length = 0
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        out["lat"].append(time.perf_counter() - t)
        (out["acked"] if status_line.split()[1] == b"200" else out["failed"]).append(n)
        n += stride
    writer.close()


def _generator_process(url: str, seconds: float, tag: str, index: int, procs: int, conns: int, q) -> None:
    import uvloop

    out: dict = {"lat": [], "acked": [], "failed": []}

    async def main() -> None:
        stride = procs * conns
        await asyncio.gather(*(_client(url, seconds, tag, index * conns + c, stride, out) for c in range(conns)))

    uvloop.run(main())
    q.put(out)


def run_python_load(url: str, seconds: int, connections: int, procs: int, tag: str) -> dict:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=_generator_process, args=(url, seconds, tag, i, procs, max(1, connections // procs), q))
          for i in range(procs)]
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    lat = sorted(x for r in results for x in r["lat"])
    acked = [n for r in results for n in r["acked"]]
    failed = sum(len(r["failed"]) for r in results)
    q99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    return {"rps": len(lat) / seconds, "p50_ms": statistics.median(lat) * 1000 if lat else float("nan"),
            "p99_ms": q99 * 1000, "requests": len(lat), "acked": len(acked), "non_2xx": failed, "errors": 0,
            "ids": acked}


# --- reading back --------------------------------------------------------------------------
def end_offsets(bootstrap: str) -> dict[int, int]:
    """wa.webhook.raw's end offset per partition: where this run's records will start."""
    from confluent_kafka import KafkaException, TopicPartition

    from wapipe.edge.clients import consumer
    from wapipe.topics import WEBHOOK_RAW

    c = consumer(bootstrap, f"bench-{uuid.uuid4().hex}")
    deadline = time.monotonic() + 30  # a topic created a moment ago may not have its leaders yet
    try:
        while True:
            try:
                md = c.list_topics(WEBHOOK_RAW, timeout=10).topics[WEBHOOK_RAW]
                return {p: c.get_watermark_offsets(TopicPartition(WEBHOOK_RAW, p), timeout=10)[1]
                        for p in md.partitions}
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        c.close()


class ReadBackIncomplete(RuntimeError):
    pass


def records_with_tags(bootstrap: str, tags: list[str], since: dict[int, int],
                      timeout: float = 90.0) -> dict[str, list[bytes]]:
    """Values on wa.webhook.raw written since ``since`` that carry each tag (the raw body is
    inside the Avro bytes, so no decoding is needed to find it)."""
    from confluent_kafka import TopicPartition

    from wapipe.edge.clients import consumer
    from wapipe.topics import WEBHOOK_RAW

    c = consumer(bootstrap, f"bench-{uuid.uuid4().hex}", **{"fetch.max.bytes": 64 * 1024 * 1024})
    found: dict[str, list[bytes]] = {t: [] for t in tags}
    needles = [(t, t.encode()) for t in tags]
    try:
        ends = {p: end for p, end in end_offsets(bootstrap).items() if end > since.get(p, 0)}
        c.assign([TopicPartition(WEBHOOK_RAW, p, since.get(p, 0)) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise ReadBackIncomplete(f"read back only {sorted(done)} of partitions {sorted(ends)} in {timeout}s")
            for m in c.consume(5000, timeout=0.5):
                if m.error():
                    continue
                v = m.value()
                for t, needle in needles:
                    if needle in v:
                        found[t].append(v)
                        break
                if m.offset() >= ends[m.partition()] - 1:
                    done.add(m.partition())
    finally:
        c.close()
    return found


def count_lost(result: dict, values: list[bytes], tag: str) -> int:
    if result["ids"] is None:  # wrk: aggregate counts
        return max(0, result["acked"] - len(values))
    seen = {int(m.group(1)) for v in values for m in [re.search(rb"cmd-" + tag.encode() + rb"-(\d+)", v)] if m}
    return sum(1 for n in result["ids"] if n not in seen)


# --- the run -------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=20, help="measured seconds per server")
    ap.add_argument("--warmup", type=int, default=5, help="seconds of load before each measurement")
    ap.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes (ingress and baseline)")
    ap.add_argument("--server", choices=["granian", "uvicorn"], default="granian", help="the ingress's HTTP server")
    ap.add_argument("--pool", type=int, default=2000, help="distinct signed bodies cycled by wrk")
    ap.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--generator-procs", type=int, default=2)
    args = ap.parse_args()

    from producers.ingress.process import IngressProcess, wait_until
    from wapipe.config import Settings
    from wapipe.edge.clients import admin_client
    from wapipe.topics import apply_topics

    wrk = None if args.generator == "python" else ensure_wrk()
    if args.generator == "wrk" and wrk is None:
        print("wrk is not available", file=sys.stderr)
        return 1
    gen_name = "wrk" if wrk else f"python asyncio x{args.generator_procs} processes"
    run_id = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-ingress-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        base = Settings()
        settings = Settings.under(workdir / "state", kafka_bootstrap_servers=base.kafka_bootstrap_servers)
        if settings.kafka_bootstrap_servers:
            bootstrap = settings.kafka_bootstrap_servers
            print(f"broker: {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)", flush=True)
        else:
            from wapipe.app.stack.local import KafkaProvider

            provider = KafkaProvider(settings, data_dir=workdir / "kafka-data")
            bootstrap = provider.start()
            stack.callback(provider.stop)
            print(f"broker: {bootstrap} (started here, {provider.source})", flush=True)
        apply_topics(admin_client(bootstrap), settings)
        since = end_offsets(bootstrap)

        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "WAPIPE_META_APPS": json.dumps({APP_ID: SECRET}),
               "WAPIPE_LOG_LEVEL": "WARNING"}

        def load(url: str, tag: str, seconds: int) -> dict:
            if wrk:
                return run_wrk(wrk, url, seconds, args.connections, 1, tag, args.pool, workdir)
            return run_python_load(url, seconds, args.connections, args.generator_procs, tag)

        # --- the ingress ------------------------------------------------------------------
        print(f"ingress: {args.server}, {args.workers} worker(s), {args.connections} connections, {gen_name}, "
              f"{args.seconds}s (+{args.warmup}s warm-up)", flush=True)
        ing = stack.enter_context(IngressProcess(env, workers=args.workers, server=args.server,
                                                 log_path=workdir / "ingress.log"))
        import httpx

        assert wait_until(lambda: httpx.get(ing.url + "/readyz").status_code == 200, 30), "ingress not ready"
        warm_tag, tag = f"w{run_id}", f"m{run_id}"
        warm = load(ing.url, warm_tag, args.warmup)
        res = load(ing.url, tag, args.seconds)
        ing.stop()

        # --- the baseline -----------------------------------------------------------------
        port = free_port()
        base_proc = subprocess.Popen([sys.executable, __file__, "--_serve-baseline", str(port), str(args.workers)],
                                     env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL)
        stack.callback(lambda: (base_proc.terminate(), base_proc.wait(20)))
        wait_for_port("127.0.0.1", port, timeout=30)
        burl = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: httpx.get(burl + "/healthz").status_code == 200, 30)
        print(f"baseline: FastAPI inline handler on uvicorn, {args.workers} worker(s)", flush=True)
        load(burl, f"bw{run_id}", args.warmup)
        bres = load(burl, f"b{run_id}", args.seconds)
        base_proc.terminate()
        base_proc.wait(20)

        # --- lost? ------------------------------------------------------------------------
        found = records_with_tags(bootstrap, [warm_tag, tag], since)
        lost = count_lost(res, found[tag], tag) + count_lost(warm, found[warm_tag], warm_tag)

    ratio = res["rps"] / bres["rps"] if bres["rps"] else float("nan")
    print()
    print(f"{'':10} {'webhooks/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'non-2xx':>8} {'errors':>7}")
    for name, r in (("ingress", res), ("baseline", bres)):
        print(f"{name:10} {r['rps']:11.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['requests']:9d} "
              f"{r['non_2xx']:8d} {r['errors']:7d}")
    print(f"ingress / baseline = {ratio:.2f}x  (the ingress also waits for Kafka acks=all; the baseline writes nothing)")
    print(f"wa.webhook.raw holds {len(found[tag])} records of the measured run for {res['acked']} acked requests; lost = {lost}")
    print(json.dumps({"webhooks_per_s": round(res["rps"], 1), "p50_ms": round(res["p50_ms"], 2),
                      "p99_ms": round(res["p99_ms"], 2), "baseline_webhooks_per_s": round(bres["rps"], 1),
                      "lost": lost, "ratio": round(ratio, 3), "acked": res["acked"],
                      "non_2xx": res["non_2xx"], "errors": res["errors"], "workers": args.workers, "server": args.server,
                      "connections": args.connections, "generator": "wrk" if wrk else "python"}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--_serve-baseline":
        serve_baseline(int(sys.argv[2]), int(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
