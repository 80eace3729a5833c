"""One demo run: the broker, the state (topics, secrets, migrations), the sandbox and the
pipeline's services under one supervisor, the stages as they go, and the summary file."""

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
from contextlib import ExitStack
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from wapipe.app.demo.plan import APP_ID, DemoError, DemoPlan, Expected
from wapipe.app.demo.workload import run_workload
from wapipe.app.demo.world import create_tenants, sandbox_seed
from wapipe.app.services import ServiceError, ServiceSpec, Supervisor, pipeline_services
from wapipe.config import Settings
from wapipe.edge.endpoint import KafkaEndpoint, NoKafka, endpoint_for
from wapipe.privacy.kek import load_kek
from wapipe.privacy.secrets import write_private
from wapipe.privacy.subjects import pepper_from

console = Console()


@dataclass
class Stage:
    name: str
    status: str  # ok | failed | skipped
    detail: str = ""


class DemoRun:
    def __init__(self, settings: Settings, plan: DemoPlan, out: Console = console) -> None:
        self.s = settings
        self.plan = plan
        self.console = out
        # Set by SIGTERM. The handler also raises KeyboardInterrupt, but Python swallows an exception
        # raised while a finalizer (__del__, a weakref callback) runs; the checks below see the flag.
        self.interrupted = threading.Event()
        self.run_id = uuid.uuid4().hex[:8]
        self.started = dt.datetime.now(dt.timezone.utc)
        self.stages: list[Stage] = []
        self.expected = Expected()
        self.bootstrap: KafkaEndpoint | str = ""
        self.sandbox_url = ""
        self.ingress_url = ""
        self.app_secret = secrets.token_hex(16)
        self.sup: Supervisor | None = None
        self.pids: dict[str, int] = {}
        self.failing: list[str] = []
        self.sandbox_started = self.started
        self.summary: dict = {}

    # -- helpers ---------------------------------------------------------------------------
    def stage(self, name: str, status: str, detail: str = "") -> Stage:
        st = Stage(name, status, detail)
        self.stages.append(st)
        style = {"ok": "green", "failed": "red", "skipped": "yellow"}[status]
        self.console.print(f"[{style}]{status:>7}[/] {name}" + (f" — {detail}" if detail else ""))
        return st

    def print_stages(self) -> None:
        t = Table("stage", "status", "detail", title="Stages of this run", title_justify="left")
        for st in self.stages:
            style = {"ok": "green", "failed": "red", "skipped": "yellow"}[st.status]
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
        except ServiceError as exc:
            self.stage(f"{spec.name}: {role}", "failed", str(exc).splitlines()[0].rstrip(":"))
            if required:
                raise
            return False
        self.stage(f"{spec.name}: {role}", "ok", f"{svc.ready_value} (pid {svc.pid}, ready in {time.monotonic() - t0:.1f}s)")
        self.pids[spec.name] = svc.pid
        return True

    # -- the whole job ---------------------------------------------------------------------
    def execute(self) -> int:
        t0 = time.monotonic()
        self.console.rule(f"wapipe demo {self.run_id}")
        code = 1
        with ExitStack() as stack:
            # Ctrl-C / SIGTERM: unwind the stack, which stops every service and the broker.
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            stack.callback(signal.signal, signal.SIGTERM, previous)
            try:
                self.start_kafka(stack)
                self.prepare_state()
                self.sup = stack.enter_context(Supervisor(self.s.log_dir, env=self.service_env()))
                stack.callback(lambda: self.console.print("stopping services ..."))
                for step in (self.start_sandbox, self.start_pipeline, self.configure_world):
                    self.check_interrupted()
                    step()
                self.check_interrupted()
                code = self.run_workload()
                self.check_interrupted()
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
        load_kek(self.s)
        pepper_from(self.s)
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
        self.start_service(spec, required=True, role="Meta Cloud API sandbox")  # raises when it does not start
        self.sandbox_url = self.sup.get("sandbox").ready_value
        self.sup.env.update(self.service_env())

    def start_pipeline(self) -> None:
        for c in pipeline_services(background_nice=self.s.stack_background_nice):
            self.check_interrupted()
            ok = self.start_service(c.spec, required=c.required, role=c.role)  # a required one raises
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
        self.stage("tenants", "ok", create_tenants(self.s, self.bootstrap, self.plan, self.sandbox_url))

    def _on_sigterm(self, *_args: object) -> None:
        self.interrupted.set()
        raise KeyboardInterrupt

    def check_interrupted(self) -> None:
        """KeyboardInterrupt if SIGTERM came (also when its own KeyboardInterrupt was swallowed)."""
        if self.interrupted.is_set():
            raise KeyboardInterrupt

    def run_workload(self) -> int:
        return run_workload(self)


