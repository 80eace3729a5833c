"""The service supervisor against real subprocesses: READY, logs, stubborn children, strays."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

from wapipe.app.cli import command_exists
from wapipe.app.services import ServiceError, ServiceSpec, Supervisor
from wapipe.app.stack.jvm import pid_alive

pytestmark = pytest.mark.integration


def py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", textwrap.dedent(code))


READY_THEN_SLEEP = """
    import sys, time
    print("starting up", flush=True)
    print("READY http://127.0.0.1:1234", flush=True)
    while True:
        time.sleep(0.1)
"""

# Ignores SIGTERM (like a wedged faust worker) and forks a grandchild that would outlive it.
STUBBORN = """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(0.1)
    print(f"CHILD {child}", flush=True)
    print("READY stubborn", flush=True)
    while True:
        time.sleep(0.1)
"""


def test_ready_log_and_reverse_stop(tmp_path):
    order = []
    with Supervisor(tmp_path / "logs") as sup:
        a = sup.start(ServiceSpec("a", ("a",), program=py(READY_THEN_SLEEP)))
        b = sup.start(ServiceSpec("b", ("b",), program=py(READY_THEN_SLEEP)))
        assert a.ready_value == "http://127.0.0.1:1234"
        assert a.alive() and b.alive()
        pids = [a.pid, b.pid]
        real_stop = sup.stop

        def recording_stop(svc):
            order.append(svc.spec.name)
            return real_stop(svc)

        sup.stop = recording_stop
    assert order == ["b", "a"]
    assert not any(pid_alive(p) for p in pids)
    text = (tmp_path / "logs" / "a.log").read_text()
    assert "starting up" in text and "READY http://127.0.0.1:1234" in text


def test_sigterm_ignored_gets_sigkill_and_no_strays(tmp_path):
    with Supervisor(tmp_path / "logs") as sup:
        svc = sup.start(ServiceSpec("stubborn", ("stubborn",), program=py(STUBBORN), stop_timeout=1.0))
        child = int(next(line for line in svc.tail().splitlines() if line.startswith("CHILD")).split()[1])
        assert pid_alive(child)
        t0 = time.monotonic()
        code = sup.stop(svc)
        assert time.monotonic() - t0 < 8
    assert code == -9
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child), "the service's own child outlived it"


def test_exit_before_ready_is_an_error_with_the_log_tail(tmp_path):
    with Supervisor(tmp_path / "logs") as sup:
        with pytest.raises(ServiceError, match="exited with code 3 before READY") as info:
            sup.start(ServiceSpec("broken", ("broken",), program=py("print('boom: bad config'); raise SystemExit(3)")))
        assert "boom: bad config" in str(info.value)


def test_ready_timeout(tmp_path):
    with Supervisor(tmp_path / "logs") as sup:
        with pytest.raises(ServiceError, match="did not print READY within 1s"):
            sup.start(ServiceSpec("mute", ("mute",), program=py("import time; time.sleep(60)"), ready_timeout=1.0))
        pid = sup.services[0].pid
    assert not pid_alive(pid)


def test_missing_command_is_reported_not_skipped(tmp_path):
    assert command_exists(("demo",))
    assert command_exists(("stack", "up"))
    assert not command_exists(("no-such-service",))
    assert not command_exists(("stack", "no-such-sub"))
    with Supervisor(tmp_path / "logs") as sup:
        # The command exits with its usage error, which the supervisor reports with the log's tail.
        with pytest.raises(ServiceError, match=r"(?s)ghost exited with code 2 before READY.*no-such-service"):
            sup.start(ServiceSpec("ghost", ("no-such-service",)))


def test_check_names_a_dead_service(tmp_path):
    with Supervisor(tmp_path / "logs") as sup:
        sup.start(ServiceSpec("short", ("short",), program=py("print('READY x', flush=True); import time; time.sleep(0.3)")))
        time.sleep(1.0)
        with pytest.raises(ServiceError, match="short exited with code 0"):
            sup.check()


def test_ready_after_a_log_prefix_or_terminal_codes(tmp_path):
    """faust redirects stdout into its logger and hides the cursor: READY must still be seen."""
    lines = ['print("\\x1b[?25l\\x08\\x1b[?25hREADY normalise", flush=True)',
             'print("[2026-11-25 09:53:38,216] [25757] [WARNING] READY worker ", flush=True)']
    with Supervisor(tmp_path / "logs") as sup:
        for i, line in enumerate(lines):
            svc = sup.start(ServiceSpec(f"s{i}", (f"s{i}",), ready_timeout=10,
                                        program=py(line + "\nimport time\ntime.sleep(60)")))
            assert svc.ready_value in ("normalise", "worker")


# Dies right after READY on its first two starts (counted in a file), then stays up.
DIES_TWICE = """
    import pathlib, sys, time
    count = pathlib.Path(sys.argv[1])
    n = int(count.read_text()) if count.exists() else 0
    count.write_text(str(n + 1))
    print(f"READY start-{n + 1}", flush=True)
    if n < 2:
        sys.exit(3)
    while True:
        time.sleep(0.1)
"""


def test_a_dead_service_is_restarted_with_backoff_and_the_others_run_on(tmp_path):
    """`wapipe up` keeps the pipeline running: a service that dies is started again after a
    growing wait, in its place in start order; its neighbours are never touched."""
    from wapipe.app.services import Backoff

    counter = tmp_path / "starts"
    with Supervisor(tmp_path / "logs") as sup:
        a = sup.start(ServiceSpec("a", ("a",), program=py(READY_THEN_SLEEP)))
        sup.start(ServiceSpec("flaky", ("flaky",), args=(str(counter),), program=py(DIES_TWICE)))
        c = sup.start(ServiceSpec("c", ("c",), program=py(READY_THEN_SLEEP)))
        backoff = Backoff(first=0.2, cap=5.0)
        events: list[tuple[float, str]] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20:
            events += [(time.monotonic() - t0, e) for e in sup.revive(backoff)]
            flaky = sup.get("flaky")
            if counter.read_text() == "3" and flaky.alive() and flaky.ready_value == "start-3":
                break
            time.sleep(0.05)
        text = [e for _t, e in events]
        assert sum("flaky exited with code 3" in e for e in text) == 2, text
        assert any("restarting in 0 s" in e for e in text) and sum("flaky restarted" in e for e in text) == 2
        # the second wait is twice the first (a short run doubles it)
        deaths = [t for t, e in events if "exited" in e]
        restarts = [t for t, e in events if "restarted" in e]
        assert restarts[0] - deaths[0] >= 0.2 and restarts[1] - deaths[1] >= 0.4
        assert [s.spec.name for s in sup.services] == ["a", "flaky", "c"]
        assert a.alive() and c.alive() and sup.get("a") is a and sup.get("c") is c
        assert sup.get("flaky").alive() and backoff.count("flaky") == 2


def test_backoff_doubles_after_short_runs_and_starts_over_after_a_healthy_one():
    from wapipe.app.services import Backoff

    b = Backoff(first=1.0, cap=8.0, healthy=60.0)
    waits = []
    for _ in range(6):
        waits.append(b.schedule("x", 0.0, ran_for=5.0))
        b.done("x")
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert b.schedule("x", 0.0, ran_for=61.0) == 1.0 and b.schedule("y", 0.0, ran_for=0.0) == 1.0


def test_background_services_run_niced_and_the_send_path_does_not(tmp_path):
    """The stack's services behind the send path take the CPU the worker and ingress leave."""
    from wapipe.app.services import pipeline_services

    niceness = py("""
        import os, time
        try:  # Linux's autogroup: "/autogroup-N nice K"; the CPU is shared between groups first
            group = int(open("/proc/self/autogroup").read().split()[-1])
        except OSError:
            group = None
        print("READY", f"{os.nice(0)},{group}", flush=True)
        while True:
            time.sleep(0.1)
    """)
    specs = {c.spec.name: c.spec for c in pipeline_services(background_nice=7)}
    assert {n for n, s in specs.items() if s.nice == 0} == {"worker", "ingress"}
    base = os.nice(0)  # this process's own niceness, which children inherit
    with Supervisor(tmp_path / "logs") as sup:
        for name in ("sink", "worker"):
            spec = specs[name]
            svc = sup.start(ServiceSpec(name, spec.command, program=niceness, nice=spec.nice))
            own, group = svc.ready_value.split(",")
            assert int(own) == base + spec.nice
            assert group == "None" or int(group) == spec.nice  # its session's group is niced too
