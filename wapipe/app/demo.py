"""``wapipe demo`` (``make demo``): the product's main job on the embedded defaults.

One machine, nothing else: the real Kafka broker, the Meta sandbox (the one simulated part), the
ingress, the send worker, the normaliser, the sink into the embedded ClickHouse, and the tenant
and privacy services when they are there. It creates tenants whose numbers have different
throughput limits, sends a mixed workload through the ERP's path (Avro SendCommands on
``wa.send.requested``): a bulk campaign per tenant, transactional messages during it, invalid
commands, duplicates and recipients that fail; shows live progress; prints the delivery report
read back from ClickHouse, writes the HTML report, checks the report against what the sandbox
saw, and stops everything it started. A stage whose service has not landed is named as such.

``wapipe up`` runs the same services for real (configured Meta apps, external Kafka/ClickHouse).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from wapipe.config import Settings
from wapipe.edge.endpoint import KafkaEndpoint, NoKafka, confluent_conf, endpoint_for
from wapipe.log import get_logger
from wapipe.privacy.secrets import write_private
from wapipe.app.services import Backoff, CommandMissing, ServiceError, ServiceSpec, Supervisor, pipeline_services

log = get_logger(__name__)
console = Console()

APP_ID = "424242424242"
FINAL_OUTCOMES = {"ACCEPTED", "REJECTED", "FAILED", "UNKNOWN", "DEAD", "EXPIRED", "CANCELLED", "DUPLICATE"}


# --- the plan -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoTenant:
    tenant_id: str
    display_name: str
    business_id: str
    waba_id: str
    phone_number_id: str
    display_phone_number: str
    throughput: int
    token: str
    index: int

    def recipient(self, i: int) -> str:
        """A stable WhatsApp id per (tenant, i): re-runs reach the same customers (their keys exist)."""
        return f"49{self.index + 1:02d}{i:08d}"


@dataclass(frozen=True)
class DemoPlan:
    messages: int = 20_000  # bulk campaign, split over the tenants in proportion to their limits
    transactional: int = 300
    invalid: int = 30
    failing: int = 20
    duplicates: int = 20
    unreadable: int = 3
    throughputs: tuple[int, ...] = (80, 250, 1000)
    timeout_s: float = 900.0
    stall_s: float = 180.0  # fail when no command gets its final result for this long
    read_ratio: float = 0.7

    def tenants(self) -> list[DemoTenant]:
        names = ["acme", "globex", "initech", "umbrella", "hooli", "stark"]
        out = []
        for i, mps in enumerate(self.throughputs):
            name = names[i] if i < len(names) else f"tenant{i}"
            out.append(DemoTenant(
                tenant_id=f"demo-{name}", display_name=name.capitalize(), business_id=f"77{i + 1:04d}",
                waba_id=f"88{i + 1:04d}", phone_number_id=f"99{i + 1:04d}", display_phone_number=f"1555010{i:04d}",
                throughput=mps, token=f"demo-token-{name}", index=i))
        return out

    def campaign_split(self) -> list[int]:
        """Campaign sizes per tenant in proportion to their throughput, so they finish together."""
        total = sum(self.throughputs)
        sizes = [self.messages * t // total for t in self.throughputs]
        sizes[-1] += self.messages - sum(sizes)
        return sizes


@dataclass
class Stage:
    name: str
    status: str  # ok | missing | failed | skipped
    detail: str = ""


@dataclass
class Expected:
    """What this run published, by kind: the numbers the report must add up to."""

    campaign: Counter = field(default_factory=Counter)  # tenant -> commands
    transactional: Counter = field(default_factory=Counter)
    invalid: Counter = field(default_factory=Counter)  # reason -> commands
    duplicates: int = 0
    unreadable: int = 0
    failing_recipients: int = 0
    command_ids: set[str] = field(default_factory=set)
    campaigns: dict[str, str] = field(default_factory=dict)  # tenant -> campaign id

    @property
    def commands(self) -> int:
        return len(self.command_ids)


# --- the sandbox world --------------------------------------------------------------------
TEMPLATES = [
    # (name, category, body params, text)
    ("spring_sale", "MARKETING", 1, "Hi {{1}}, our spring sale starts today."),
    ("order_update", "UTILITY", 2, "Order {{1}} is {{2}}."),
    ("login_code", "AUTHENTICATION", 1, "{{1}} is your verification code."),
]


def sandbox_seed(plan: DemoPlan, app_secret: str, failing: list[str]) -> dict:
    tenants = plan.tenants()
    return {
        "config": {
            "latency": {"kind": "lognormal", "a": 40, "b": 0.4},
            "habits": {"duplicate": 0.0, "out_of_order": 0.05, "skip_delivered": 0.0, "read": plan.read_ratio},
            "webhooks": {"sent_after": {"kind": "uniform", "a": 50, "b": 300},
                         "delivered_after": {"kind": "lognormal", "a": 700, "b": 0.6},
                         "read_after": {"kind": "lognormal", "a": 3000, "b": 0.8},
                         "batch_interval_s": 0.05, "max_batch": 200},
            "record_messages": True,
        },
        "apps": [{"id": APP_ID, "secret": app_secret, "name": "wapipe demo"}],
        "businesses": [{"id": t.business_id, "name": t.display_name, "tier": "TIER_100K"} for t in tenants],
        "wabas": [{"id": t.waba_id, "business_id": t.business_id, "name": f"{t.display_name} WABA"} for t in tenants],
        "numbers": [{"id": t.phone_number_id, "waba_id": t.waba_id, "display_phone_number": t.display_phone_number,
                     "verified_name": t.display_name, "throughput": t.throughput} for t in tenants],
        "templates": [{"waba_id": t.waba_id, "name": n, "language": "en_US", "category": c, "body_params": p,
                       "body_text": text} for t in tenants for n, c, p, text in TEMPLATES],
        "tokens": [{"token": t.token, "app_id": APP_ID, "waba_ids": [t.waba_id]} for t in tenants],
        "invalid_recipients": failing,
    }


# --- the run ------------------------------------------------------------------------------
class DemoRun:
    def __init__(self, settings: Settings, plan: DemoPlan, out: Console = console) -> None:
        self.s = settings
        self.plan = plan
        self.console = out
        self.run_id = uuid.uuid4().hex[:8]
        self.started = dt.datetime.now(dt.timezone.utc)
        self.stages: list[Stage] = []
        self.expected = Expected()
        self.bootstrap: KafkaEndpoint | str = ""
        self.sandbox_url = ""
        self.ingress_url = ""
        self.app_secret = secrets.token_hex(16)
        self.sup: Supervisor | None = None
        self.running: set[str] = set()
        self.pids: dict[str, int] = {}
        self.failing: list[str] = []
        self.sandbox_started = self.started
        self.summary: dict = {}

    # -- helpers ---------------------------------------------------------------------------
    def stage(self, name: str, status: str, detail: str = "") -> Stage:
        st = Stage(name, status, detail)
        self.stages.append(st)
        style = {"ok": "green", "missing": "yellow", "failed": "red", "skipped": "yellow"}[status]
        self.console.print(f"[{style}]{status:>7}[/] {name}" + (f" — {detail}" if detail else ""))
        return st

    def print_stages(self) -> None:
        t = Table("stage", "status", "detail", title="Stages of this run", title_justify="left")
        for st in self.stages:
            style = {"ok": "green", "missing": "yellow", "failed": "red", "skipped": "yellow"}[st.status]
            t.add_row(st.name, f"[{style}]{st.status}[/]", st.detail[:120])
        self.console.print(t)

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": str(self.bootstrap),
            "WAPIPE_STATE_DIR": str(self.s.state_dir),
            "WAPIPE_META_APPS": json.dumps({APP_ID: self.app_secret}),
            "WAPIPE_LOG_LEVEL": os.environ.get("WAPIPE_LOG_LEVEL", "WARNING"),
        })
        if self.sandbox_url:
            env["WAPIPE_META_GRAPH_URL"] = self.sandbox_url
        if self.s.clickhouse_url:
            env["CLICKHOUSE_URL"] = self.s.clickhouse_url
        return env

    def start_service(self, spec: ServiceSpec, *, required: bool, role: str) -> bool:
        assert self.sup is not None
        t0 = time.monotonic()
        try:
            svc = self.sup.start(spec)
        except CommandMissing as exc:
            self.stage(f"{spec.name}: {role}", "missing", str(exc))
            return False
        except ServiceError as exc:
            self.stage(f"{spec.name}: {role}", "failed", str(exc).splitlines()[0].rstrip(":"))
            if required:
                raise
            return False
        self.stage(f"{spec.name}: {role}", "ok", f"{svc.ready_value} (pid {svc.pid}, ready in {time.monotonic() - t0:.1f}s)")
        self.running.add(spec.name)
        self.pids[spec.name] = svc.pid
        return True

    # -- the whole job ---------------------------------------------------------------------
    def execute(self) -> int:
        t0 = time.monotonic()
        self.console.rule(f"wapipe demo {self.run_id}")
        code = 1
        with ExitStack() as stack:
            # Ctrl-C / SIGTERM: unwind the stack, which stops every service and the broker.
            previous = signal.signal(signal.SIGTERM, _interrupt)
            stack.callback(signal.signal, signal.SIGTERM, previous)
            try:
                self.start_kafka(stack)
                self.prepare_state()
                self.sup = stack.enter_context(Supervisor(self.s.log_dir, env=self.service_env()))
                stack.callback(lambda: self.console.print("stopping services ..."))
                self.start_sandbox()
                self.start_pipeline()
                self.configure_world()
                code = self.run_workload()
            except KeyboardInterrupt:
                self.console.print("[yellow]interrupted: stopping everything[/]")
                code = 130
            except (ServiceError, DemoError, NoKafka) as exc:
                self.console.print(f"[red]demo failed:[/] {exc}")
                code = 1
        self.summary["duration_s"] = round(time.monotonic() - t0, 1)
        self.summary.update(run_id=self.run_id, exit_code=code,
                            stages=[{"name": st.name, "status": st.status, "detail": st.detail} for st in self.stages],
                            pids={sv: p for sv, p in self.pids.items()})
        summary_path = self.s.state_dir / "demo" / f"summary-{self.run_id}.json"
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(self.summary, indent=1, default=str))
        self.print_stages()
        self.console.print(f"demo finished in {self.summary['duration_s']:.0f}s with exit code {code}; "
                           f"service logs in {self.s.log_dir}; summary {summary_path}")
        return code

    def start_kafka(self, stack: ExitStack) -> None:
        from wapipe.app.stack.local import KafkaProvider, stack_status

        st, status = stack_status(self.s)
        if status == "up":
            self.bootstrap = endpoint_for(self.s, st.bootstrap)
            self.stage("kafka", "ok", f"using the running stack at {self.bootstrap}")
            return
        provider = KafkaProvider(self.s, data_dir=self.s.kafka_dir / "demo-data")
        t0 = time.monotonic()
        self.bootstrap = endpoint_for(self.s, provider.start())
        stack.callback(provider.stop)
        stack.callback(lambda: self.console.print("stopping Kafka ..."))
        if provider.pid:
            self.pids["kafka"] = provider.pid
        self.stage("kafka", "ok", f"{provider.source} broker at {self.bootstrap}, up in {time.monotonic() - t0:.1f}s")

    def prepare_state(self) -> None:
        from wapipe.edge.clients import admin_client
        from wapipe.topics import apply_topics

        r = apply_topics(admin_client(self.bootstrap), self.s)
        self.stage("topics", "ok", f"{len(r.created)} created, {len(r.altered)} altered")
        # Secrets every service shares through the state dir: generate them once, here, before
        # several services race to.
        try:
            from wapipe.privacy.kek import load_kek
            from wapipe.privacy.subjects import pepper_from

            load_kek(self.s)
            pepper_from(self.s)
        except ImportError:
            pass
        # Migrations in a short-lived process: the sink (or a server) owns ClickHouse afterwards.
        proc = subprocess.run([sys.executable, "-m", "wapipe", "db", "migrate"], env=self.service_env(),
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise DemoError(f"ClickHouse migrations failed ({self.s.clickhouse_dsn}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        applied = [line for line in proc.stdout.splitlines() if line.startswith("applied")]
        self.stage("clickhouse", "ok", f"{self.s.clickhouse_dsn}: {len(applied)} migrations applied")

    def start_sandbox(self) -> None:
        self.sandbox_started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
        self.failing = [t.recipient(10_000_000 + i) for t in self.plan.tenants()
                        for i in range(self.plan.failing // len(self.plan.throughputs) + 1)][: self.plan.failing]
        # The seed holds the tenants' access tokens and the app secret (the sandbox checks them):
        # owner-only (0600, in a 0700 folder), written atomically, never world-readable.
        seed_path = self.s.state_dir / "demo" / "sandbox-seed.json"
        write_private(seed_path, json.dumps(sandbox_seed(self.plan, self.app_secret, self.failing), indent=1).encode())
        spec = ServiceSpec("sandbox", ("sandbox",), args=("--seed", str(seed_path)), ready_timeout=60)
        if not self.start_service(spec, required=True, role="Meta Cloud API sandbox"):
            raise DemoError("the Meta sandbox is not available: nothing can be sent")
        self.sandbox_url = self.sup.get("sandbox").ready_value
        self.sup.env.update(self.service_env())

    def start_pipeline(self) -> None:
        for c in pipeline_services():
            ok = self.start_service(c.spec, required=False, role=c.role)
            if ok and c.spec.name == "ingress":
                self.ingress_url = self.sup.get("ingress").ready_value.rstrip("/")

    def control(self):
        from connectors.meta.sandbox.control_client import SandboxControl

        return SandboxControl(self.sandbox_url)

    def configure_world(self) -> None:
        ctl = self.control()
        try:
            if self.ingress_url:
                ctl.set_webhook(self.ingress_url + "/webhook", app_id=APP_ID, app_secret=self.app_secret)
                self.stage("sandbox webhooks", "ok", f"→ {self.ingress_url}/webhook, signed with the app secret")
            else:
                self.stage("sandbox webhooks", "skipped", "no ingress: statuses will not come back")
        finally:
            ctl.close()
        self.create_tenants()

    def create_tenants(self) -> None:
        import asyncio

        try:
            from wapipe.tenants.models import PhoneNumber
            from wapipe.tenants.service import TenantService
            from wapipe.tenants.templates import sync_templates
        except ImportError as exc:
            self.stage("tenants", "missing", f"wapipe.tenants not available: {exc}")
            return
        from connectors.meta.client import GraphClient

        svc = TenantService(self.s, self.bootstrap, actor="operator:demo")
        try:
            created, updated, templates = 0, 0, 0
            for t in self.plan.tenants():
                number = PhoneNumber(phone_number_id=t.phone_number_id, display_phone_number=t.display_phone_number,
                                     throughput_mps=t.throughput, quality_rating="GREEN",
                                     messaging_limit_tier="TIER_100K")
                have = svc.registry.tenant(t.tenant_id)
                if have is None:
                    svc.create(t.tenant_id, waba_id=t.waba_id, numbers=[number], token=t.token,
                               messaging_limit=100_000, display_name=t.display_name, business_id=t.business_id,
                               app_id=APP_ID)
                    created += 1
                else:
                    svc.update(t.tenant_id, throughput={t.phone_number_id: t.throughput}, messaging_limit=100_000,
                               token=t.token, status="ACTIVE")
                    updated += 1
                tenant = svc.get(t.tenant_id)
                graph = GraphClient(base_url=self.sandbox_url, version=self.s.meta_graph_version)
                rep = asyncio.run(_sync(sync_templates, svc, graph, tenant))
                templates += len(rep.added) + len(rep.changed) + rep.unchanged
            self.stage("tenants", "ok", f"{created} created, {updated} updated (existing), {templates} templates synced "
                       f"from the sandbox; numbers at " + ", ".join(f"{t.throughput}/s" for t in self.plan.tenants()))
        finally:
            svc.close()

    def run_workload(self) -> int:
        return run_workload(self)


async def _sync(fn, svc, graph, tenant):
    try:
        return await fn(svc, graph, tenant)
    finally:
        await graph.aclose()


class DemoError(RuntimeError):
    pass


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


def demo_command(
    messages: int = typer.Option(20_000, help="bulk campaign size (split over the tenants by their limits)"),
    transactional: int = typer.Option(300, help="transactional messages sent during the campaign"),
    invalid: int = typer.Option(30, help="invalid commands (unknown template, wrong parameters, foreign number, ...)"),
    failing: int = typer.Option(20, help="campaign recipients whose messages fail at Meta (131026)"),
    duplicates: int = typer.Option(20, help="commands re-sent with an idempotency key already used"),
    throughputs: str = typer.Option("80,250,1000", help="one tenant per value: its number's msg/s limit"),
    timeout: float = typer.Option(900.0, help="give up (and stop everything) after this many seconds"),
) -> None:
    """The main job on this machine: broker, sandbox, services, tenants, a mixed workload, the report."""
    try:
        limits = tuple(int(x) for x in throughputs.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter("--throughputs: comma-separated whole numbers, e.g. 80,250,1000") from None
    if not limits or any(not 1 <= x <= 1000 for x in limits):
        raise typer.BadParameter("--throughputs: each between 1 and 1000 msg/s")
    plan = DemoPlan(messages=messages, transactional=transactional, invalid=invalid, failing=failing,
                    duplicates=duplicates, throughputs=limits, timeout_s=timeout)
    raise typer.Exit(DemoRun(Settings(), plan).execute())


# --- the workload -------------------------------------------------------------------------
INVALID_KINDS = ("unknown template", "wrong parameter count", "number of another tenant", "unknown tenant",
                 "expired (valid_until passed)", "session message outside the 24 h window")
UNKNOWN_TENANT = "demo-nobody"


class Tracker:
    """Reads this run's SendResults and dead letters from the offsets they had before it started."""

    def __init__(self, bootstrap: str, serde) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from wapipe.topics import SEND_DEAD, SEND_RESULTS

        self.serde = serde
        self.final: dict[str, dict] = {}  # command_id -> latest final result
        self.seen: dict[str, str] = {}  # command_id -> latest outcome (any)
        self.results_read = 0  # every result read, also of commands of earlier runs: the pipeline moves
        self.dead_letters = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._c = Consumer({**confluent_conf(bootstrap), "group.id": f"wapipe-demo-{uuid.uuid4().hex[:8]}",
                            "enable.auto.commit": False, "isolation.level": "read_committed"})
        assign = []
        for topic in (SEND_RESULTS, SEND_DEAD):
            md = self._c.list_topics(topic, timeout=10).topics[topic]
            for p in md.partitions:
                _low, high = self._c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                assign.append(TopicPartition(topic, p, high))
        self._c.assign(assign)
        self._results_topic, self._dead_topic = SEND_RESULTS, SEND_DEAD
        self._thread = threading.Thread(target=self._run, name="demo-tracker", daemon=True)

    def start(self) -> "Tracker":
        self._thread.start()
        return self

    def _run(self) -> None:
        from wapipe.topics import SEND_REQUESTED

        while not self._stop.is_set():
            for m in self._c.consume(2000, timeout=0.3):
                if m.error() is not None or m.value() is None:
                    continue
                try:
                    if m.topic() == self._results_topic:
                        r = self.serde.decode(m.value(), "SendResult")
                        with self._lock:
                            self.results_read += 1
                            self.seen[r["command_id"]] = r["outcome"]
                            if r["outcome"] in FINAL_OUTCOMES:
                                self.final[r["command_id"]] = r
                    else:
                        d = self.serde.decode(m.value(), "DeadLetter")
                        if d.get("source_topic") == SEND_REQUESTED:
                            with self._lock:
                                self.dead_letters += 1
                except Exception as exc:  # a record we cannot read is the pipeline's to report
                    log.warning("demo tracker could not decode a record", topic=m.topic(), error=str(exc))

    def outcomes(self, command_ids: set[str] | None = None) -> Counter:
        with self._lock:
            return Counter(r["outcome"] for cid, r in self.final.items() if command_ids is None or cid in command_ids)

    def finished(self, command_ids: set[str]) -> int:
        ids = command_ids.copy()  # the publishing thread adds to it meanwhile (one C call: atomic)
        with self._lock:
            return sum(1 for cid in ids if cid in self.final)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._c.close()


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
        failing = set(self.run_.failing)
        sizes = [plan.messages // len(tenants)] * len(tenants)
        sizes[-1] += plan.messages - sum(sizes)
        campaigns = {t.tenant_id: f"spring-{run_id}-{t.tenant_id.removeprefix('demo-')}" for t in tenants}
        self.run_.expected.campaigns = campaigns
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
                self.run_.expected.campaign[cmd["tenant_id"]] += 1
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
            for c in wave:
                self.run_.expected.transactional[c["tenant_id"]] += 1
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
            self.run_.expected.command_ids.update(c["command_id"] for c in batch)
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
    from wapipe.avro import AvroSerde

    for needed in ("worker",):
        if needed not in run.running:
            run.stage("workload", "skipped", f"`wapipe {needed}` is not running: nothing would be sent")
            return 1
    try:
        from producers.erp.client import ErpProducer
    except ImportError as exc:
        run.stage("workload", "missing", f"the ERP SDK (producers/erp) is not available: {exc}")
        return 1
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


def show_progress(run: "DemoRun", pub: Publisher, tracker: Tracker, groups: Groups, deadline: float) -> bool:
    plan = run.plan
    tenants = plan.tenants()
    cols = (TextColumn("{task.description:<34}"), BarColumn(bar_width=36), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    with Progress(*cols, console=run.console, refresh_per_second=4) as progress:
        t_seal = progress.add_task("commands built, personal data sealed", total=None, note="")
        t_pub = progress.add_task("published to wa.send.requested", total=None, note="")
        t_camp = {t.tenant_id: progress.add_task(f"campaign {t.display_name} ({t.throughput}/s)", total=None, note="")
                  for t in tenants}
        t_tx = progress.add_task("transactional (during the campaign)", total=plan.transactional or None, note="")
        t_odd = progress.add_task("invalid + duplicate commands", total=(plan.invalid + plan.duplicates) or None,
                                  note="")
        last_rate: dict[str, tuple[float, int]] = {}
        last_moved, last_change = (-1, -1), time.monotonic()
        while True:
            now = time.monotonic()
            progress.update(t_seal, completed=pub.built, total=pub.to_build or None)
            progress.update(t_pub, completed=pub.published, total=pub.total or None)
            for t in tenants:
                ids = groups.campaign.get(t.tenant_id, set())
                done = tracker.finished(ids)
                prev_t, prev_n = last_rate.get(t.tenant_id, (now, done))
                rate = (done - prev_n) / (now - prev_t) if now - prev_t >= 2 else None
                if rate is not None or t.tenant_id not in last_rate:
                    last_rate[t.tenant_id] = (now, done)
                size = plan.messages // len(tenants) + (plan.messages % len(tenants) if t is tenants[-1] else 0)
                note = f"{rate:6.0f} msg/s" if rate is not None else ""
                progress.update(t_camp[t.tenant_id], completed=done, total=size or None,
                                note=note if note else progress.tasks[t_camp[t.tenant_id]].fields["note"])
            progress.update(t_tx, completed=tracker.finished(groups.transactional))
            progress.update(t_odd, completed=tracker.finished(groups.invalid | groups.duplicate))
            if pub.error is not None:
                raise DemoError(f"publishing the workload failed: {pub.error}")
            dead = run.sup.dead() if run.sup else []
            if dead:
                d = dead[0]
                raise DemoError(f"{d.spec.name} exited with code {d.proc.returncode} (log {d.log_path}):\n"
                                f"{d.tail()[-1500:]}")
            ids = groups.all()
            done_all = tracker.finished(ids)
            if not pub.is_alive() and pub.published and done_all >= len(ids):
                return True
            # Progress is any result: a run interrupted earlier can leave its commands queued ahead
            # of this run's, and the worker answering those is not a stall.
            moved = (done_all, tracker.results_read)
            if moved != last_moved or pub.is_alive():
                last_moved, last_change = moved, now
            elif now - last_change > run.plan.stall_s:
                stuck = Counter(t for t, tids in groups.campaign.items() for cid in tids if cid not in tracker.final)
                stuck.update("transactional" for cid in groups.transactional if cid not in tracker.final)
                stuck.update("invalid/duplicate" for cid in groups.invalid | groups.duplicate
                             if cid not in tracker.final)
                run.console.print(f"[red]dispatch stalled:[/] no command got a final result for "
                                  f"{run.plan.stall_s:.0f}s; {len(ids) - done_all} still open: "
                                  + ", ".join(f"{k} {v}" for k, v in stuck.most_common())
                                  + f" (see {run.s.log_dir / 'worker.log'})")
                run.summary["stalled"] = dict(stuck)
                return False
            if now > deadline:
                earlier = sum(1 for cid in tracker.seen.copy() if cid not in ids)
                run.console.print(f"[red]timeout:[/] {len(ids) - tracker.finished(ids)} commands have no final "
                                  f"result after {run.plan.timeout_s:.0f}s"
                                  + (f"; meanwhile {earlier} commands from earlier runs were answered (a run "
                                     "interrupted before its commands were sent leaves them queued ahead of this "
                                     "one's; `make clean` starts from empty topics)" if earlier > 0 else ""))
                return False
            time.sleep(0.5)


def finish(run: "DemoRun", tracker: Tracker, groups: Groups, deadline: float) -> int:
    """Statuses settle, the report is read back from ClickHouse, and checked against the sandbox."""
    from sinks.analytics import Scope, collect, open_reader, totals
    from sinks.report import print_report, write_html

    ctl = run.control()
    try:
        t0 = time.monotonic()
        with run.console.status("waiting for the sandbox's status webhooks to be delivered ..."):
            while (pending := ctl.pending_webhooks()) and time.monotonic() < deadline:
                time.sleep(0.5)
        if pending:
            run.console.print(f"[yellow]{pending} status webhooks still pending at the deadline[/]")
        counters = ctl.counters()
    finally:
        ctl.close()
    scheduled = Counter(counters["webhooks"]["statuses_scheduled"])
    failed_async = sum(counters["failed_async"].values())
    outcomes = tracker.outcomes(groups.all())
    sync_failed = outcomes.get("FAILED", 0) + outcomes.get("DEAD", 0)
    tenants = tuple(t.tenant_id for t in run.plan.tenants()) + (UNKNOWN_TENANT,)
    # The report covers this run's commands (every idempotency key carries the run id); the
    # comparison with the sandbox covers every message the sandbox accepted in its lifetime (a
    # command an earlier run left undispatched may be sent during this one).
    scope = Scope(tenants=tenants, key_contains=run.run_id)
    seen_by_sandbox = Scope(tenants=tenants, accepted_since=run.sandbox_started)

    reader = open_reader(run.s)
    try:
        # The sink batches (and Meta's statuses trickle in): wait until ClickHouse has what the
        # sandbox sent, or nothing changes for a while.
        want = {"requested": len(groups.all()), "accepted": counters["accepted"],
                "delivered": scheduled.get("delivered", 0), "read": scheduled.get("read", 0)}
        last, still_since = None, time.monotonic()
        with run.console.status("waiting for ClickHouse to hold every result and status ..."):
            while time.monotonic() < deadline:
                tot, sb = totals(reader, scope), totals(reader, seen_by_sandbox)
                got = {"requested": tot.requested, **{k: getattr(sb, k) for k in ("accepted", "delivered", "read")}}
                if got == want and sb.failed == failed_async:
                    break
                if got != last:
                    last, still_since = got, time.monotonic()
                elif time.monotonic() - still_since > 30:
                    break
                time.sleep(1.0)
        run.summary["settle_s"] = round(time.monotonic() - t0, 1)
        data = collect(reader, scope)
        sb = totals(reader, seen_by_sandbox)
    finally:
        close = getattr(reader, "close", None)
        if close:
            close()

    run.console.rule("delivery report (read back from ClickHouse)")
    print_report(data, run.console)
    path = write_html(data, run.s.reports_dir)
    run.summary["report"] = str(path)

    t = data.totals
    checks = [
        ("commands in ClickHouse", t.requested, len(groups.all()), "published by the ERP SDK"),
        ("accepted by Meta", sb.accepted, counters["accepted"], "sandbox: messages accepted"),
        ("delivered", sb.delivered, scheduled.get("delivered", 0), "sandbox: delivered statuses sent"),
        ("read", sb.read, scheduled.get("read", 0), "sandbox: read statuses sent"),
        ("failed after acceptance", sb.failed, failed_async, "sandbox: failed statuses sent"),
        ("refused by Meta / dead", data.outcomes.get("FAILED", 0) + data.outcomes.get("DEAD", 0), sync_failed,
         "FAILED/DEAD results read from wa.send.results"),
        ("rejected / expired", t.rejected, sum(run.expected.invalid.values()), "invalid commands published"),
        ("duplicates", t.duplicate, run.expected.duplicates, "re-sent idempotency keys"),
        ("unreadable → dead letter", tracker.dead_letters, run.expected.unreadable, "garbage records published"),
    ]
    table = Table("check", "report (ClickHouse)", "expected", "source of the expectation", "",
                  title="Report vs what the sandbox saw", title_justify="left")
    ok_all = True
    for name, got, exp, src in checks:
        ok = got == exp
        ok_all &= ok
        table.add_row(name, str(got), str(exp), src, "[green]ok[/]" if ok else "[red]MISMATCH[/]")
    run.console.print(table)
    if sb.accepted != t.accepted:
        run.console.print(f"note: {sb.accepted - t.accepted} of the messages the sandbox accepted belong to commands of "
                          "earlier runs, dispatched during this one (their rows are in the checks, not in this "
                          "run's report)")

    limits = Table("number", "limit msg/s", "max accepted in any 1 s", "throttled (130429)", "accepted",
                   title="Throughput limits as the sandbox measured them", title_justify="left")
    for tnt in run.plan.tenants():
        c = counters["numbers"].get(tnt.phone_number_id, {})
        limits.add_row(tnt.phone_number_id, str(tnt.throughput), str(c.get("max_accepted_1s", 0)),
                       str(c.get("rejected", {}).get("130429", 0)), str(c.get("accepted", 0)))
    run.console.print(limits)
    run.summary.update({
        "commands": len(groups.all()), "accepted": t.accepted, "delivered": t.delivered, "read": t.read,
        "failed": t.failed, "rejected": t.rejected, "duplicates": t.duplicate, "dead_letters": tracker.dead_letters,
        "checks_ok": ok_all,
    })
    run.summary["sandbox"] = {"accepted": counters["accepted"], "statuses": dict(scheduled),
                              "failed_async": counters["failed_async"],
                              "numbers": {k: {"accepted": v.get("accepted"), "max_accepted_1s": v.get("max_accepted_1s"),
                                              "rejected": v.get("rejected")} for k, v in counters["numbers"].items()}}
    run.summary["sandbox_scope_totals"] = {c: getattr(sb, c) for c in ("accepted", "sent", "delivered", "read", "failed")}
    run.summary["report_totals"] = {c: getattr(t, c) for c in ("requested", "accepted", "sent", "delivered", "read",
                                                                "failed", "rejected", "duplicate", "pending")}
    run.summary["checks"] = [{"check": n, "report": g, "expected": e} for n, g, e, _src in checks]
    run.console.print(f"HTML report: {path}")
    return 0 if ok_all else 1


# --- wapipe up ----------------------------------------------------------------------------
def up_command(
    ingress_port: int = typer.Option(8080, help="port of the webhook ingress (0: any free one)"),
) -> None:
    """Run wapipe's services for real: Meta's Graph API with the configured apps, your Kafka and
    ClickHouse (KAFKA_BOOTSTRAP_SERVERS / CLICKHOUSE_URL, or the local stack). No sandbox, no workload.
    Stops everything on Ctrl-C / SIGTERM; a service that dies is started again with backoff."""
    from wapipe.app.bootstrap import resolve_bootstrap
    from wapipe.edge.endpoint import NoKafka
    from wapipe.edge.clients import admin_client
    from wapipe.topics import apply_topics

    s = Settings()
    err = Console(stderr=True)
    if not s.meta_apps:
        err.print("[red]error:[/] no Meta app configured: set WAPIPE_META_APPS='{\"<app id>\": \"<app secret>\"}'")
        raise typer.Exit(1)
    try:
        bootstrap = resolve_bootstrap(s)
    except NoKafka as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    apply_topics(admin_client(bootstrap), s)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": str(bootstrap), "WAPIPE_STATE_DIR": str(s.state_dir)}
    mig = subprocess.run([sys.executable, "-m", "wapipe", "db", "migrate"], env=env, capture_output=True, text=True)
    if mig.returncode != 0:
        err.print(f"[red]error:[/] ClickHouse migrations failed:\n{mig.stdout}{mig.stderr}")
        raise typer.Exit(1)
    console.print(f"Kafka {bootstrap} · ClickHouse {s.clickhouse_dsn} · Graph API {s.meta_graph_url}/{s.meta_graph_version}")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        with Supervisor(s.log_dir, env=env) as sup:
            for c in pipeline_services(ingress_port=ingress_port):
                if stop.is_set():
                    break
                try:
                    svc = sup.start(c.spec)
                    console.print(f"[green]up[/] {c.spec.name}: {svc.ready_value} (pid {svc.pid}) — {c.role}")
                except CommandMissing as exc:
                    if c.required:
                        err.print(f"[red]error:[/] {exc}")
                        raise typer.Exit(1) from None
                    console.print(f"[yellow]not available[/] {c.spec.name}: {exc}")
            console.print(f"wapipe is up; logs in {s.log_dir}. Ctrl-C stops it.")
            backoff = Backoff()
            while not stop.wait(1.0):
                # A service that dies is started again (with backoff); the others run on.
                for line in sup.revive(backoff):
                    err.print(f"[yellow]{line}[/]")
            console.print("stopping ...")
    except ServiceError as exc:
        err.print(f"[red]error:[/] {exc}")
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise typer.Exit(code)

