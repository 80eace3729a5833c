"""A supervisor for wapipe's service processes (``wapipe demo``, ``wapipe up``).

Each service is a long-running ``wapipe <command>`` that prints one line ``READY <url-or-name>``
on stdout when it is ready (docs/interfaces.md §7) and stops cleanly on SIGTERM. The supervisor
starts them as subprocesses, waits for READY with a timeout, copies each one's output to
``<state_dir>/logs/<name>.log``, and stops them all in reverse order: SIGTERM to the service's
process group, SIGKILL after a timeout (faust workers sometimes ignore SIGTERM). Children also
die with the supervisor (PR_SET_PDEATHSIG), so a crashed demo leaves no strays.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits: start services from the
thread that lives as long as they should (the main thread in the CLI).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wapipe.log import get_logger
from wapipe.procs import die_with_parent

log = get_logger(__name__)

READY_PREFIX = "READY"
# ``READY <what>`` at the start of a line; also after a log prefix ending in "] ", because faust
# workers redirect stdout into their logger ("[2026-...] [pid] [WARNING] READY normalise").
_READY_RE = re.compile(r"(?:^|\] )READY(?: (.*))?$")
# Terminal control sequences and characters (faust hides the cursor: ESC[?25l, a backspace, ESC[?25h).
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f]")


class ServiceError(RuntimeError):
    """A service could not be started, or died."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service: a name for logs and messages, and the ``wapipe`` sub-command that runs it."""

    name: str
    command: tuple[str, ...]  # e.g. ("tenants", "follow")
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 90.0
    stop_timeout: float = 15.0
    # A program other than wapipe (full argv); then ``command`` is only a label.
    program: tuple[str, ...] | None = None
    nice: int = 0  # added to the service's niceness (lower CPU priority), 0..19

    def preexec(self) -> None:  # pragma: no cover - runs in the child between fork and exec
        die_with_parent()
        if self.nice:
            os.nice(self.nice)
            # Each service starts a session of its own, and with Linux's autogroup scheduling
            # (on by default) a new session is a new scheduling group: the CPU is shared between
            # groups first, and a process's own niceness only counts within its group. So the
            # group is niced too, else a niced service still gets a full share against the worker
            # (make demo, 2026-12-05: the worker had 40-60 % of a core beside 7 services at nice 10).
            with contextlib.suppress(OSError):  # no autogroups here (another OS, or a kernel without)
                with open("/proc/self/autogroup", "w") as group:
                    group.write(str(self.nice))

    def argv(self) -> list[str]:
        if self.program is not None:
            return [*self.program, *self.args]
        return [sys.executable, "-m", "wapipe", *self.command, *self.args]


@dataclass
class RunningService:
    spec: ServiceSpec
    proc: subprocess.Popen
    log_path: Path
    ready_value: str = ""
    started_at: float = field(default_factory=time.monotonic)
    ready_after_s: float = 0.0
    _ready: threading.Event = field(default_factory=threading.Event, repr=False)
    _tail: deque = field(default_factory=lambda: deque(maxlen=40), repr=False)
    _reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return "".join(self._tail)

    def _pump(self) -> None:
        """Copy the child's output to its log file line by line; notice READY."""
        assert self.proc.stdout is not None
        with open(self.log_path, "ab", buffering=0) as out:
            for raw in iter(self.proc.stdout.readline, b""):
                out.write(raw)
                line = raw.decode(errors="replace")
                self._tail.append(line)
                m = None if self._ready.is_set() else _READY_RE.search(_ANSI_RE.sub("", line))
                if m:
                    self.ready_value = (m.group(1) or "").strip()
                    self.ready_after_s = time.monotonic() - self.started_at
                    self._ready.set()
        self.proc.stdout.close()


class Supervisor:
    """Starts services, waits for READY, stops them all (reverse order) on exit."""

    def __init__(self, log_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.services: list[RunningService] = []

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def get(self, name: str) -> RunningService | None:
        return next((s for s in self.services if s.spec.name == name), None)

    def start(self, spec: ServiceSpec) -> RunningService:
        """Start one service and wait for its READY line. Raises ``ServiceError`` when it exits
        (a command that does not exist exits with its usage error) or times out first."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.name}.log"
        env = {**self.env, **spec.env, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as f:
            f.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {' '.join(spec.argv())}\n".encode())
        proc = subprocess.Popen(
            spec.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, preexec_fn=spec.preexec,
        )
        svc = RunningService(spec=spec, proc=proc, log_path=log_path)
        self.services.append(svc)
        svc._reader = threading.Thread(target=svc._pump, name=f"log-{spec.name}", daemon=True)
        svc._reader.start()
        deadline = time.monotonic() + spec.ready_timeout
        while not svc._ready.wait(0.1):
            if not svc.alive():
                svc._reader.join(2)
                raise ServiceError(f"{spec.name} exited with code {proc.returncode} before READY "
                                   f"(log {log_path}):\n{svc.tail()[-3000:]}")
            if time.monotonic() > deadline:
                raise ServiceError(f"{spec.name} did not print READY within {spec.ready_timeout:.0f}s "
                                   f"(log {log_path}):\n{svc.tail()[-3000:]}")
        log.info("service ready", service=spec.name, pid=proc.pid, ready=svc.ready_value,
                 seconds=round(svc.ready_after_s, 2))
        return svc

    def revive(self, backoff: "Backoff", now: float | None = None) -> list[str]:
        """Start again each service that died, once its backoff has passed; the others run on.
        Returns one line per event for people ("x exited with code 1; restarting in 2 s", ...).
        A service that fails to come back is tried again later, with a longer wait."""
        now = time.monotonic() if now is None else now
        events: list[str] = []
        for i, svc in enumerate(list(self.services)):
            if svc.alive():
                continue
            name = svc.spec.name
            due = backoff.due(name)
            if due is None:
                ran = now - svc.started_at
                wait = backoff.schedule(name, now, ran_for=ran)
                events.append(f"{name} exited with code {svc.proc.returncode} after {ran:.0f} s "
                              f"(log {svc.log_path}); restarting in {wait:.0f} s")
                log.warning("service died", service=name, code=svc.proc.returncode, restart_in_s=round(wait, 1))
                continue
            if now < due:
                continue
            self.stop(svc)  # reap it and anything it left in its group
            self.services.remove(svc)
            before = len(self.services)
            try:
                new = self.start(svc.spec)
                failure = None
            except ServiceError as exc:
                failure = exc
            # The new process (even one that failed to come up) takes the old one's place in
            # start order, so stop_all still stops in reverse; if none was started, the old stays.
            self.services.insert(i, self.services.pop() if len(self.services) > before else svc)
            if failure is not None:
                backoff.done(name)
                events.append(f"{name} did not come back: {str(failure).splitlines()[0]}")
                continue
            backoff.done(name)
            events.append(f"{name} restarted (pid {new.pid}, restart {backoff.count(name)})")
            log.info("service restarted", service=name, pid=new.pid, restarts=backoff.count(name))
        return events

    def dead(self) -> list[RunningService]:
        """Services that have exited since they were started."""
        return [s for s in self.services if not s.alive()]

    def check(self) -> None:
        """Raise ``ServiceError`` naming the first service that died."""
        for s in self.dead():
            raise ServiceError(f"{s.spec.name} exited with code {s.proc.returncode} "
                               f"(log {s.log_path}):\n{s.tail()[-2000:]}")

    def stop(self, svc: RunningService) -> int | None:
        """SIGTERM the service's process group, SIGKILL after its stop timeout. Returns the exit code."""
        if svc.alive():
            _signal_group(svc.proc, signal.SIGTERM)
            try:
                svc.proc.wait(svc.spec.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("service ignored SIGTERM, killing", service=svc.spec.name, pid=svc.pid)
                _signal_group(svc.proc, signal.SIGKILL)
                svc.proc.wait(10)
        # Anything the service itself left in its group (it runs in its own session).
        _signal_group(svc.proc, signal.SIGKILL)
        if svc._reader is not None:
            svc._reader.join(5)
        return svc.proc.returncode

    def stop_all(self) -> dict[str, int | None]:
        codes = {}
        for svc in reversed(self.services):
            try:
                codes[svc.spec.name] = self.stop(svc)
            except Exception as exc:  # keep stopping the others
                log.error("stopping a service failed", service=svc.spec.name, error=str(exc))
                codes[svc.spec.name] = None
        self.services.clear()
        return codes


@dataclass
class Backoff:
    """When to start a dead service again: ``first`` seconds after its first death, doubling
    with each death that follows a short run, at most ``cap``; a service that ran ``healthy``
    seconds before it died starts over from ``first``. Per service name."""

    first: float = 1.0
    cap: float = 60.0
    healthy: float = 120.0
    _due: dict[str, float] = field(default_factory=dict)
    _streak: dict[str, int] = field(default_factory=dict)
    _restarts: dict[str, int] = field(default_factory=dict)

    def due(self, name: str) -> float | None:
        return self._due.get(name)

    def schedule(self, name: str, now: float, *, ran_for: float) -> float:
        streak = 0 if ran_for >= self.healthy else self._streak.get(name, 0)
        wait = min(self.cap, self.first * 2 ** streak)
        self._streak[name] = streak + 1
        self._due[name] = now + wait
        return wait

    def done(self, name: str) -> None:
        self._due.pop(name, None)
        self._restarts[name] = self._restarts.get(name, 0) + 1

    def count(self, name: str) -> int:
        return self._restarts.get(name, 0)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --- the catalogue: which services make up wapipe, in start order -----------------------------
@dataclass(frozen=True)
class Catalogued:
    spec: ServiceSpec
    required: bool  # without it the pipeline cannot do its job
    role: str  # one line for people


def pipeline_services(*, ingress_port: int = 0, ready_timeout: float = 120.0,
                      background_nice: int = 0) -> list[Catalogued]:
    """wapipe's own services (everything but the sandbox), in start order: consumers of a topic
    start before the producers that feed them would matter, and stop after them (reverse order).

    ``background_nice``: the niceness of the services behind the send path (everything but the
    worker and the ingress, whose delays a user or Meta sees): on a machine they share, a campaign
    burst is sent at the number's limit and the statuses are stored a little later."""

    def spec(name: str, *command: str, args: tuple[str, ...] = (), background: bool = True) -> ServiceSpec:
        return ServiceSpec(name, command, args=args, ready_timeout=ready_timeout, stop_timeout=20.0,
                           nice=background_nice if background else 0)

    return [
        Catalogued(spec("sink", "sink"), True, "Kafka → ClickHouse (owns the embedded engine, answers reads)"),
        Catalogued(spec("tenants-follow", "tenants", "follow"), False, "number/template/account webhooks → tenant settings"),
        Catalogued(spec("privacy", "privacy", "run"), False, "privacy requests, erasure, retention"),
        Catalogued(spec("normalise", "normalise"), True, "raw webhooks → status/inbound/account events"),
        Catalogued(spec("worker", "worker", background=False), True, "send commands → validate, dedup, pace, Graph API"),
        Catalogued(spec("media", "media", "fetch"), False, "inbound media → tenant storage, sealed per subject"),
        Catalogued(spec("erp-inbound", "erp", "inbound"), False,
                   "inbound messages and command statuses → the ERP (wa.erp.inbound); mark-as-read"),
        Catalogued(spec("ingress", "ingress", args=("--port", str(ingress_port)), background=False), True,
                   "Meta webhooks → Kafka"),
    ]
