"""The demo's workload: commands built with the ERP SDK (a bulk campaign per tenant,
transactional messages during it, invalid commands, duplicates, unreadable records) and published
to ``wa.send.requested``; then the live progress and the checks."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wapipe.app.demo.plan import INVALID_KINDS, UNKNOWN_TENANT, DemoError, DemoTenant
from wapipe.app.demo.progress import show_progress
from wapipe.app.demo.tracker import Tracker
from wapipe.app.demo.verify import finish

if TYPE_CHECKING:
    from wapipe.app.demo.run import DemoRun


@dataclass
class Groups:
    """Command ids by what they are, for the progress bars and the checks."""

    campaign: dict[str, set[str]] = field(default_factory=dict)  # tenant -> ids
    transactional: set[str] = field(default_factory=set)
    invalid: set[str] = field(default_factory=set)
    duplicate: set[str] = field(default_factory=set)

    def all(self) -> set[str]:
        out = set(self.transactional) | self.invalid | self.duplicate
        for ids in self.campaign.values():
            out |= ids
        return out


class Publisher(threading.Thread):
    """Builds the workload's commands with the ERP SDK and publishes them, campaign chunks
    interleaved across tenants, transactional messages and the odd ones spread through it."""

    def __init__(self, run: "DemoRun", erp, groups: Groups, chunk: int = 250) -> None:
        super().__init__(name="demo-publisher", daemon=True)
        self.run_ = run
        self.erp = erp
        self.groups = groups
        self.chunk = chunk
        self.published = 0
        self.built = 0
        self.to_build = 0
        self.total = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            self._publish_all()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _publish_all(self) -> None:
        from producers.erp.commands import Lane, Routing, template, text

        plan, tenants, run_id = self.run_.plan, self.run_.plan.tenants(), self.run_.run_id
        sizes = plan.campaign_split()
        campaigns = {t.tenant_id: f"spring-{run_id}-{t.tenant_id.removeprefix('demo-')}" for t in tenants}
        # Failing recipients replace the first campaign recipients of each tenant.
        fail_by_tenant: dict[str, list[str]] = {}
        for i, wa in enumerate(self.run_.failing):
            fail_by_tenant.setdefault(tenants[i % len(tenants)].tenant_id, []).append(wa)

        def campaign_cmds(t: DemoTenant, n: int):
            fails = fail_by_tenant.get(t.tenant_id, [])
            for i in range(n):
                to = fails[i] if i < len(fails) else t.recipient(i)
                routing = Routing(tenant_id=t.tenant_id, phone_number_id=t.phone_number_id,
                                  idempotency_key=f"{campaigns[t.tenant_id]}/{i}", lane=Lane.CAMPAIGN,
                                  campaign_id=campaigns[t.tenant_id], metadata={"erp_doc": f"mailing-{i}"})
                yield self.erp.command(template(to, "spring_sale", body=[f"customer {i}"]), routing)

        def transactional_cmd(k: int):
            t = tenants[k % len(tenants)]
            routing = Routing(tenant_id=t.tenant_id, phone_number_id=t.phone_number_id,
                              idempotency_key=f"invoice-{run_id}-{k}", lane=Lane.TRANSACTIONAL,
                              metadata={"erp_doc": f"INV-{k}"})
            return self.erp.command(template(t.recipient(5_000_000 + k), "order_update",
                                             body=[f"INV-{k}", "shipped"]), routing)

        def invalid_cmd(k: int):
            kind = INVALID_KINDS[k % len(INVALID_KINDS)]
            t, other = tenants[k % len(tenants)], tenants[(k + 1) % len(tenants)]
            to = t.recipient(6_000_000 + k)
            key = f"bad-{run_id}-{k}"
            if kind == "unknown template":
                return kind, self.erp.command(template(to, "no_such_template", body=["x"]),
                                              Routing(tenant_id=t.tenant_id, phone_number_id=t.phone_number_id,
                                                      idempotency_key=key))
            if kind == "wrong parameter count":
                return kind, self.erp.command(template(to, "order_update", body=["only one"]),
                                              Routing(tenant_id=t.tenant_id, phone_number_id=t.phone_number_id,
                                                      idempotency_key=key))
            if kind == "number of another tenant":
                return kind, self.erp.command(template(to, "order_update", body=["a", "b"]),
                                              Routing(tenant_id=t.tenant_id, phone_number_id=other.phone_number_id,
                                                      idempotency_key=key))
            if kind == "unknown tenant":
                return kind, self.erp.command(template(to, "order_update", body=["a", "b"]),
                                              Routing(tenant_id=UNKNOWN_TENANT, phone_number_id=t.phone_number_id,
                                                      idempotency_key=key))
            if kind.startswith("expired"):
                past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
                return kind, self.erp.command(template(to, "order_update", body=["a", "b"]),
                                              Routing(tenant_id=t.tenant_id, phone_number_id=t.phone_number_id,
                                                      idempotency_key=key, valid_until=past))
            return kind, self.erp.command(text(to, "Hello, any news?"),
                                          Routing(tenant_id=t.tenant_id, phone_number_id=t.phone_number_id,
                                                  idempotency_key=key))

        # Phase 1: build (and seal) everything first. New recipients need a data key each, written
        # to wa.subject.keys with acks; on a re-run they exist and this takes a second.
        self.total = plan.messages + plan.transactional + plan.invalid + plan.duplicates
        self.to_build = plan.messages + plan.transactional + plan.invalid
        chunks: list[list[dict]] = []
        gens = {t.tenant_id: campaign_cmds(t, n) for t, n in zip(tenants, sizes)}
        for t in tenants:
            self.groups.campaign[t.tenant_id] = set()
        while True:
            round_ = []
            for t in tenants:
                for cmd in _take(gens[t.tenant_id], self.chunk):
                    if self._halt.is_set():
                        return
                    round_.append(cmd)
                    self.built += 1
            if not round_:
                break
            chunks.append(round_)
        tx = []
        for k in range(plan.transactional):
            tx.append(transactional_cmd(k))
            self.built += 1
        bad = []
        for k in range(plan.invalid):
            bad.append(invalid_cmd(k))
            self.built += 1
        campaign_all = [c for ch in chunks for c in ch]
        dups = [dict(campaign_all[(i * 7) % len(campaign_all)], command_id=str(uuid.uuid4()),
                     requested_at=dt.datetime.now(dt.timezone.utc))
                for i in range(min(plan.duplicates, len(campaign_all)))] if campaign_all else []

        # Phase 2: the whole campaign goes to Kafka at once (the pipeline paces it per number).
        for ch in chunks:
            for cmd in ch:
                self.groups.campaign[cmd["tenant_id"]].add(cmd["command_id"])
            self._publish(ch)
        # Phase 3: while it runs, transactional messages arrive in waves, and the odd ones.
        slowest = max((n / t.throughput for t, n in zip(tenants, sizes)), default=0.0)
        waves = max(1, min(10, len(tx)))
        interval = min(10.0, slowest / (waves + 1)) if slowest else 0.0
        for w in range(waves):
            if self._halt.wait(interval):
                return
            wave = tx[w::waves]
            self.groups.transactional.update(c["command_id"] for c in wave)
            if w == min(1, waves - 1):
                for kind, c in bad:
                    self.groups.invalid.add(c["command_id"])
                    self.run_.expected.invalid[kind] += 1
                self.groups.duplicate.update(c["command_id"] for c in dups)
                self.run_.expected.duplicates = len(dups)
                wave = wave + [c for _k, c in bad] + dups
                self._unreadable()
            self._publish(wave)
        self.total = self.published

    def _publish(self, batch: list[dict]) -> None:
        if batch:
            self.published += self.erp.publish(batch)

    def _unreadable(self) -> None:
        """A few records that are not SendCommands at all: they must become dead letters."""
        from wapipe.edge.clients import producer
        from wapipe.topics import SEND_REQUESTED

        n = self.run_.plan.unreadable
        if not n:
            return
        p = producer(self.run_.bootstrap)
        for i in range(n):
            p.produce(SEND_REQUESTED, key=self.run_.plan.tenants()[0].tenant_id.encode(),
                      value=b"\x00not avro: " + f"garbage {i}".encode())
        if p.flush(30):
            raise DemoError("unreadable demo records were not acknowledged")
        self.run_.expected.unreadable = n


def _take(gen, n: int) -> list:
    out = []
    for item in gen:
        out.append(item)
        if len(out) >= n:
            break
    return out


def run_workload(run: "DemoRun") -> int:
    from producers.erp.client import ErpProducer
    from wapipe.avro import AvroSerde

    serde = AvroSerde.from_settings(run.s)
    t_keys = time.monotonic()
    erp = ErpProducer.from_settings(run.s, run.bootstrap)
    run.console.print(f"ERP producer ready (subject keys loaded in {time.monotonic() - t_keys:.1f}s)")
    tracker = Tracker(run.bootstrap, serde).start()
    groups = Groups()
    pub = Publisher(run, erp, groups)
    t0 = time.monotonic()
    deadline = t0 + run.plan.timeout_s
    try:
        pub.start()
        ok = show_progress(run, pub, tracker, groups, deadline)
        run.summary["dispatch_s"] = round(time.monotonic() - t0, 1)
        if not ok:
            return 1
        return finish(run, tracker, groups, deadline)
    finally:
        pub.stop()
        pub.join(10)
        tracker.close()
        erp.close()
