"""Dispatch benchmark: a campaign of N messages over K numbers through the real pipeline
(`wapipe worker` as a subprocess, the real broker) against the Meta sandbox (a subprocess, 50 ms
added latency by default), and, in the same run and against the same sandbox, a baseline: a plain
asyncio + httpx loop pacing each number with ``sleep(1/limit)``, the way a typical integration sends.

Figures: achieved msg/s per number as % of its limit (utilization_min is the worst number, measured
over the steady middle of its run), the most requests the sandbox saw in any sliding 1 s window per
number, 130429s received, duplicates and lost commands (sandbox counters by
biz_opaque_callback_data), p50/p99 command→Graph latency at a steady load, transactional p99 while
the campaign runs, worker and broker CPU-ms per message. The last line is JSON.

    python bench/dispatch.py [--messages 30000] [--limits 1000] [--latency-ms 50]

Defaults (issue 19): one tenant, one number limited to 1,000 msg/s, 30,000 campaign messages,
transactional probes during the campaign, one worker process; ``--limits 1000,1000,80`` is the old
three-number scenario, ``--limits 80 --messages 3000`` the tier most numbers are on.

Starts and stops its own broker and sandbox unless KAFKA_BOOTSTRAP_SERVERS is set (then uses that
broker; the sandbox is always its own). The absolute numbers depend on this machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import copy
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydantic import SecretStr  # noqa: E402

from proc_cpu import cpu_seconds_all  # noqa: E402
from wapipe.config import Settings  # noqa: E402
from wapipe.app.services import ServiceSpec, Supervisor  # noqa: E402

WABA, BUSINESS, APP, TOKEN = "2900000001", "2800000001", "2700000001", "EAAbenchTOKEN"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def max_in_window(times: list[float]) -> int:
    times = sorted(times)
    return max((bisect.bisect_right(times, t + 1.0 - 1e-9) - i for i, t in enumerate(times)), default=0)


def seed(numbers: dict[str, int], latency_ms: float) -> dict:
    return {
        "config": {"latency": {"kind": "fixed", "a": latency_ms}, "record_messages": True,
                   "limits": {"pair_burst": 45, "pair_interval_s": 6.0}},
        "apps": [{"id": APP, "secret": "bench-secret"}],
        "businesses": [{"id": BUSINESS, "name": "Bench Co", "tier": "TIER_UNLIMITED"}],
        "wabas": [{"id": WABA, "business_id": BUSINESS}],
        "numbers": [{"id": n, "waba_id": WABA, "throughput": t, "display_phone_number": "1555" + n[-7:]}
                    for n, t in numbers.items()],
        "templates": [{"waba_id": WABA, "name": "hello_world", "language": "en_US", "category": "UTILITY",
                       "body_params": 0}],
        "tokens": [{"token": TOKEN, "app_id": APP, "waba_ids": [WABA]}],
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
        self.sup = Supervisor(self.tmp / "logs")
        self.provider = None
        self.limits = args.limits
        self.numbers = {f"37{random.randint(10**7, 10**8 - 1)}": lim for lim in self.limits}
        self.base_numbers = {f"36{random.randint(10**7, 10**8 - 1)}": lim for lim in self.limits}
        self.tenant = f"bench{uuid.uuid4().hex[:6]}"
        self.recipients = 0

    # --- set-up ----------------------------------------------------------------------------------
    def start(self) -> None:
        from wapipe.edge.clients import admin_client
        from wapipe.topics import apply_topics

        kek = base64.b64encode(os.urandom(32)).decode()
        pepper = base64.b64encode(os.urandom(32)).decode()
        base = Settings()
        bootstrap = base.kafka_bootstrap_servers
        if not bootstrap:
            from wapipe.app.stack.local import KafkaProvider

            self.provider = KafkaProvider(Settings.under(self.tmp / "stack"), data_dir=self.tmp / "kafka")
            bootstrap = self.provider.start()
            log(f"started a Kafka broker at {bootstrap}")
        self.bootstrap = bootstrap
        self.s = Settings.under(self.tmp / "state", kafka_bootstrap_servers=bootstrap, kek=SecretStr(kek),
                               subject_pepper=SecretStr(pepper))
        apply_topics(admin_client(bootstrap), self.s)
        seed_path = self.tmp / "seed.json"
        seed_path.write_text(json.dumps(seed({**self.numbers, **self.base_numbers}, self.a.latency_ms)))
        sb = self.sup.start(ServiceSpec("sandbox", ("sandbox",), args=("--seed", str(seed_path)), ready_timeout=60))
        self.sandbox_url = sb.ready_value
        from connectors.meta.sandbox.control_client import SandboxControl

        self.control = SandboxControl(self.sandbox_url, timeout=120)
        log(f"sandbox at {self.sandbox_url} ({self.a.latency_ms:.0f} ms latency)")
        self.env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "WAPIPE_STATE_DIR": str(self.tmp / "state"),
                    "WAPIPE_KEK": kek, "WAPIPE_SUBJECT_PEPPER": pepper, "WAPIPE_META_GRAPH_URL": self.sandbox_url,
                    "WAPIPE_SEND_APP_ID": f"bench-{self.tenant}",
                    # a shared broker has history: a new group starts at the end (see warm_up)
                    "WAPIPE_SEND_OFFSET_RESET": "earliest" if self.provider else "latest",
                    "WAPIPE_LOG_LEVEL": os.environ.get("WAPIPE_LOG_LEVEL", "INFO")}
        self._publish_tenant()

    def _publish_tenant(self) -> None:
        from wapipe.edge.clients import producer as make_producer
        from wapipe.privacy.kek import load_kek
        from wapipe.tenants.models import PhoneNumber, Template, Tenant, TenantStatus
        from wapipe.tenants.store import publish_template, publish_tenant

        t = Tenant(tenant_id=self.tenant, status=TenantStatus.ACTIVE, business_id=BUSINESS, waba_id=WABA,
                   numbers=tuple(PhoneNumber(phone_number_id=n, throughput_mps=lim) for n, lim in self.numbers.items()),
                   messaging_limit=0).with_token(load_kek(self.s), TOKEN)
        p = make_producer(self.bootstrap)
        publish_tenant(p, t)
        publish_template(p, Template(tenant_id=self.tenant, waba_id=WABA, name="hello_world", language="en_US",
                                     status="APPROVED"))

    def stop(self) -> None:
        self.sup.stop_all()
        if self.provider is not None:
            self.provider.stop()

    # --- commands --------------------------------------------------------------------------------
    def build(self, erp, n_per_number: dict[str, int], *, prefix: str, lane: str, campaign: str | None) -> list[dict]:
        """Commands to distinct-enough recipients (pair rate: <= 40 per recipient per number), each
        recipient sealed once and its sealed payload reused (the ERP would seal each; the broker
        and the pipeline see the same bytes either way)."""
        from producers.erp import Lane, Routing, template

        out = []
        for n, count in n_per_number.items():
            per_recipient = 20  # well inside Meta's pair burst of 45
            proto = None
            for i in range(count):
                if i % per_recipient == 0:
                    self.recipients += 1
                    to = f"49{n[-4:]}{self.recipients:07d}"
                    proto = erp.command(template(to, "hello_world"),
                                        Routing(tenant_id=self.tenant, phone_number_id=n, idempotency_key="x",
                                                lane=Lane(lane), campaign_id=campaign))
                c = copy.copy(proto)
                c["command_id"] = str(uuid.uuid4())
                c["idempotency_key"] = f"{prefix}-{n}-{i}"
                out.append(c)
        random.shuffle(out)
        return out

    # --- the pipeline run ------------------------------------------------------------------------
    def run_pipeline(self) -> dict:
        from producers.erp import ErpProducer, ResultReader

        erp = ErpProducer.from_settings(self.s, self.bootstrap)
        reader = ResultReader(self.bootstrap, from_beginning=True)
        total_limit = sum(self.numbers.values())
        per_number = {n: max(1, round(self.a.messages * lim / total_limit)) for n, lim in self.numbers.items()}
        campaign = self.build(erp, per_number, prefix="c", lane="CAMPAIGN", campaign="bench")
        n_campaign = len(campaign)
        log(f"built {n_campaign} campaign commands for {len(self.numbers)} numbers {list(self.numbers.values())}")
        program = None
        if os.environ.get("BENCH_PROFILE"):  # cProfile the worker; written on its clean stop
            program = (sys.executable, "-m", "cProfile", "-o", os.environ["BENCH_PROFILE"], "-m", "wapipe", "worker")
        # Each worker its own state dir: its dedup table is a RocksDB database there, one process each.
        workers = [self.sup.start(ServiceSpec(f"worker-{i}", ("worker",), ready_timeout=120,
                                              env={**self.env, "WAPIPE_STATE_DIR": str(self.tmp / f"state-worker-{i}")},
                                              stop_timeout=30, program=program if i == 0 else None))
                   for i in range(self.a.workers)]
        time.sleep(2.0 if self.a.workers > 1 else 0.0)  # let the group settle on its final assignment
        self.warm_up(erp, reader)
        cpu0 = cpu_seconds_all([w.pid for w in workers])
        broker = [self.provider.pid] if self.provider is not None and self.provider.pid else []
        bcpu0 = cpu_seconds_all(broker) if broker else None
        t_pub = time.time()
        erp.publish(campaign)
        log(f"published in {time.time() - t_pub:.1f}s; the campaign runs")
        # transactional probes while the campaign runs, on the fastest number
        fastest = max(self.numbers, key=self.numbers.get)
        probes: list[dict] = []
        expected_s = max(n / self.numbers[num] for num, n in per_number.items())
        t_end_probes = time.time() + expected_s * 0.8
        i = 0
        while time.time() < t_end_probes:
            probes += self.build(erp, {fastest: 1}, prefix=f"tx{i}", lane="TRANSACTIONAL", campaign=None)
            erp.publish(probes[-1:])
            i += 1
            time.sleep(0.2)
        keys = {(self.tenant, c["idempotency_key"]) for c in campaign + probes}
        final = reader.wait_final(keys, timeout=expected_s * 3 + 60)
        t_done = time.time()
        cpu1 = cpu_seconds_all([w.pid for w in workers])
        bcpu1 = cpu_seconds_all(broker) if broker else None
        log(f"{len(final)}/{len(keys)} final results after {t_done - t_pub:.1f}s")

        # steady phase: 30 % of the aggregate limit, for command->Graph latency without a backlog
        steady: list[dict] = []
        rate = 0.3 * total_limit
        t0 = time.time()
        while time.time() - t0 < self.a.steady_s:
            batch = self.build(erp, {n: max(1, round(rate * 0.1 * lim / total_limit)) for n, lim in self.numbers.items()},
                               prefix=f"s{len(steady)}", lane="CAMPAIGN", campaign="steady")
            erp.publish(batch)
            steady += batch
            time.sleep(max(0.0, 0.1 - (time.time() - t0) % 0.1))
        steady_final = reader.wait_final({(self.tenant, c["idempotency_key"]) for c in steady}, timeout=60)

        msgs = self.control.messages()
        counters = self.control.counters()
        at_by_key: dict[str, list[float]] = defaultdict(list)
        for m in msgs:
            if m["phone_number_id"] in self.numbers and m.get("biz_opaque_callback_data"):
                at_by_key[m["biz_opaque_callback_data"].split("/", 1)[1]].append(m["at"])
        util, windows = {}, {}
        for n, lim in self.numbers.items():
            times = sorted(m["at"] for m in msgs if m["phone_number_id"] == n
                           and (m.get("biz_opaque_callback_data") or "").split("/", 1)[-1].startswith("c-"))
            # steady middle: drop the first and last 10 % of the number's campaign (start-up and
            # tail); every send of the number in it counts (the transactional probes use it too)
            lo, hi = times[len(times) // 10], times[len(times) * 9 // 10]
            mid = [m["at"] for m in msgs if m["phone_number_id"] == n and lo <= m["at"] <= hi]
            util[n] = (len(mid) - 1) / (hi - lo) / lim if hi > lo else 0.0
            windows[n] = counters["numbers"].get(n, {}).get("max_requests_1s", 0)
        dup = sum(1 for k in [c["idempotency_key"] for c in campaign + probes + steady] if len(at_by_key.get(k, [])) > 1)
        lost = sum(1 for c in campaign + probes if c["idempotency_key"] not in at_by_key)
        throttled = sum(counters["numbers"].get(n, {}).get("rejected", {}).get("130429", 0) for n in self.numbers)
        req_at = {c["idempotency_key"]: c["requested_at"].timestamp() for c in probes + steady}
        tx_lat = [(at_by_key[c["idempotency_key"]][0] - req_at[c["idempotency_key"]]) * 1000
                  for c in probes if c["idempotency_key"] in at_by_key]
        steady_lat = [(at_by_key[c["idempotency_key"]][0] - req_at[c["idempotency_key"]]) * 1000
                      for c in steady if c["idempotency_key"] in at_by_key]
        camp_times = sorted(t for k, ts in at_by_key.items() if k.startswith("c-") for t in ts)
        agg = (len(camp_times) - 1) / (camp_times[-1] - camp_times[0]) if len(camp_times) > 1 else 0.0
        outcomes = Counter(r["outcome"] for r in final.values())
        erp.close()
        reader.close()
        for w in workers:
            self.sup.stop(w)
        return {
            "workers": self.a.workers,
            "per_number": {n: {"limit": lim, "utilization": round(util[n], 4), "max_requests_1s": windows[n]}
                           for n, lim in self.numbers.items()},
            "utilization_min": round(min(util.values()), 4),
            "over_limit_windows": sum(1 for n, lim in self.numbers.items() if windows[n] > lim),
            "throttled_130429": throttled, "duplicates": dup, "lost": lost,
            "outcomes": dict(outcomes), "final_results": len(final), "commands": len(keys),
            "aggregate_msgs_per_s": round(agg, 1),
            "p50_ms": round(pct(steady_lat, 0.5), 1), "p99_ms": round(pct(steady_lat, 0.99), 1),
            "steady_results": len(steady_final),
            "transactional_p50_ms": round(pct(tx_lat, 0.5), 1), "transactional_p99_ms": round(pct(tx_lat, 0.99), 1),
            "transactional_probes": len(tx_lat),
            "cpu_s_per_1000": round((cpu1 - cpu0) / max(1, len(final)) * 1000, 3) if cpu0 is not None else None,
            "worker_cpu_ms_per_msg": round((cpu1 - cpu0) / max(1, len(final)) * 1000, 3) if cpu0 is not None else None,
            "broker_cpu_ms_per_msg": (round((bcpu1 - bcpu0) / max(1, len(final)) * 1000, 3)
                                      if bcpu0 is not None and bcpu1 is not None else None),
        }

    def warm_up(self, erp, reader) -> None:
        """One command per lane topic, resent until its result arrives: the worker's consumers
        are positioned (matters with offset reset "latest" on a shared broker)."""
        n = next(iter(self.numbers))
        for i, lane in enumerate(("TRANSACTIONAL", "CAMPAIGN")):
            for attempt in range(12):
                cmd = self.build(erp, {n: 1}, prefix=f"warm{i}-{attempt}", lane=lane,
                                 campaign="warm" if lane == "CAMPAIGN" else None)
                erp.publish(cmd)
                if reader.wait_final({(self.tenant, cmd[0]["idempotency_key"])}, timeout=5):
                    break
            else:
                raise RuntimeError(f"the worker does not answer on the {lane} lane")
        log("worker warmed up")

    # --- the baseline -----------------------------------------------------------------------------
    def run_baseline(self) -> dict:
        import httpx

        total_limit = sum(self.base_numbers.values())
        per_number = {n: max(1, round(self.a.baseline_messages * lim / total_limit)) for n, lim in self.base_numbers.items()}
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", "type": "template",
                "template": {"name": "hello_world", "language": {"code": "en_US"}}}
        stats = Counter()

        async def number_loop(client: httpx.AsyncClient, n: str, count: int, limit: int) -> None:
            sem = asyncio.Semaphore(200)
            tasks = []

            async def one(i: int) -> None:
                async with sem:
                    payload = {**body, "to": f"48{n[-4:]}{i // 20:07d}", "biz_opaque_callback_data": f"base/{n}-{i}"}
                    for _ in range(20):
                        r = await client.post(f"/v23.0/{n}/messages", json=payload,
                                              headers={"Authorization": f"Bearer {TOKEN}"})
                        if r.status_code == 200:
                            stats["sent"] += 1
                            return
                        stats[f"error_{r.json().get('error', {}).get('code')}"] += 1
                        await asyncio.sleep(1.0)

            start = time.monotonic()
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / limit - time.monotonic()))
                tasks.append(asyncio.ensure_future(one(i)))
            await asyncio.gather(*tasks)

        async def main() -> float:
            async with httpx.AsyncClient(base_url=self.sandbox_url, timeout=30,
                                         limits=httpx.Limits(max_connections=600, max_keepalive_connections=600)) as c:
                t0 = time.monotonic()
                await asyncio.gather(*(number_loop(c, n, per_number[n], lim) for n, lim in self.base_numbers.items()))
                return time.monotonic() - t0

        elapsed = asyncio.run(main())
        msgs = [m for m in self.control.messages() if m["phone_number_id"] in self.base_numbers]
        times = sorted(m["at"] for m in msgs)
        counters = self.control.counters()["numbers"]
        return {
            "baseline_msgs_per_s": round((len(times) - 1) / (times[-1] - times[0]), 1) if len(times) > 1 else 0.0,
            "baseline_elapsed_s": round(elapsed, 1),
            "baseline_throttled_130429": sum(counters.get(n, {}).get("rejected", {}).get("130429", 0)
                                             for n in self.base_numbers),
            "baseline_over_limit_windows": sum(1 for n, lim in self.base_numbers.items()
                                               if counters.get(n, {}).get("max_requests_1s", 0) > lim),
            "baseline_sent": stats["sent"],
        }


def limits_arg(text: str) -> list[int]:
    """``1000,1000,80``: each number's limit, 1..1,000 msg/s (Meta's range); anything else is a usage error."""
    try:
        limits = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not limits or len(limits) > 20 or any(not 1 <= x <= 1000 for x in limits):
        raise argparse.ArgumentTypeError("1 to 20 limits, each between 1 and 1000 msg/s")
    return limits


def bounded(kind: type, lo: float, hi: float):
    """An argparse type: a ``kind`` (int or float) between ``lo`` and ``hi``, else a usage error."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not lo <= v <= hi:  # (also refuses nan)
            raise argparse.ArgumentTypeError(f"between {lo:,} and {hi:,}")
        return v

    return parse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # string defaults: argparse runs ``type`` on them too, so BENCH_* values are checked like options
    # every size bounded: the commands are built in memory, each worker is a process
    ap.add_argument("--messages", type=bounded(int, 1, 1_000_000), default=os.environ.get("BENCH_MESSAGES", "30000"))
    ap.add_argument("--limits", type=limits_arg, default=os.environ.get("BENCH_LIMITS", "1000"),
                    help="throughput limit of each number (msg/s), comma-separated")
    ap.add_argument("--latency-ms", type=bounded(float, 0, 5_000), default="50")
    ap.add_argument("--steady-s", type=bounded(float, 0, 600), default="5")
    ap.add_argument("--workers", type=bounded(int, 1, 16), default=os.environ.get("BENCH_WORKERS", "1"),
                    help="worker processes (partitions are shared among them)")
    ap.add_argument("--baseline-messages", type=bounded(int, 1, 100_000), default="5000")
    args = ap.parse_args()
    b = Bench(args)
    try:
        b.start()
        result = b.run_pipeline()
        log(f"pipeline: {json.dumps(result)}")
        base = b.run_baseline()
        log(f"baseline: {json.dumps(base)}")
    finally:
        b.stop()
    summary = {k: result[k] for k in ("utilization_min", "over_limit_windows", "throttled_130429", "duplicates",
                                      "lost", "worker_cpu_ms_per_msg", "broker_cpu_ms_per_msg",
                                      "transactional_p99_ms", "aggregate_msgs_per_s")}
    summary["baseline_msgs_per_s"] = base["baseline_msgs_per_s"]
    summary["limits"] = b.limits
    summary.update({k: result[k] for k in ("p99_ms", "transactional_probes", "final_results", "commands")})
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
